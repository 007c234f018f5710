"""Picking free TCP ports for the processes a launcher starts (bus sockets, Prometheus endpoints, gRPC).

A port is chosen here and bound later by another process, so two things can take it in between:

* **an outgoing connection** of any process on the host, which gets an *ephemeral* port. The search therefore
  stays below the kernel's ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 on
  Linux by default), where the kernel never hands out ports on its own;
* **another launcher** on the same host (``marlmesh sweep --parallel 2``, tests running side by side), which
  probes the same free ports. Every block handed out is therefore *reserved* for :data:`RESERVATION_SECONDS`
  with a file created atomically in :func:`reservation_dir`; other launchers skip reserved ports.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

from marlmesh.errors import MeshError

RESERVATION_SECONDS = 120.0
"""How long a handed-out port is skipped by other launchers (time enough for the child to bind it)."""

_FALLBACK_EPHEMERAL_LOW = 32768
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class PortError(MeshError):
    """No block of free ports could be found."""


def ephemeral_low() -> int:
    """Lowest port the kernel hands out to outgoing connections (32768 when the range cannot be read)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_LOW


def port_is_free(host: str, port: int) -> bool:
    """True if ``host:port`` can be bound for TCP right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reservation_dir() -> Path:
    """Directory of the reservation files (one per reserved port, shared by every launcher of this user)."""
    path = Path(tempfile.gettempdir()) / f"marlmesh-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _reserve(port: int, now: float) -> bool:
    """Take the reservation of ``port`` (True), unless another launcher holds a fresh one (False)."""
    path = reservation_dir() / str(port)
    if _create(path):
        return True
    try:
        if now - path.stat().st_mtime < RESERVATION_SECONDS:
            return False
        path.unlink()  # a stale reservation: its launcher bound the port long ago or died
    except FileNotFoundError:
        pass
    return _create(path)  # False if another launcher took it between the unlink and here


def _create(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def free_port_block(host: str, count: int, low: int = 20000, high: int | None = None, tries: int = 200) -> int:
    """First port of ``count`` consecutive ports on ``host`` that are free now and reserved for the caller.

    Args:
        host: Address the ports will be bound on.
        count: Block length.
        low: Lowest port to consider.
        high: One past the highest port to consider; default: the start of the kernel's ephemeral range.
        tries: Random block positions probed before giving up.

    Raises:
        PortError: If no free, unreserved block was found.
    """
    high = min(high, ephemeral_low()) if high is not None else ephemeral_low()
    if high - count <= low:
        raise PortError(f"no room for {count} ports in [{low}, {high}) (the kernel's ephemeral range starts at {high})")
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(low, high - count)
        ports = range(base, base + count)
        if not all(port_is_free(host, p) for p in ports):
            continue
        now = time.time()
        if all(_reserve(p, now) for p in ports):
            return base
    raise PortError(f"no block of {count} free, unreserved ports on {host} in [{low}, {high})")

"""Port files and peer tables: how processes started on one machine learn each other's OS-assigned ports.

Every listener a local launcher starts binds port 0 and the kernel assigns a free port, so no port is ever
chosen by one process and bound by another (two meshes started at once cannot race for the same port):

* **port file** (``--port-file``): a process writes every port it bound, once all its listeners are up, as
  one JSON object, e.g. ``{"grpc": 41871, "metrics": 40333, "bus": 39211}``. The launcher reads it with
  :func:`read_port_file`; the file's existence says the process is up.
* **peer table** (``MARLMESH_PEER_TABLE``, ``MARLMESH_GOSSIP_PEER_TABLE``): the bus and gossip sockets of N
  processes dial each other, but their ports are known only after every one has bound. Each process binds,
  reports its port in its port file and waits (:func:`wait_peer_table`) for the table the launcher writes once
  it has all N ports (:func:`write_peer_table`): ``{"ports": [p0, p1, ...]}``, the port of index ``i`` at
  position ``i``.

Both files are written atomically (a temporary file renamed over the target), so a reader never sees half a
file. Fixed ports (``MARLMESH_BUS_BASE_PORT`` + index on Kubernetes) need neither.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from marlmesh.errors import MeshError

GRPC = "grpc"
"""Port-file key of the gRPC server."""
METRICS = "metrics"
"""Port-file key of the Prometheus endpoint."""
BUS = "bus"
"""Port-file key of an agent's bus socket."""
GOSSIP = "gossip"
"""Port-file key of a learner's gossip socket."""

POLL_S = 0.05
"""How often :func:`wait_peer_table` looks for the table."""


class PeerTableTimeout(MeshError, TimeoutError):
    """The peer table did not appear in time; the message names the file."""


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path`` (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_port_file(path: Path | None, ports: Mapping[str, int]) -> None:
    """Atomically write the ports a process bound (nothing when ``path`` is None).

    Args:
        path: The ``--port-file``.
        ports: Listener name (:data:`GRPC`, :data:`METRICS`, :data:`BUS`, :data:`GOSSIP`) -> bound port; zero
            entries (listener off) are left out.
    """
    if path is not None:
        write_text_atomically(path, json.dumps({k: int(v) for k, v in ports.items() if v}))


def read_port_file(path: Path) -> dict[str, int] | None:
    """The ports a process reported, None while its port file does not exist."""
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return None


def write_peer_table(path: Path, ports: Sequence[int]) -> None:
    """Atomically write the peer table: the port of index ``i`` at position ``i``."""
    write_text_atomically(path, json.dumps({"ports": [int(p) for p in ports]}))


def _read_peer_table(path: Path, count: int) -> list[int] | None:
    try:
        ports = json.loads(path.read_text())["ports"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise MeshError(f'peer table {path} is malformed ({exc!r}); expected {{"ports": [p0, p1, ...]}}') from None
    if len(ports) != count or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise MeshError(f"peer table {path} lists {ports!r}; expected {count} port numbers")
    return ports


def wait_peer_table(path: Path, count: int, timeout_s: float, stop: threading.Event | None = None) -> list[int] | None:
    """Wait for the peer table at ``path`` and return its ``count`` ports.

    Args:
        path: The table file (``MARLMESH_PEER_TABLE`` or ``MARLMESH_GOSSIP_PEER_TABLE``).
        count: N, the number of ports it must list.
        timeout_s: Give up after this long.
        stop: Return None as soon as this event is set (a stop signal arrived while waiting).

    Raises:
        PeerTableTimeout: If the file did not appear within ``timeout_s`` (the message names it).
        MeshError: If the file is malformed or lists another number of ports.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        ports = _read_peer_table(path, count)
        if ports is not None:
            return ports
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTableTimeout(
                f"peer table {path} did not appear within {timeout_s:g}s (the launcher writes it once every "
                "process has reported its port; did one of them fail to start?)"
            )
        if stop is not None:
            if stop.wait(min(POLL_S, remaining)):
                return None
        else:
            time.sleep(min(POLL_S, remaining))

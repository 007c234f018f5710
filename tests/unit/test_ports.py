"""Port picking: below the kernel's ephemeral range, and a block handed out is not handed out again."""

from __future__ import annotations

import os
import socket
import time

import pytest

from marlmesh import ports
from marlmesh.errors import MeshError


@pytest.fixture(autouse=True)
def _private_reservations(tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "reservation_dir", lambda: tmp_path)


def _free_single(low: int = 21000, high: int = 31000) -> int:
    """A port free right now and not yet reserved (uses the real search on a private reservation dir)."""
    return ports.free_port_block("127.0.0.1", 1, low=low, high=high)


def test_blocks_stay_below_the_ephemeral_range():
    limit = ports.ephemeral_low()
    for _ in range(50):
        base = ports.free_port_block("127.0.0.1", 4)
        assert 20000 <= base and base + 4 <= limit
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert limit == int(f.read().split()[0])


def test_a_reserved_block_is_not_handed_out_twice():
    port = _free_single()
    (ports.reservation_dir() / str(port)).unlink()  # free it again, then take it through a one-block range
    first = ports.free_port_block("127.0.0.1", 1, low=port, high=port + 2)
    assert first == port
    with pytest.raises(ports.PortError, match=r"no block of 1 free, unreserved ports"):
        ports.free_port_block("127.0.0.1", 1, low=port, high=port + 2, tries=5)


def test_a_stale_reservation_is_taken_over():
    port = _free_single()
    old = time.time() - ports.RESERVATION_SECONDS - 1
    os.utime(ports.reservation_dir() / str(port), (old, old))
    assert ports.free_port_block("127.0.0.1", 1, low=port, high=port + 2) == port


def test_a_bound_port_is_skipped():
    port = _free_single()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not ports.port_is_free("127.0.0.1", port)
        (ports.reservation_dir() / str(port)).unlink()
        with pytest.raises(MeshError):
            ports.free_port_block("127.0.0.1", 1, low=port, high=port + 2, tries=5)


def test_an_impossible_range_names_the_limit():
    with pytest.raises(ports.PortError, match=r"no room for 8 ports in \[40000, "):
        ports.free_port_block("127.0.0.1", 8, low=40000)

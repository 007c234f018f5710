"""Port files and peer tables: how OS-assigned ports are reported and how peers learn each other's."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from comm_bus.addressing import PeerAddressing
from marlmesh import contract, ports, process, serving
from marlmesh.errors import MeshError


def test_a_port_file_round_trips_and_leaves_out_listeners_that_are_off(tmp_path):
    path = tmp_path / "ports" / "agent-0.port"
    assert ports.read_port_file(path) is None  # not written yet: the process is not up
    ports.write_port_file(path, {ports.GRPC: 41000, ports.METRICS: 0, ports.BUS: 41001})
    assert ports.read_port_file(path) == {ports.GRPC: 41000, ports.BUS: 41001}
    assert [p.name for p in path.parent.iterdir()] == ["agent-0.port"]  # no temporary file left behind


def test_the_peer_table_is_awaited_until_the_launcher_writes_it(tmp_path):
    table = tmp_path / "train-bus.peers"
    writer = threading.Timer(0.2, ports.write_peer_table, args=(table, [40001, 40002, 40003]))
    writer.start()
    try:
        assert ports.wait_peer_table(table, 3, timeout_s=30) == [40001, 40002, 40003]
    finally:
        writer.cancel()


def test_a_missing_peer_table_times_out_with_an_error_naming_the_file(tmp_path):
    table = tmp_path / "train-bus.peers"
    with pytest.raises(ports.PeerTableTimeout, match=rf"peer table {table} did not appear within 0.2s"):
        ports.wait_peer_table(table, 3, timeout_s=0.2)


def test_a_stop_signal_ends_the_wait_early(tmp_path):
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    assert ports.wait_peer_table(tmp_path / "never.peers", 3, timeout_s=60, stop=stop) is None
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "malformed"),
        ('{"ports": [1, 2]}', "expected 3 port numbers"),
        ('{"ports": [1, 2, 0]}', "expected 3"),
    ],
)
def test_a_malformed_peer_table_is_an_error_naming_the_file(tmp_path, content, problem):
    table = tmp_path / "bad.peers"
    table.write_text(content)
    with pytest.raises(MeshError, match=rf"peer table {table} .*{problem}"):
        ports.wait_peer_table(table, 3, timeout_s=5)


def test_addressing_dials_peers_at_their_table_entries_once_read():
    env = {
        contract.PEER_PATTERN.name: "tcp://127.0.0.1:{port}",
        contract.BUS_BIND.name: "tcp://127.0.0.1:0",
        contract.PEER_TABLE.name: "/run/train-bus.peers",
    }
    addressing = PeerAddressing.from_env(env)
    assert not addressing.dialable and addressing.bind_address(1) == "tcp://127.0.0.1:0"
    with pytest.raises(RuntimeError, match="/run/train-bus.peers"):
        addressing.peer_address(2)
    ready = addressing.with_peer_ports([40010, 40020, 40030])
    assert ready.dialable and ready.peer_address(2) == "tcp://127.0.0.1:40030"
    # without a table: fixed ports, base port + index (Kubernetes)
    fixed = PeerAddressing.from_env({contract.PEER_PATTERN.name: "tcp://agents-{id}.agents:{port}"})
    assert fixed.dialable and fixed.peer_address(2) == f"tcp://agents-2.agents:{contract.DEFAULT_BUS_BASE_PORT + 2}"


def test_an_auto_metrics_port_is_assigned_by_the_os_and_serves_metrics():
    port = serving.start_metrics(process.port_or_auto(contract.AUTO_PORT), "127.0.0.1")
    assert port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert b"process_" in resp.read() or resp.status == 200
    assert serving.start_metrics(0, "127.0.0.1") == 0  # 0: no endpoint

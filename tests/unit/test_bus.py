"""The bus over real ZeroMQ sockets on 127.0.0.1 (in one process, N endpoints)."""

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from comm_bus.addressing import PeerAddressing, agent_id_from_env
from comm_bus.bus import Bus
from comm_bus.channels.vector import vector_inbox
from comm_bus.envelope import Envelope, serialize
from comm_bus.metrics import BusMetrics
from marlmesh.mesh import free_port_block


@pytest.fixture
def mesh3():
    addressing = PeerAddressing(base_port=free_port_block("127.0.0.1", 3))
    metrics = BusMetrics(CollectorRegistry())
    buses = [Bus(i, 3, addressing, metrics=metrics, context=zmq.Context()) for i in range(3)]
    yield buses
    for b in buses:
        b.close()


def _payload(value: float, batch: int = 4, dim: int = 8):
    return {"msg": np.full((batch, dim), value, np.float32)}


def test_round_trip_between_three_agents(mesh3):
    for tick in range(5):
        for i, bus in enumerate(mesh3):
            bus.send(tick=tick, round=0, channel="broadcast", payload=_payload(10 * i + tick), peers=[0, 1, 2])
        for i, bus in enumerate(mesh3):
            got = bus.collect(tick=tick, round=0, expected=[0, 1, 2], timeout_s=5)
            assert sorted(got) == [p for p in range(3) if p != i]
            for src, env in got.items():
                assert env.payload["msg"][0, 0] == 10 * src + tick
    for bus in mesh3:
        assert bus.totals.messages_sent == 10 and bus.totals.messages_received == 10
        assert bus.totals.bytes_sent > 10 * 4 * 8 * 4
        assert not bus.totals.dropped
        assert bus.totals.latency_p50() is not None


def test_early_messages_wait_for_their_round_and_stale_ones_are_dropped(mesh3):
    a, b, _ = mesh3
    a.send(tick=1, round=1, channel="c", payload=_payload(1), peers=[1])
    a.send(tick=1, round=0, channel="c", payload=_payload(0), peers=[1])
    assert b.collect(tick=1, round=0, expected=[0], timeout_s=5)[0].payload["msg"][0, 0] == 0
    assert b.collect(tick=1, round=1, expected=[0], timeout_s=5)[0].payload["msg"][0, 0] == 1
    a.send(tick=0, round=0, channel="c", payload=_payload(9), peers=[1])
    assert b.collect(tick=2, round=0, expected=[0], timeout_s=0.3) == {}
    assert b.totals.dropped["stale"] == 1
    assert b.totals.dropped["round_timeout"] == 1


def test_malformed_frames_are_dropped_and_counted(mesh3):
    _, b, _ = mesh3
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(b.addressing.peer_address(1))
    good = Envelope(src=0, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0, payload=_payload(1))
    unknown = Envelope(src=7, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0, payload=_payload(1))
    for frame in (b"\xff\x00garbage", serialize(unknown), b"", serialize(good)):
        raw.send(frame)
    got = b.collect(tick=0, round=0, expected=[0], timeout_s=5)
    raw.close()
    assert list(got) == [0]
    assert b.totals.dropped["unknown_sender"] == 1
    assert b.totals.dropped["undecodable"] + b.totals.dropped["bad_version"] == 2


def test_vector_inbox_rejects_bad_payloads():
    ok = Envelope(src=0, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0, payload=_payload(2.0))
    wrong = Envelope(src=2, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0, payload=_payload(1.0, dim=3))
    msgs, mask, rejected = vector_inbox({0: ok, 2: wrong}, 4, 3, 8)
    assert rejected == 1
    assert mask[:, 0].tolist() == [1.0] * 4 and mask[:, 2].tolist() == [0.0] * 4
    assert float(msgs[:, 0].mean()) == 2.0 and float(np.abs(msgs[:, 2]).sum()) == 0.0


def test_addressing_from_env():
    a = PeerAddressing.from_env(
        {"MARLMESH_PEER_PATTERN": "tcp://agent-{id}.agents:{port}", "MARLMESH_BUS_BASE_PORT": "6000"}
    )
    assert a.peer_address(3) == "tcp://agent-3.agents:6003"
    assert agent_id_from_env({"MARLMESH_AGENT_ID": "agent-2"}) == 2
    with pytest.raises(ValueError, match="MARLMESH_BUS_BASE_PORT"):
        PeerAddressing.from_env({"MARLMESH_BUS_BASE_PORT": "x"})
    with pytest.raises(ValueError, match="placeholders"):
        PeerAddressing(pattern="tcp://h:{nope}")

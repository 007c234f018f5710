"""The bus over real ZeroMQ sockets on 127.0.0.1 (in one process, N endpoints)."""

import threading
import time

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry, generate_latest

from comm_bus.addressing import PeerAddressing, agent_id_from_env
from comm_bus.bus import Bus, local_buses
from comm_bus.channels.vector import vector_inbox
from comm_bus.envelope import Envelope, serialize
from comm_bus.mailbox import Delivery
from comm_bus.metrics import BusMetrics
from marlmesh import contract
from marlmesh.config import load_config


def make_buses(n, *overrides, seed=0, trace_dir=None, registry=None, own_contexts=False):
    cfg = load_config(None, list(overrides)).bus
    metrics = BusMetrics(registry or CollectorRegistry())
    ctx = zmq.Context()
    return local_buses(
        n,
        lambda i, addressing: Bus(
            i,
            n,
            addressing,
            config=cfg,
            seed=seed,
            metrics=metrics,
            context=zmq.Context() if own_contexts else ctx,
            trace_path=None if trace_dir is None else trace_dir / f"agent-{i}.rec",
        ),
    )


@pytest.fixture
def mesh3():
    buses = make_buses(3)
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
            got = bus.collect(tick=tick, round=0, channel="broadcast", expected=[0, 1, 2], timeout_s=5)
            assert sorted(got) == [p for p in range(3) if p != i]
            for src, d in got.items():
                assert d.rows is None and d.payload["msg"][0, 0] == 10 * src + tick
                assert d.age.tolist() == [pytest.approx(0.1)] * 4  # sent at t*dt, read at the round's end
    for bus in mesh3:
        # 5 ticks x 2 peers x 4 env copies: one message per env copy and link
        assert bus.totals.messages_sent == 40 and bus.totals.messages_received == 40
        assert bus.totals.bytes_sent == 40 * (8 * 4 + 32)
        assert not bus.totals.dropped
        assert bus.totals.latency_p50() == 0.0
    exposed = generate_latest(mesh3[0].metrics.registry).decode()
    assert 'marlmesh_bus_messages_sent_total{channel="broadcast",peer="1"}' in exposed
    for name in ("sent_bytes_total", "delivery_latency_seconds_bucket", "age_of_information_seconds_count"):
        assert f"marlmesh_bus_{name}" in exposed


def test_rounds_are_separate_slots_and_early_frames_wait(mesh3):
    a, b, _ = mesh3
    a.send(tick=1, round=1, channel="c", payload=_payload(1), peers=[1])
    a.send(tick=1, round=0, channel="c", payload=_payload(0), peers=[1])
    assert b.collect(tick=1, round=0, channel="c", expected=[0], timeout_s=5)[0].payload["msg"][0, 0] == 0
    assert b.collect(tick=1, round=1, channel="c", expected=[0], timeout_s=5)[0].payload["msg"][0, 0] == 1
    # nothing new from agent 0 for tick 2: the round times out (counted); the tick-1 value is still fresh
    got = b.collect(tick=2, round=0, channel="c", expected=[0], timeout_s=0.3)
    assert b.totals.dropped["round_timeout"] == 1
    assert got[0].payload["msg"][0, 0] == 0 and got[0].age.tolist() == [pytest.approx(0.2)] * 4


def test_malformed_frames_are_dropped_and_counted(mesh3):
    _, b, _ = mesh3
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(b.addressing.peer_address(1))
    good = Envelope(src=0, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0, payload=_payload(1))
    unknown = Envelope(src=7, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0, payload=_payload(1))
    ragged = Envelope(
        src=0, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0,
        payload={"a": np.zeros((4, 2), np.float32), "b": np.zeros((3, 2), np.float32)},
    )  # fmt: skip
    for frame in (b"\xff\x00garbage", serialize(unknown), b"", serialize(ragged), serialize(good)):
        raw.send(frame)
    got = b.collect(tick=0, round=0, channel="c", expected=[0], timeout_s=5)
    raw.close()
    assert list(got) == [0]
    assert b.totals.dropped["unknown_sender"] == 1
    assert b.totals.dropped["bad_tensor"] == 1
    assert b.totals.dropped["undecodable"] + b.totals.dropped["bad_version"] == 2


def test_vector_inbox_rejects_bad_payloads_and_honours_rows():
    ok = Delivery(_payload(2.0), None, np.zeros(4), np.zeros(0))
    wrong = Delivery(_payload(1.0, dim=3), None, np.zeros(4), np.zeros(0))
    partial = Delivery(_payload(5.0), np.array([True, False, True, False]), np.zeros(4), np.zeros(0))
    msgs, mask, rejected = vector_inbox({0: ok, 2: wrong, 1: partial}, 4, 3, 8)
    assert rejected == 1
    assert mask[:, 0].tolist() == [1.0] * 4 and mask[:, 2].tolist() == [0.0] * 4
    assert mask[:, 1].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert msgs[:, 1, 0].tolist() == [5.0, 0.0, 5.0, 0.0]
    assert float(msgs[:, 0].mean()) == 2.0 and float(np.abs(msgs[:, 2]).sum()) == 0.0


def test_addressing_from_env():
    a = PeerAddressing.from_env(
        {contract.PEER_PATTERN.name: "tcp://agent-{id}.agents:{port}", contract.BUS_BASE_PORT.name: "6000"}
    )
    assert a.peer_address(3) == "tcp://agent-3.agents:6003"
    assert a.bind_address(3) == "tcp://127.0.0.1:6003", "unset: the contract's default bind address"
    assert PeerAddressing.from_env({}).base_port == contract.DEFAULT_BUS_BASE_PORT
    assert agent_id_from_env({contract.AGENT_ID.name: "agent-2"}) == 2
    with pytest.raises(ValueError, match=f"{contract.BUS_BASE_PORT.name}='x': not an integer"):
        PeerAddressing.from_env({contract.BUS_BASE_PORT.name: "x"})
    with pytest.raises(ValueError, match="placeholders"):
        PeerAddressing(pattern="tcp://h:{nope}")


def test_wall_clock_waits_for_real_delays_up_to_the_round_deadline():
    import time

    a, b = make_buses(2, "bus.clock=wall", "bus.links.default.latency_ms=60", "bus.round_timeout_ms=400")
    slow_a, slow_b = make_buses(2, "bus.clock=wall", "bus.links.default.latency_ms=300", "bus.round_timeout_ms=100")
    try:
        t0 = time.monotonic()
        a.send(tick=0, round=0, channel="c", payload=_payload(1.0), peers=[1])
        got = b.collect(tick=0, round=0, channel="c", expected=[0])
        waited = time.monotonic() - t0
        assert 0 in got and 0.055 <= waited < 0.4
        assert got[0].latencies.tolist() == [pytest.approx(0.06, abs=0.005)] * 4
        # a delay longer than the deadline: not seen in its round, seen in a later one
        slow_a.send(tick=0, round=0, channel="c", payload=_payload(2.0), peers=[1])
        assert slow_b.collect(tick=0, round=0, channel="c", expected=[0]) == {}
        time.sleep(0.25)
        slow_a.send(tick=1, round=0, channel="c", payload=_payload(3.0), peers=[1])
        late = slow_b.collect(tick=1, round=0, channel="c", expected=[0])
        assert late[0].payload["msg"][0, 0] == 2.0  # the tick-0 value, stale but within its lifespan
    finally:
        for bus in (a, b, slow_a, slow_b):
            bus.close()


def test_shared_medium_counts_a_broadcast_once_so_bytes_per_agent_do_not_grow_with_n():
    per_agent = {}
    for n in (4, 8):
        buses = make_buses(n, "bus.links.shared_medium=true", "bus.header_bytes=0")
        try:
            for i, bus in enumerate(buses):
                bus.send(tick=0, round=0, channel="c", payload=_payload(i), peers=range(n))
            for bus in buses:
                assert len(bus.collect(tick=0, round=0, channel="c", expected=range(n), timeout_s=5)) == n - 1
            per_agent[n] = buses[0].totals.bytes_sent
            assert buses[0].totals.messages_sent == 4 * (n - 1)  # logical messages still counted per link
        finally:
            for bus in buses:
                bus.close()
    assert per_agent[4] == per_agent[8] == 4 * 8 * 4


def test_collect_stops_waiting_when_its_stop_event_is_set():
    buses = make_buses(2, "bus.round_timeout_ms=30000")
    try:
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        start = time.monotonic()
        got = buses[0].collect(tick=0, round=0, channel="broadcast", expected=[1], stop=stop)  # peer 1 is silent
        waited = time.monotonic() - start
        assert got == {} and 0.15 < waited < 2.0, waited
        assert buses[0].totals.dropped["round_timeout"] == 0  # shutting down is not a peer's timeout
    finally:
        for b in buses:
            b.close()

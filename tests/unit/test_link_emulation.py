"""Link emulation semantics (docs/link-emulation.md), on the emulator and through real buses."""

import math

import numpy as np
import pytest

from comm_bus.link_emulation import DELIVERED, EXPIRED, LOSS, OUT_OF_RANGE, QUEUE_FULL, LinkEmulator
from comm_bus.link_trace import LinkTrace
from comm_bus.links import NetemLink, TraceLink, resolve_link
from comm_bus.mailbox import HeldFrame, Mailbox
from marlmesh.config import LinkConfig, LinksConfig, load_config
from tests.unit.test_bus import make_buses


def emulator(seed=0, shared_medium=False, **link):
    cfg = LinkConfig(**link)
    return LinkEmulator(0, lambda dst, now: cfg, seed, shared_medium=shared_medium)


def binomial_interval(n: int, p: float, mass: float) -> tuple[int, int]:
    """Central interval of Binomial(n, p) holding at least ``mass`` of the probability (exact pmf)."""
    logpmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
        for k in range(n + 1)
    ]
    pmf = np.exp(np.array(logpmf))
    cdf = np.cumsum(pmf)
    tail = (1 - mass) / 2
    return int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))


def test_serialization_and_latency_give_the_documented_visibility_time():
    emu = emulator(rate_bps=80_000, latency_ms=50)
    fates = emu.transmit(0.0, [1], payload_row_bytes=10_000, header_bytes=32, batch=1)
    assert fates.cause[0, 0] == DELIVERED
    assert fates.visible_at[0, 0] == pytest.approx(1.05 + 32 * 8 / 80_000, abs=1e-12)
    # the next message queues behind the first one (FIFO at the link rate)
    again = emu.transmit(0.1, [1], payload_row_bytes=10_000, header_bytes=32, batch=1)
    assert again.visible_at[0, 0] == pytest.approx(fates.visible_at[0, 0] + 10_032 * 8 / 80_000)


def test_10kB_payload_becomes_visible_after_1_05_s_of_sim_time_through_the_bus():
    a, b = make_buses(2, "bus.links.default.rate_bps=80000", "bus.links.default.latency_ms=50", "bus.lifespan_ms=5000")
    try:
        big = {"msg": np.ones((1, 2500), np.float32)}  # 10,000 payload bytes
        seen = None
        for tick in range(12):
            # after tick 0 the sender stays silent (rows not sent) so that only the big message is in flight
            silent = None if tick == 0 else np.zeros(1, bool)
            a.send(tick=tick, round=0, channel="big", payload=big, peers=[1], rows=silent)
            got = b.collect(tick=tick, round=0, channel="big", expected=[0], timeout_s=5)
            if got and seen is None:
                seen = tick, got[0]
        tick, delivery = seen
        visible = 1.05 + 32 * 8 / 80_000
        assert delivery.latencies.tolist() == [pytest.approx(visible)]
        assert tick == math.ceil(visible / 0.1) - 1  # the first round read at or after 1.0532 s (tick 10 reads at 1.1)
        assert delivery.payload["msg"].shape == (1, 2500)
        assert not b.totals.dropped and a.totals.messages_sent == 1
    finally:
        a.close()
        b.close()


def test_bernoulli_loss_over_10000_messages_is_within_the_999_binomial_bound():
    emu = emulator(seed=11, loss=0.2)
    fates = emu.transmit(0.0, [1, 2], payload_row_bytes=8, header_bytes=0, batch=5_000)
    lost = int((fates.cause == LOSS).sum())
    low, high = binomial_interval(10_000, 0.2, 0.999)
    assert low <= lost <= high, (lost, low, high)
    assert np.isnan(fates.visible_at[fates.cause == LOSS]).all()


def test_gilbert_elliott_losses_come_in_bursts_at_the_stationary_rate():
    link = LinkConfig(loss_model="gilbert_elliott", gilbert_elliott={"p_good_to_bad": 0.05, "p_bad_to_good": 0.25})
    emu = LinkEmulator(0, lambda dst, now: link, 3)
    lost = np.array([emu.transmit(t * 0.1, [1], 8, 0, 256).cause[0] == LOSS for t in range(400)])  # [T, B]
    rate = lost.mean()
    expected = link.gilbert_elliott.mean_loss()  # 0.05/0.3 * 0.5 = 0.0833
    assert abs(rate - expected) < 0.015
    after_loss = lost[1:][lost[:-1]].mean()  # P(loss | previous message on that link lost)
    assert after_loss > 2 * rate


def test_out_of_range_peers_receive_nothing_through_the_bus():
    buses = make_buses(3, "bus.links.default.range=1.0")
    try:
        # env copy 0: agent 1 within range of agent 0, agent 2 far; env copy 1: both far
        positions = np.array([[[0, 0], [0, 0]], [[0.5, 0], [3, 0]], [[5, 0], [0, 4]]], np.float32)  # [N, B, 2]
        for tick in range(3):
            buses[0].send(tick=tick, round=0, channel="c", payload={"msg": np.ones((2, 4), np.float32)},
                          peers=[1, 2], positions=positions)  # fmt: skip
            got1 = buses[1].collect(tick=tick, round=0, channel="c", expected=[0], timeout_s=5)
            got2 = buses[2].collect(tick=tick, round=0, channel="c", expected=[0], timeout_s=5)
            assert got1[0].rows.tolist() == [True, False]
            assert got2 == {}
        assert buses[0].totals.dropped["out_of_range"] == 3 * 3
        assert buses[2].totals.messages_received == 0 and buses[1].totals.messages_received == 3
    finally:
        for b in buses:
            b.close()


def test_queue_overflow_is_counted_as_queue_full():
    emu = emulator(rate_bps=8_000, queue_limit=2)  # 100 bytes -> 0.1 s each
    causes = [emu.transmit(0.0, [1], 100, 0, 1).cause[0, 0] for _ in range(4)]
    assert causes == [DELIVERED, DELIVERED, QUEUE_FULL, QUEUE_FULL]
    # once the first one is through, there is room again
    assert emu.transmit(0.1, [1], 100, 0, 1).cause[0, 0] == DELIVERED
    by_bytes = emulator(rate_bps=8_000, queue_limit_bytes=250)
    assert [by_bytes.transmit(0.0, [1], 100, 0, 1).cause[0, 0] for _ in range(3)] == [DELIVERED, DELIVERED, QUEUE_FULL]


def test_the_default_queue_limit_drops_queue_full_at_1000_messages_per_link_and_env_copy():
    assert LinkConfig().queue_limit == 1000
    emu = emulator(rate_bps=8_000)  # 100 bytes -> 0.1 s each: nothing leaves the queue while t stays 0
    causes = [emu.transmit(0.0, [1], 100, 0, 2).cause[0] for _ in range(1001)]
    assert all((c == DELIVERED).all() for c in causes[:1000])
    assert causes[1000].tolist() == [QUEUE_FULL, QUEUE_FULL]  # counted per env copy: both rows are the 1001st
    unbounded = emulator(rate_bps=8_000, queue_limit=None)
    assert all((unbounded.transmit(0.0, [1], 100, 0, 2).cause[0] == DELIVERED).all() for _ in range(1001))


def test_rows_that_cannot_be_visible_within_the_lifespan_are_expired_and_free_the_link():
    # 1 kbit/s: a 96-byte row takes 0.768 s; one is offered every 50 ms, 16 times what the link carries
    sends = [0.05 * t for t in range(200)]
    bounded = emulator(rate_bps=1_000, latency_ms=50)
    fates = [bounded.transmit(now, [1], 64, 32, 1, deadline=now + 1.0) for now in sends]
    cause = np.array([f.cause[0, 0] for f in fates])
    late = np.array([f.visible_at[0, 0] - now for f, now in zip(fates, sends, strict=True)])
    assert set(cause.tolist()) == {DELIVERED, EXPIRED}
    assert np.isnan(late[cause == EXPIRED]).all()
    assert (late[cause == DELIVERED] <= 1.0).all()
    # expired rows take no link time: the link keeps carrying a row about every 0.8 s (14 in 10 s of sends)
    assert (cause == DELIVERED).sum() == 14
    # without the lifespan (the rows would be held, then expire at the receiver) the queue grows without
    # bound and only the first row is visible within 1 s
    unbounded = emulator(rate_bps=1_000, latency_ms=50, queue_limit=None)
    late = np.array([unbounded.transmit(now, [1], 64, 32, 1).visible_at[0, 0] - now for now in sends])
    assert (late <= 1.0).sum() == 1 and late[-1] > 100


def test_shared_medium_does_not_transmit_a_row_that_would_end_after_the_lifespan():
    emu = emulator(shared_medium=True, rate_bps=1_000)
    first = emu.transmit(0.0, [1, 2], 100, 0, 1, deadline=1.0)  # 0.8 s on the air
    second = emu.transmit(0.0, [1, 2], 100, 0, 1, deadline=1.0)  # would end at 1.6 s: not sent, the radio stays free
    third = emu.transmit(0.9, [1, 2], 100, 0, 1, deadline=1.9)
    assert first.visible_at[:, 0].tolist() == [pytest.approx(0.8)] * 2
    assert second.cause[:, 0].tolist() == [EXPIRED, EXPIRED]
    assert third.visible_at[:, 0].tolist() == [pytest.approx(1.7)] * 2


def test_lifespan_expiry_is_counted_by_the_sender_and_nothing_is_delivered_or_held():
    a, b = make_buses(2, "bus.links.default.latency_ms=350", "bus.lifespan_ms=200")
    try:
        for tick in range(8):
            fates = a.send(tick=tick, round=0, channel="c", payload={"msg": np.ones((3, 2), np.float32)}, peers=[1])
            assert (fates.cause == EXPIRED).all()
            assert b.collect(tick=tick, round=0, channel="c", expected=[0], timeout_s=5) == {}
        # rows sent at t*0.1 would become visible at t*0.1+0.35, already older than the 0.2 s lifespan: the
        # sender counts each one as expired (none is queued, held or ever delivered)
        assert dict(a.totals.dropped) == {"expired": 8 * 3}
        assert b.totals.messages_received == 0 and not b.totals.dropped
        assert all(not slot.held for slot in b.mailbox.slots.values())
    finally:
        a.close()
        b.close()


def test_sim_rows_visible_after_the_last_fresh_read_of_their_round_are_expired_by_the_sender():
    from comm_bus.clock import SimClock

    clock = SimClock(0.1, 0.05)  # round 0 of tick t is read at t*0.1 + 0.05
    assert clock.usable_until(0, 0, 0.0, 1.0) == pytest.approx(0.95)  # the read at 1.05 would find it 1.05 s old
    assert clock.usable_until(3, 1, 0.35, 1.0) == pytest.approx(1.3)  # round 1 of tick 3: reads at 0.4, ..., 1.3
    assert clock.usable_until(0, 0, 0.0, 0.01) == -np.inf  # even the first read is too late
    # 960 ms is within the 1 s lifespan but first read at 1.05 s: never used, so never sent (the mailbox would count
    # it expired at that read)
    a, b = make_buses(2, "bus.links.default.latency_ms=960", "bus.round_interval_ms=50")
    try:
        for tick in range(12):
            fates = a.send(tick=tick, round=0, channel="c", payload={"msg": np.ones((2, 2), np.float32)}, peers=[1])
            assert (fates.cause == EXPIRED).all()
            assert b.collect(tick=tick, round=0, channel="c", expected=[0], timeout_s=5) == {}
        assert dict(a.totals.dropped) == {"expired": 12 * 2} and not b.totals.dropped
    finally:
        a.close()
        b.close()


def test_the_mailbox_expires_a_received_row_visible_only_after_the_lifespan():
    # a peer's visibility times are not trusted: the receiver applies the same test when a frame arrives
    box = Mailbox(lifespan=1.0)
    payload = {"msg": np.arange(2, dtype=np.float32)[:, None]}
    box.hold(0, "c", 0, HeldFrame(0.0, np.array([0.5, 1e9]), payload, tick=0))
    assert box.counts["expired"] == 1 and len(box.slots[(0, "c", 0)].held) == 1
    got = box.read(0, "c", 0, now=0.6)
    assert got.latencies.tolist() == [0.5] and not box.slots[(0, "c", 0)].held
    box.hold(0, "c", 0, HeldFrame(1.0, np.array([5.0, 1e9]), payload, tick=1))
    assert box.counts["expired"] == 3 and not box.slots[(0, "c", 0)].held  # nothing left to hold


def test_jitter_never_reorders_unless_asked_and_stays_non_negative():
    emu = emulator(seed=5, latency_ms=10, jitter_ms=8)
    times = np.stack([emu.transmit(t * 0.001, [1], 8, 0, 64).visible_at[0] for t in range(200)])
    assert (np.diff(times, axis=0) >= 0).all()
    assert (times - np.arange(200)[:, None] * 0.001 >= 0.002 - 1e-12).all()
    loose = emulator(seed=5, latency_ms=10, jitter_ms=8, reorder=True)
    times = np.stack([loose.transmit(t * 0.001, [1], 8, 0, 64).visible_at[0] for t in range(200)])
    assert (np.diff(times, axis=0) < 0).any()
    normal = emulator(seed=5, latency_ms=10, jitter_ms=3, jitter_distribution="normal", reorder=True)
    delays = np.concatenate([normal.transmit(0.0, [1], 8, 0, 1000).visible_at[0] for _ in range(5)])
    assert abs(delays.mean() - 0.010) < 0.0005 and abs(delays.std() - 0.003) < 0.0005


def test_shared_medium_serializes_one_broadcast_once():
    emu = emulator(shared_medium=True, rate_bps=8_000, latency_ms=10)
    first = emu.transmit(0.0, [1, 2, 3], 100, 0, 1)
    assert first.visible_at[:, 0].tolist() == [pytest.approx(0.11)] * 3
    second = emu.transmit(0.0, [1, 2], 100, 0, 1)
    assert second.visible_at[:, 0].tolist() == [pytest.approx(0.21)] * 2
    per_link = emulator(rate_bps=8_000, latency_ms=10)
    assert per_link.transmit(0.0, [1, 2, 3], 100, 0, 1).visible_at[:, 0].tolist() == [pytest.approx(0.11)] * 3


def test_per_link_overrides_apply_to_matching_links_only():
    overrides = "bus.links.overrides=[{src: 0, dst: 2, loss: 1.0}, {dst: 1, latency_ms: 40}]"
    cfg = load_config(None, ["bus.links.default.latency_ms=5", overrides]).bus.links
    assert cfg.resolved_model() == "netem"
    assert resolve_link(cfg, 0, 2).loss == 1.0 and resolve_link(cfg, 0, 2).latency_ms == 5
    assert resolve_link(cfg, 0, 1).latency_ms == 40 and resolve_link(cfg, 2, 1).latency_ms == 40
    assert resolve_link(cfg, 1, 0).latency_ms == 5 and resolve_link(cfg, 1, 0).loss == 0
    link = NetemLink(cfg)
    emu = LinkEmulator(0, lambda dst, now: link.params_for(0, dst, now), 0)
    fates = emu.transmit(0.0, [1, 2], 8, 0, 16)
    assert (fates.cause[0] == DELIVERED).all() and (fates.cause[1] == LOSS).all()
    assert fates.visible_at[0, 0] == pytest.approx(0.040)


def test_trace_model_replays_recorded_conditions(tmp_path):
    csv = tmp_path / "links.csv"
    csv.write_text("time_s,src,dst,latency_ms,loss,rate_bps\n0,*,*,20,0,\n1.0,0,1,250,1.0,\n2.0,0,1,20,0,inf\n")
    jsonl = tmp_path / "links.jsonl"
    jsonl.write_text(
        '{"time_s": 0, "src": "*", "dst": "*", "latency_ms": 20}\n{"time_s": 1.0, "src": 0, "dst": 1, "loss": 1}\n'
    )
    for path in (csv, jsonl):
        model = TraceLink(LinksConfig(trace_file=str(path)))
        assert model.params_for(0, 1, 0.5).latency_ms == 20
        assert model.params_for(0, 1, 1.5).loss == 1.0 and model.params_for(1, 0, 1.5).loss == 0.0
    model = TraceLink(LinksConfig(trace_file=str(csv)))
    assert model.params_for(0, 1, 1.5).latency_ms == 250 and model.params_for(0, 1, 2.5).latency_ms == 20
    emu = LinkEmulator(0, lambda dst, now: model.params_for(0, dst, now), 0)
    assert emu.transmit(0.5, [1], 8, 0, 4).cause[0].tolist() == [DELIVERED] * 4
    assert emu.transmit(1.5, [1], 8, 0, 4).cause[0].tolist() == [LOSS] * 4
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,src,dst,loss\n0,*,*,1.7\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: loss '1.7' out of range"):
        LinkTrace.load(bad)
    with pytest.raises(ValueError, match="unknown columns"):
        jsonl.write_text('{"time_s": 0, "src": 0, "dst": 1, "latncy_ms": 4}\n')
        LinkTrace.load(jsonl)


def test_out_of_range_uses_the_first_check():
    emu = emulator(range=1.0, loss=1.0)
    fates = emu.transmit(0.0, [1], 8, 0, 2, distances=np.array([[0.5, 2.0]]))
    assert fates.cause[0].tolist() == [LOSS, OUT_OF_RANGE]


def test_scheduled_partition_drops_with_its_own_cause_and_recovers():
    from comm_bus.faults import LinkFault, LinkFaults

    faults = LinkFaults(
        [
            LinkFault("partition", ((0, 1),), from_env_steps=4 * 3, to_env_steps=4 * 6),  # ticks 3..5 at B=4
            LinkFault("degrade", (("*", "*"),), from_env_steps=4 * 8, changes={"latency_ms": 250.0}),
        ]
    )
    from prometheus_client import CollectorRegistry

    from comm_bus.bus import Bus, local_buses
    from comm_bus.metrics import BusMetrics

    a, b = local_buses(
        2, lambda i, addressing: Bus(i, 2, addressing, faults=faults, metrics=BusMetrics(CollectorRegistry()))
    )
    try:
        fresh_ticks = []
        for tick in range(10):
            a.send(tick=tick, round=0, channel="c", payload={"msg": np.full((4, 2), tick, np.float32)}, peers=[1])
            got = b.collect(tick=tick, round=0, channel="c", expected=[0], timeout_s=5)
            if got and got[0].age.max() < 0.15:  # a value sent this tick
                fresh_ticks.append(tick)
        assert fresh_ticks == [0, 1, 2, 6, 7]  # cut during ticks 3-5, recovered at 6, slow (250 ms) from 8
        assert a.totals.dropped["partition"] == 3 * 4
        assert set(a.totals.dropped) == {"partition"}
    finally:
        a.close()
        b.close()

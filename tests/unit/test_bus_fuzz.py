"""Hypothesis fuzzing of the bus receive path: malformed, oversize and unknown-sender frames are dropped and
counted, and never raise. Runs against a real Bus bound on 127.0.0.1."""

import random

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from comm_bus.bus import Bus, local_buses
from comm_bus.envelope import Envelope, serialize
from comm_bus.metrics import BusMetrics
from marlmesh.testing.fuzz_strategies import ENVELOPES, mutate, valid_frame
from marlmesh.v1 import bus_pb2, tensor_pb2

MAX_FRAME = 8192


@pytest.fixture(scope="module")
def trio():
    buses = local_buses(3, lambda i, addressing: Bus(
        i, 3, addressing, max_frame_bytes=MAX_FRAME, metrics=BusMetrics(CollectorRegistry()), context=zmq.Context(),
    ))  # fmt: skip
    yield buses
    for b in buses:
        b.close()


@pytest.fixture(scope="module")
def bus(trio):
    return trio[1]


def _accounted(b: Bus) -> int:
    return b.totals.frames_received + sum(b.totals.dropped.values())


def _check_one(b: Bus, frame: bytes) -> None:
    before = _accounted(b)
    b._accept(frame)  # the receive path of every frame read from the socket
    assert _accounted(b) == before + 1, "a frame was neither accepted nor counted as dropped"
    for src, channel, rnd in list(b.mailbox.slots):  # whatever was accepted must also be readable
        for now in (-1.0, 0.5, 1e12):
            b.mailbox.read(src, channel, rnd, now)
    b.mailbox.slots.clear()


def _valid(rows: int = 4) -> bytes:
    return valid_frame(rows)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.binary(max_size=2 * MAX_FRAME))
def test_random_bytes(bus, frame):
    _check_one(bus, frame)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=ENVELOPES)
def test_structured_but_hostile_envelopes(bus, msg):
    _check_one(bus, msg.SerializeToString())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_mutated_valid_frames(bus, rows, seed):
    _check_one(bus, mutate(_valid(rows), random.Random(seed)))


def test_a_huge_row_count_of_nothing_is_dropped_not_allocated(bus):
    # found by the fuzzer: shape [4652573961, 0] has no elements, so its bytes match; the bus sized a
    # per-row array by its row count (35 GiB)
    for shape in ([4652573961, 0], [1 << 27, 0], [0, 4]):
        msg = bus_pb2.Envelope(wire_version=1, src=0, dst=1, channel="c")
        msg.payload.add(name="msg", tensor=tensor_pb2.Tensor(dtype="float32", shape=shape, data=b""))
        before = bus.totals.dropped["bad_tensor"]
        _check_one(bus, msg.SerializeToString())
        assert bus.totals.dropped["bad_tensor"] == before + 1, shape


def test_every_cause_is_counted_and_the_bus_still_works(bus, trio):
    before = dict(bus.totals.dropped)
    hostile = {
        "oversize": b"\x00" * (MAX_FRAME + 1),
        "unknown_sender": serialize(Envelope(src=9, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0,
                                             payload={"msg": np.ones((2, 2), np.float32)})),  # fmt: skip
        "bad_version": bus_pb2.Envelope(wire_version=7, src=0, channel="c").SerializeToString(),
        "bad_tensor": serialize(Envelope(src=0, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0,
                                         payload={"msg": np.ones((2, 2), np.float32)}, visible_at=np.zeros(3))),
        "bad_field": serialize(Envelope(src=1, dst=1, channel="c", tick=0, round=0, seq=1, sent_at=0.0,
                                        payload={"msg": np.ones((2, 2), np.float32)})),  # from itself
    }  # fmt: skip
    for cause, frame in hostile.items():
        bus._accept(frame)
        assert bus.totals.dropped[cause] == before.get(cause, 0) + 1, cause
    # a real peer over a real socket is still heard
    trio[0].send(tick=10**6, round=0, channel="ok", payload={"msg": np.ones((4, 4), np.float32)}, peers=[1])
    got = bus.collect(tick=10**6, round=0, channel="ok", expected=[0], timeout_s=5)
    assert got[0].payload["msg"].shape == (4, 4)

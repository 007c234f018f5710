"""Hostile inputs for the wire surfaces: Hypothesis strategies, a fast generator and a byte mutator.

Shared by the fuzz tests (a few hundred inputs per surface) and ``marlmesh bench fuzz`` (tens of thousands).
Hypothesis is used as a generator, not as a test runner: :func:`generate` draws ``n`` values of a strategy in
one ``@given`` run with only the generate phase (no shrinking, no example database, no deadline), which costs
well under a millisecond per value for these strategies. :func:`mutate` flips, cuts, duplicates and inserts
bytes of a valid message with a seeded :class:`random.Random`: mutations of valid messages get past the outer
decoding and reach the validation behind it far more often than random bytes do.

Needs ``hypothesis`` (the ``dev`` extra).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from marlmesh import tensors
from marlmesh.rollout import RolloutRecorder
from marlmesh.v1 import bus_pb2, learner_pb2, tensor_pb2

T = TypeVar("T")

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
AGENT = st.one_of(st.integers(-2, 4), INT32)
"""Agent indices: mostly near the valid range, sometimes any int32."""
DTYPES = st.one_of(st.sampled_from(sorted(tensors.WIRE_DTYPES)), st.text(max_size=10))
SHAPES = st.lists(st.one_of(st.integers(-3, 6), st.integers(-(2**62), 2**62)), max_size=5)


@st.composite
def wire_tensors(draw: Callable[[st.SearchStrategy[Any]], Any]) -> tensor_pb2.Tensor:
    """Random tensors: mostly consistent byte counts for a small shape, sometimes junk."""
    if draw(st.booleans()):
        return tensor_pb2.Tensor(dtype=draw(DTYPES), shape=draw(SHAPES), data=draw(st.binary(max_size=128)))
    dtype = draw(st.sampled_from(sorted(tensors.WIRE_DTYPES)))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape else np.dtype(dtype).itemsize
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=draw(st.binary(min_size=size, max_size=size)))


def valid_fragment(spec: Any) -> dict[str, np.ndarray]:
    """The columns of a small valid rollout fragment for the policy ``spec`` (T = B = 2)."""
    rng = np.random.default_rng(0)
    t, b, n, m = 2, 2, spec.num_agents, spec.message_dim
    rec = RolloutRecorder(t, b, spec.obs_shape, spec.action_space, 1, n, m)
    inbox = [(np.zeros((b, n, m), np.float32), np.ones((b, n), np.float32))]
    obs = np.zeros((b, *spec.obs_shape), np.float32)
    for _ in range(t):
        obs = rng.normal(size=(b, *spec.obs_shape)).astype(np.float32)
        rec.add_decision(obs, inbox, np.zeros(b, np.int64), np.zeros(b), np.zeros(b), 0)
        rec.add_outcome(np.ones(b), np.zeros(b, bool), np.zeros(b, bool), np.zeros_like(obs))
    return rec.finish(obs, inbox)


FRAGMENT_MUTATIONS = st.sampled_from(
    ["none", "drop", "extra", "dtype", "shape", "nan", "action_range", "negative_version", "junk"]
)


@st.composite
def fragments(draw: Callable[[st.SearchStrategy[Any]], Any], base: dict[str, np.ndarray]) -> Any:
    """Rollout fragments derived from the valid columns ``base``: one column broken (or none), header varied."""
    cols = dict(base)
    mutation = draw(FRAGMENT_MUTATIONS)
    name = draw(st.sampled_from(sorted(cols)))
    if mutation == "drop":
        del cols[name]
    elif mutation == "extra":
        cols[draw(st.text(min_size=1, max_size=8))] = np.zeros(2, np.float32)
    elif mutation == "dtype":
        cols[name] = cols[name].astype(draw(st.sampled_from(["float16", "int8", "bool", "float64", "int32"])))
    elif mutation == "shape":
        cols[name] = cols[name].reshape(-1)[: draw(st.integers(0, cols[name].size))]
    elif mutation == "nan" and cols[name].dtype.kind == "f":
        cols[name] = cols[name].copy()
        cols[name].reshape(-1)[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif mutation == "action_range":
        cols["action"] = np.full_like(cols["action"], draw(st.sampled_from([-1, 5, 2**40])))
    elif mutation == "negative_version":
        cols["policy_version"] = np.full_like(cols["policy_version"], -draw(st.integers(1, 2**40)))
    named = tensors.encode_named(cols)
    if mutation == "junk":
        named[draw(st.integers(0, len(named) - 1))].tensor.CopyFrom(draw(wire_tensors()))
    versions = cols.get("policy_version", np.zeros(1, np.int64))
    honest = draw(st.booleans())
    return learner_pb2.RolloutFragment(
        agent_index=0 if honest else draw(AGENT),
        fragment_id=draw(st.integers(0, 2**64 - 1)),
        num_steps=int(cols["obs"].shape[0]) if honest and "obs" in cols and cols["obs"].ndim else draw(INT32),
        min_policy_version=int(versions.min()) if honest and versions.size else draw(INT64),
        max_policy_version=int(versions.max()) if honest and versions.size else draw(INT64),
        columns=named,
    )


BUS_TENSORS = st.builds(
    tensor_pb2.Tensor,
    dtype=st.sampled_from(["float32", "float16", "int8", "float64", "bool", "complex64", "", "object"]),
    shape=st.lists(st.integers(-3, 1 << 40), max_size=4),
    data=st.binary(max_size=256),
)
ENVELOPES = st.builds(
    bus_pb2.Envelope,
    wire_version=st.sampled_from([0, 1, 2]),
    src=st.integers(-5, 8),
    dst=st.integers(-2, 4),
    channel=st.text(max_size=8),
    tick=st.integers(-3, 1 << 40),
    round=st.integers(-2, 6),
    seq=st.integers(0, 1 << 63),
    sent_at=st.floats(allow_nan=True),
    bus_time=st.floats(allow_nan=True, allow_infinity=True),
    payload=st.lists(
        st.builds(tensor_pb2.NamedTensor, name=st.sampled_from(["msg", "msg:scale", "", "x"]), tensor=BUS_TENSORS),
        max_size=3,
    ),
)
"""Structurally valid protobuf envelopes with hostile field values."""


def valid_frame(rows: int = 4, dim: int = 4, visible: bool = True) -> bytes:
    """A valid bus frame from agent 0 to agent 1 (``rows`` env copies of a ``dim`` message, visible at 0 or unset)."""
    from comm_bus.envelope import Envelope, serialize

    envelope = Envelope(
        src=0,
        dst=1,
        channel="c",
        tick=1,
        round=0,
        seq=1,
        sent_at=0.0,
        payload={"msg": np.ones((rows, dim), np.float32)},
        visible_at=np.zeros(rows) if visible else None,
    )
    return serialize(envelope)


def generate(strategy: st.SearchStrategy[T], n: int, seed: int) -> list[T]:
    """Draw ``n`` values of ``strategy`` (fewer only if Hypothesis exhausts a small strategy).

    Args:
        strategy: What to draw.
        n: How many values.
        seed: Same seed, same values.
    """
    out: list[T] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(value: T) -> None:
        if len(out) < n:
            out.append(value)

    draw()
    return out


def mutate(data: bytes, rng: random.Random, max_edits: int = 3) -> bytes:
    """A copy of ``data`` with 1..``max_edits`` random edits: byte flips, cuts, duplicated or inserted runs."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_edits)):
        op = rng.random()
        if not buf or op < 0.15:
            buf += rng.randbytes(rng.randint(1, 16))
        elif op < 0.55:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op < 0.7:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op < 0.8:
            del buf[rng.randrange(len(buf)) :]
        elif op < 0.9:
            i, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
            buf[i:i] = buf[i:j]
        else:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
    return bytes(buf)

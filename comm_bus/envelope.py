"""Envelope encoding and strict decoding for the bus receive path.

A received frame is untrusted: :func:`parse` returns an :class:`Envelope` or raises :class:`MalformedFrame`
with a cause label used as the ``cause`` of the drop counter. It never raises anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from marlmesh import tensors
from marlmesh.v1 import bus_pb2

WIRE_VERSION = 1


class MalformedFrame(ValueError):
    """A frame that cannot be accepted. ``cause`` is a short label for metrics."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


@dataclass(frozen=True)
class Envelope:
    """A decoded, validated bus message."""

    src: int
    dst: int
    channel: str
    tick: int
    round: int
    seq: int
    sent_at: float
    payload: dict[str, np.ndarray]
    bus_time: float = 0.0
    visible_at: np.ndarray | None = None
    """``[B]`` float64 per-row visibility on the bus clock (NaN = dropped); None = all visible at ``bus_time``."""


def serialize(env: Envelope) -> bytes:
    """Serialize an envelope to bytes."""
    msg = bus_pb2.Envelope(
        wire_version=WIRE_VERSION,
        src=env.src,
        dst=env.dst,
        channel=env.channel,
        tick=env.tick,
        round=env.round,
        seq=env.seq,
        sent_at=env.sent_at,
        payload=tensors.encode_named(env.payload),
        bus_time=env.bus_time,
    )
    out = msg.SerializeToString()
    return out if env.visible_at is None else out + visibility_suffix(env.visible_at)


def visibility_suffix(visible_at: np.ndarray) -> bytes:
    """The serialized ``visible_at`` field alone.

    Protobuf merges concatenated messages, so appending this to a serialized envelope sets its per-row
    visibility without serializing the payload again (one payload encoding for all receivers of a round).
    """
    return bus_pb2.Envelope(visible_at=tensors.encode(np.asarray(visible_at, np.float64))).SerializeToString()


def parse(frame: bytes, *, num_agents: int, max_bytes: int) -> Envelope:
    """Decode and validate a received frame.

    Args:
        frame: Raw bytes from the socket.
        num_agents: N; ``src`` must be in ``[0, N)``.
        max_bytes: Frames larger than this are rejected without decoding.

    Raises:
        MalformedFrame: With cause ``oversize``, ``undecodable``, ``bad_version``, ``unknown_sender``,
            ``bad_field`` or ``bad_tensor`` (including a payload without a common row dimension).
    """
    if len(frame) > max_bytes:
        raise MalformedFrame("oversize", f"{len(frame)} bytes > {max_bytes}")
    msg = bus_pb2.Envelope()
    try:
        msg.ParseFromString(frame)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise MalformedFrame("undecodable", str(exc)) from None
    if msg.wire_version != WIRE_VERSION:
        raise MalformedFrame("bad_version", f"wire_version {msg.wire_version} != {WIRE_VERSION}")
    if not 0 <= msg.src < num_agents:
        raise MalformedFrame("unknown_sender", f"src {msg.src} not in [0, {num_agents})")
    if msg.tick < 0 or msg.round < 0 or not msg.channel:
        raise MalformedFrame("bad_field", f"tick {msg.tick}, round {msg.round}, channel {msg.channel!r}")
    try:
        payload = tensors.decode_named(msg.payload, what="Envelope.payload")
        visible_at = tensors.decode(msg.visible_at, what="Envelope.visible_at") if msg.HasField("visible_at") else None
    except tensors.TensorError as exc:
        raise MalformedFrame("bad_tensor", str(exc)) from None
    rows = {int(a.shape[0]) if a.ndim else -1 for a in payload.values()}
    if not payload or len(rows) != 1 or -1 in rows:
        raise MalformedFrame("bad_tensor", f"payload tensors must share a leading row dimension, got {sorted(rows)}")
    empty = sorted(name for name, a in payload.items() if a.size == 0)
    if empty:  # a message has at least one row of at least one value; rows = 1e9 of nothing would size buffers
        raise MalformedFrame("bad_tensor", f"payload tensors {empty} have no elements")
    if visible_at is not None and (visible_at.dtype != np.float64 or visible_at.shape != (rows.pop(),)):
        got = f"{visible_at.dtype}{list(visible_at.shape)}"
        raise MalformedFrame("bad_tensor", f"visible_at must be float64 [rows], got {got}")
    if not np.isfinite(msg.bus_time):
        raise MalformedFrame("bad_field", f"bus_time {msg.bus_time}")
    return Envelope(
        src=msg.src,
        dst=msg.dst,
        channel=msg.channel,
        tick=msg.tick,
        round=msg.round,
        seq=msg.seq,
        sent_at=msg.sent_at,
        payload=payload,
        bus_time=msg.bus_time,
        visible_at=visible_at,
    )

"""Receiver mailboxes: the latest visible value per (sender, channel, round), with its age and a lifespan.

Frames from a sender arrive in order (ZeroMQ keeps per-peer order) and are held until the rows they carry
become visible on the bus clock. Reading a slot at bus time ``now`` first applies every held frame of that
slot that was sent before ``now`` and whose rows are visible by ``now`` (row by row: each env copy has its
own link), then returns the latest row per env copy that is younger than the lifespan.

Counted (per receiver): ``superseded`` (a visible row replaced by a newer one before it was ever read) and
``expired`` (a visible row that aged past the lifespan before it was ever read, or a row that becomes visible
only after the lifespan: such a row can never be used, so it is counted and dropped when its frame arrives
instead of being held until then). A sender's link emulation already drops such rows before they are queued
(:mod:`comm_bus.link_emulation`); the receiver applies the same test because a peer's visibility times are
not trusted (held, they would be re-examined at every read).

Each round of a multi-round channel is its own slot, so a hop-1 embedding never stands in for a hop-2 one.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

#: Frames held per slot before the oldest is dropped (cause ``overflow``).
MAX_HELD_FRAMES = 4096


@dataclass
class HeldFrame:
    """A received frame waiting for its rows to become visible.

    Attributes:
        sent_at: Bus-clock send time (the generation time of every row).
        visible_at: ``[B]`` bus-clock visibility per row; NaN = never (dropped on the link).
        payload: Dequantized tensors, rows along the first axis.
        tick: The tick it was sent in (for traces).
    """

    sent_at: float
    visible_at: np.ndarray
    payload: dict[str, np.ndarray]
    tick: int
    uniform: bool = False
    """Every row is visible at ``sent_at`` (a frame without per-row fates): the slot takes the fast path."""
    pending: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.pending = np.ones(self.visible_at.shape[0], bool) if self.uniform else ~np.isnan(self.visible_at)


@dataclass
class Delivery:
    """What a receiver sees of one sender in one slot.

    Attributes:
        payload: Latest visible tensors, rows ``[B, ...]`` (rows where ``rows`` is False hold stale or zero
            data and must be ignored).
        rows: ``[B]`` bool, the env copies with a fresh value; None when every row is fresh.
        age: ``[B]`` bus-clock seconds since each row was sent (inf where there is none).
        latencies: Delivery latencies (visible_at - sent_at) of the rows that became visible in this read.
    """

    payload: dict[str, np.ndarray]
    rows: np.ndarray | None
    age: np.ndarray
    latencies: np.ndarray


class Slot:
    """Latest-value state of one (sender, channel, round)."""

    def __init__(self) -> None:
        self.held: deque[HeldFrame] = deque()
        self.data: dict[str, np.ndarray] | None = None
        self.owned = False  # data arrays are private copies (safe to write rows into)
        self.gen: np.ndarray | None = None  # [B] send time of the current row (-inf = none)
        self.unread: np.ndarray | None = None

    def _ensure(self, frame: HeldFrame) -> None:
        b = frame.visible_at.shape[0]
        if self.gen is None or self.gen.shape[0] != b:
            self.gen = np.full(b, -np.inf)
            self.unread = np.zeros(b, bool)
            self.data = None

    def apply(self, now: float, strict: bool, counts: Counter[str]) -> list[np.ndarray]:
        """Move visible rows of held frames into the current value; returns the new rows' latencies."""
        latencies: list[np.ndarray] = []
        keep: deque[HeldFrame] = deque()
        while self.held:
            frame = self.held[0]
            if (frame.sent_at >= now) if strict else (frame.sent_at > now):
                break  # a sender's frames arrive in send order: the rest are not due either
            self.held.popleft()
            self._ensure(frame)
            assert self.gen is not None and self.unread is not None
            if frame.uniform and (frame.sent_at > self.gen).all():
                # Fast path (ideal links): every row is visible at the send time, which is due, and newer.
                counts["superseded"] += int(np.count_nonzero(self.unread))
                self._write(frame.payload, frame.pending)
                self.gen.fill(frame.sent_at)
                self.unread.fill(True)
                latencies.append(np.zeros(self.gen.shape[0]))
                continue
            ready = frame.pending & (frame.visible_at <= now)
            if ready.any():
                newer = ready & (frame.sent_at > self.gen)
                if newer.any():
                    counts["superseded"] += int((newer & self.unread).sum())
                    self._write(frame.payload, newer)
                    self.gen[newer] = frame.sent_at
                    self.unread[newer] = True
                    latencies.append(frame.visible_at[newer] - frame.sent_at)
                frame.pending &= ~ready
            if frame.pending.any():
                keep.append(frame)
        keep.extend(self.held)
        self.held = keep
        return latencies

    def _write(self, payload: dict[str, np.ndarray], rows: np.ndarray) -> None:
        if self.data is None or (rows.all() and set(payload) == set(self.data)):
            self.data = payload  # zero copy: the whole value is replaced
            self.owned = False
            return
        if not self.owned:
            self.data = {k: np.array(v) for k, v in self.data.items()}
            self.owned = True
        for name, arr in payload.items():
            current = self.data.get(name)
            if current is None or current.shape != arr.shape or current.dtype != arr.dtype:
                current = self.data[name] = np.zeros(arr.shape, arr.dtype)
            current[rows] = arr[rows]


class Mailbox:
    """All slots of one receiver.

    Args:
        lifespan: Maximum age (bus-clock seconds) of a value that is still used.
    """

    def __init__(self, lifespan: float) -> None:
        self.lifespan = lifespan
        self.slots: dict[tuple[int, str, int], Slot] = {}
        self.counts: Counter[str] = Counter()

    def hold(self, src: int, channel: str, round: int, frame: HeldFrame) -> None:
        """Keep a received frame until its rows are visible; rows that will be too old by then are expired now."""
        too_late = None if frame.uniform else frame.pending & (frame.visible_at - frame.sent_at > self.lifespan)
        if too_late is not None and too_late.any():  # (a uniform frame's rows are visible when sent: never late)
            self.counts["expired"] += int(too_late.sum())
            frame.pending &= ~too_late
            if not frame.pending.any():
                return
        slot = self.slots.setdefault((src, channel, round), Slot())
        if len(slot.held) >= MAX_HELD_FRAMES:
            slot.held.popleft()
            self.counts["overflow"] += 1
        slot.held.append(frame)

    def read(self, src: int, channel: str, round: int, now: float, *, strict: bool = True) -> Delivery | None:
        """The latest fresh value of a slot at bus time ``now`` (None if the sender never had a visible row).

        Args:
            src: Sender.
            channel: Channel name.
            round: Round index.
            now: Bus-clock time of the read.
            strict: Only frames sent strictly before ``now`` count (sim clock: a frame sent at the read
                instant belongs to the next round).
        """
        slot = self.slots.get((src, channel, round))
        if slot is None:
            return None
        lat = slot.apply(now, strict, self.counts)
        if slot.gen is None or slot.data is None:
            return None
        age = now - slot.gen
        fresh = age <= self.lifespan
        assert slot.unread is not None
        every_row_fresh = bool(fresh.all())
        if not every_row_fresh:
            expired = slot.unread & ~fresh & np.isfinite(slot.gen)
            if expired.any():
                self.counts["expired"] += int(expired.sum())
        slot.unread.fill(False)  # every row is now either read (fresh) or counted as expired
        latencies = (lat[0] if len(lat) == 1 else np.concatenate(lat)) if lat else np.zeros(0)
        return Delivery(slot.data, None if every_row_fresh else fresh, age, latencies)

    def forget(self, src: int) -> None:
        """Drop every slot of a sender (it left the mesh)."""
        for key in [k for k in self.slots if k[0] == src]:
            del self.slots[key]

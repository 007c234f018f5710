"""Netem-style emulation of one sender's outgoing links, vectorized over the B env copies.

A *message* here is one env copy's row on one directed link ``src -> dst`` (an envelope carries the B rows
of all env copies at once, but every env copy is its own world with its own links). For each message, in
this order (docs/link-emulation.md):

1. **range**: dropped (``out_of_range``) if the two agents are farther apart than ``range``;
0. **partition** (fault schedule): dropped (``partition``) while a partition covers the link;
2. **loss**: dropped (``loss``) with probability ``loss`` (Bernoulli) or by a Gilbert-Elliott chain;
3. **drop-tail queue**: dropped (``queue_full``) if ``queue_limit`` messages or ``queue_limit_bytes``
   bytes are still in flight on the link (sent but not yet visible);
4. **delay**: ``latency + jitter`` (uniform in ``[-jitter, +jitter]`` or normal with std ``jitter``,
   clipped at 0);
5. **serialization** at ``rate_bps``: ``visible_at = max(now + delay, last) + bits / rate`` where ``last``
   is the previous message's ``visible_at`` on that link (FIFO: no reordering unless ``reorder`` is set and
   the link has no rate limit). ``bits = 8 * (payload bytes + header bytes)``;
6. **lifespan**: dropped (``expired``) if ``visible_at`` is after ``deadline``, the last time the receiver
   would still read it within its lifespan (given by the bus: :meth:`comm_bus.clock.SimClock.usable_until`):
   the row could never be used, so it is not queued and not serialized (``last`` and the queue stay as they
   were), and the link's capacity goes to the rows that can still arrive in time.

With ``shared_medium`` every sender has one transmitter: a round's message to several peers is serialized
once (``done = max(now, last) + bits / rate``) and becomes visible at each receiver after that receiver's
own latency and jitter; range and loss stay per receiver. A row whose transmission would end after the
deadline is not transmitted at all (``expired`` on every link).

Randomness comes from one generator per directed link seeded by ``(seed, src, dst)``, consumed in a fixed
order, so the same seed and the same sequence of sends give the same fates on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from marlmesh.config.bus import LinkConfig

#: Fate codes (also the ``cause`` column of the trace file).
DELIVERED, OUT_OF_RANGE, LOSS, QUEUE_FULL, NOT_SENT, PARTITION, EXPIRED = 0, 1, 2, 3, 4, 5, 6
CAUSES: dict[int, str] = {
    DELIVERED: "delivered",
    OUT_OF_RANGE: "out_of_range",
    LOSS: "loss",
    QUEUE_FULL: "queue_full",
    NOT_SENT: "not_sent",
    PARTITION: "partition",
    EXPIRED: "expired",
}


@dataclass(frozen=True)
class Fates:
    """What happens to one round's message rows on each link.

    Attributes:
        dsts: Receivers, in the order of the rows below.
        visible_at: ``[D, B]`` float64 bus-clock time at which each row becomes visible; NaN if dropped.
        cause: ``[D, B]`` uint8 fate codes (:data:`CAUSES`).
        row_bytes: Bytes of one row on the wire (payload + header).
    """

    dsts: tuple[int, ...]
    visible_at: np.ndarray
    cause: np.ndarray
    row_bytes: int


class _LinkState:
    """Per directed link: RNG, last visible time, burst-loss state and in-flight queue, each ``[B]``."""

    def __init__(self, seed: int, src: int, dst: int, batch: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, src, dst, 0x4C494E4B])))
        self.last = np.full(batch, -np.inf)
        self.bad = np.zeros(batch, bool)
        self.queue_at = np.empty((0, batch))  # [Q, B] visible_at of the queued messages (-inf: a dropped row)
        self.queue_bytes = np.empty(0)  # [Q] bytes of each queued message

    def enqueue(self, at: np.ndarray, size: int) -> None:
        """Queue one message (``at``: ``[B]`` visible_at, -inf for the rows not queued)."""
        self.queue_at = np.concatenate([self.queue_at, at[None]])
        self.queue_bytes = np.append(self.queue_bytes, float(size))

    def in_flight(self, now: float) -> np.ndarray:
        """``[Q, B]``: the queued rows not yet visible at ``now`` (messages with none left are forgotten)."""
        pending = self.queue_at > now
        busy = pending.any(1)
        if not busy.all():
            self.queue_at, self.queue_bytes, pending = self.queue_at[busy], self.queue_bytes[busy], pending[busy]
        return pending

    def clear_queue(self) -> None:
        """Forget the queue (the link has no queue limit)."""
        if self.queue_bytes.size:
            self.queue_at, self.queue_bytes = self.queue_at[:0], self.queue_bytes[:0]


LinkParams = Callable[[int, float], LinkConfig]
"""``(dst, now) -> LinkConfig``: the parameters of link ``src -> dst`` at bus time ``now``."""

LinkCut = Callable[[int, float], bool]
"""``(dst, now) -> bool``: whether link ``src -> dst`` is partitioned at bus time ``now`` (fault schedule)."""


class LinkEmulator:
    """Decides the fate of every message one sender puts on its links.

    Args:
        src: The sender's agent index.
        params: Link parameters per receiver and time (per-link overrides, trace replay).
        seed: Run seed.
        shared_medium: One transmitter for all of this sender's links (see module doc).
        cut: Partitions from the fault schedule (checked first: a cut link drops everything, cause
            ``partition``).
    """

    def __init__(
        self, src: int, params: LinkParams, seed: int, *, shared_medium: bool = False, cut: LinkCut | None = None
    ) -> None:
        self.src = src
        self.params = params
        self.cut = cut
        self.seed = seed
        self.shared_medium = shared_medium
        self._links: dict[int, _LinkState] = {}
        self._medium_last: np.ndarray | None = None
        self._batch: int | None = None

    def _link(self, dst: int, batch: int) -> _LinkState:
        if self._batch is None:
            self._batch = batch
        elif batch != self._batch:
            raise ValueError(f"batch changed from {self._batch} to {batch} rows on the links of agent {self.src}")
        state = self._links.get(dst)
        if state is None:
            state = self._links[dst] = _LinkState(self.seed, self.src, dst, batch)
        return state

    def transmit(
        self,
        now: float,
        dsts: Sequence[int],
        payload_row_bytes: int,
        header_bytes: int,
        batch: int,
        distances: np.ndarray | None = None,
        rows: np.ndarray | None = None,
        deadline: float | None = None,
    ) -> Fates:
        """Decide the fates of one round's message rows to ``dsts``.

        Args:
            now: Bus-clock time of the send (seconds).
            dsts: Receivers.
            payload_row_bytes: Serialized payload bytes of one row.
            header_bytes: Per-message overhead.
            batch: B.
            distances: ``[len(dsts), B]`` sender-receiver distances, or None when the env has no positions
                (then no range check).
            rows: ``[B]`` bool, rows actually sent (None = all); the others get :data:`NOT_SENT`.
            deadline: Bus time after which a row can no longer be used: rows visible later are dropped as
                :data:`EXPIRED` before they are queued (None: no deadline).

        Returns:
            The fates, one row per receiver.
        """
        row_bytes = payload_row_bytes + header_bytes
        bits = 8.0 * row_bytes
        d = len(dsts)
        visible = np.full((d, batch), np.nan)
        cause = np.full((d, batch), DELIVERED, np.uint8)
        sent = np.ones(batch, bool) if rows is None else np.asarray(rows, bool)
        medium_done: np.ndarray | None = None
        for i, dst in enumerate(dsts):
            p = self.params(dst, now)
            link = self._link(dst, batch)
            ok = sent.copy()
            cause[i, ~sent] = NOT_SENT
            if self.cut is not None and self.cut(dst, now):
                cause[i, ok] = PARTITION
                continue
            if p.range is not None and distances is not None:
                far = ok & (distances[i] > p.range)
                cause[i, far] = OUT_OF_RANGE
                ok &= ~far
            lost = self._lose(p, link, batch) & ok
            cause[i, lost] = LOSS
            ok &= ~lost
            full = self._queue_full(p, link, now, row_bytes) & ok
            cause[i, full] = QUEUE_FULL
            ok &= ~full
            delay = self._delay(p, link, batch)
            if self.shared_medium:
                if medium_done is None:
                    medium_done = self._serialize_medium(now, bits, p.rate_bps, sent, deadline)
                at = medium_done + delay
                at = np.maximum(at, link.last) if not p.reorder else at
            else:
                start = now + delay
                if p.rate_bps is not None or not p.reorder:
                    start = np.maximum(start, link.last)
                at = start + (bits / p.rate_bps if p.rate_bps is not None else 0.0)
            if deadline is not None:
                late = ok & ~(at <= deadline)  # NaN: a shared-medium row that was not transmitted
                cause[i, late] = EXPIRED
                ok &= ~late
            visible[i, ok] = at[ok]
            link.last = np.where(ok, at, link.last)
            if p.queue_limit is not None or p.queue_limit_bytes is not None:
                link.enqueue(np.where(ok, at, -np.inf), row_bytes)
        return Fates(tuple(dsts), visible, cause, row_bytes)

    @staticmethod
    def _lose(p: LinkConfig, link: _LinkState, batch: int) -> np.ndarray:
        draw = link.rng.random(batch)
        if p.loss_model == "bernoulli":
            return draw < p.loss
        ge = p.gilbert_elliott
        flip = link.rng.random(batch)
        link.bad = np.where(link.bad, flip >= ge.p_bad_to_good, flip < ge.p_good_to_bad)
        return draw < np.where(link.bad, ge.loss_bad, ge.loss_good)

    @staticmethod
    def _queue_full(p: LinkConfig, link: _LinkState, now: float, row_bytes: int) -> np.ndarray:
        if p.queue_limit is None and p.queue_limit_bytes is None:
            link.clear_queue()
            return np.zeros(link.last.shape, bool)
        pending = link.in_flight(now)  # [Q, B]
        full = np.zeros(link.last.shape, bool)
        if p.queue_limit is not None:
            full |= pending.sum(0) >= p.queue_limit
        if p.queue_limit_bytes is not None:
            full |= (link.queue_bytes[:, None] * pending).sum(0) + row_bytes > p.queue_limit_bytes
        return full

    @staticmethod
    def _delay(p: LinkConfig, link: _LinkState, batch: int) -> np.ndarray:
        base = p.latency_ms / 1000.0
        if p.jitter_ms <= 0:
            return np.full(batch, base)
        j = p.jitter_ms / 1000.0
        noise = link.rng.uniform(-j, j, batch) if p.jitter_distribution == "uniform" else link.rng.normal(0, j, batch)
        return np.maximum(0.0, base + noise)

    def _serialize_medium(
        self, now: float, bits: float, rate: float | None, sent: np.ndarray, deadline: float | None
    ) -> np.ndarray:
        """End of the one transmission of each sent row (NaN: not transmitted, it would end after the deadline)."""
        batch = sent.shape[0]
        if self._medium_last is None:
            self._medium_last = np.full(batch, -np.inf)
        done = np.maximum(now, self._medium_last) + (bits / rate if rate is not None else 0.0)
        on_air = sent if deadline is None else sent & (done <= deadline)
        self._medium_last = np.where(on_air, done, self._medium_last)
        return np.where(on_air, done, np.nan)

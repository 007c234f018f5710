"""The agent-side bus: send one round's message to peers, collect the peers' messages of a round.

Transport is ZeroMQ, brokerless: every agent binds one PULL socket and connects one PUSH socket per peer.
One envelope carries the B rows of all env copies for one (tick, round). Receiving is done inline by the
caller (no thread): :meth:`Bus.collect` polls until every expected peer's message of that round arrived or
the round timeout passes. Malformed, stale and unexpected frames are dropped and counted, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

import numpy as np
import zmq

from comm_bus.addressing import PeerAddressing
from comm_bus.envelope import Envelope, MalformedFrame, parse, serialize
from comm_bus.metrics import BusMetrics, BusTotals

log = logging.getLogger(__name__)

#: Pending (tick, round) slots kept for messages that arrive before their round is collected.
MAX_PENDING_SLOTS = 64


class Bus:
    """One agent's endpoint on the bus.

    Args:
        agent_index: This agent's index.
        num_agents: N (senders outside ``[0, N)`` are rejected).
        addressing: Where peers live.
        header_bytes: Per-message overhead added to the bytes counted as sent.
        max_frame_bytes: Larger frames are dropped unread (cause ``oversize``).
        metrics: Prometheus instruments (default: the process-wide ones).
        context: ZeroMQ context (default: the process-wide instance).
    """

    def __init__(
        self,
        agent_index: int,
        num_agents: int,
        addressing: PeerAddressing,
        *,
        header_bytes: int = 32,
        max_frame_bytes: int = 16 * 1024 * 1024,
        metrics: BusMetrics | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if not 0 <= agent_index < num_agents:
            raise ValueError(f"agent index {agent_index} not in [0, {num_agents})")
        self.agent_index = agent_index
        self.num_agents = num_agents
        self.addressing = addressing
        self.header_bytes = header_bytes
        self.max_frame_bytes = max_frame_bytes
        self.metrics = metrics or BusMetrics.default()
        self.totals = BusTotals()
        self._ctx = context or zmq.Context.instance()
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.setsockopt(zmq.RCVHWM, 10_000)
        self._pull.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        bind = addressing.bind_address(agent_index)
        try:
            self._pull.bind(bind)
        except zmq.ZMQError as exc:
            self._pull.close()
            raise RuntimeError(f"bus: cannot bind {bind}: {exc}") from None
        self._push: dict[int, zmq.Socket] = {}
        for peer in range(num_agents):
            if peer == agent_index:
                continue
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 1_000)
            sock.connect(addressing.peer_address(peer))
            self._push[peer] = sock
        self._poller = zmq.Poller()
        self._poller.register(self._pull, zmq.POLLIN)
        self._pending: dict[tuple[int, int], dict[int, Envelope]] = {}
        self._seq = 0
        self._floor_tick = -1  # messages for ticks below this are stale

    # -- sending -----------------------------------------------------------------------------------
    def send(
        self, *, tick: int, round: int, channel: str, payload: Mapping[str, np.ndarray], peers: Iterable[int]
    ) -> None:
        """Send one message (B rows) to each of ``peers``.

        A peer whose send queue is full gets nothing (counted as ``send_queue_full``).
        """
        self._seq += 1
        env = Envelope(
            src=self.agent_index,
            dst=-1,
            channel=channel,
            tick=tick,
            round=round,
            seq=self._seq,
            sent_at=time.time(),
            payload=dict(payload),
        )
        frame = serialize(env)
        size = len(frame) + self.header_bytes
        for peer in peers:
            sock = self._push.get(peer)
            if sock is None:
                continue
            try:
                sock.send(frame, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._drop("send_queue_full")
                continue
            label = str(peer)
            self.totals.messages_sent += 1
            self.totals.bytes_sent += size
            self.metrics.messages_sent.labels(channel, label).inc()
            self.metrics.bytes_sent.labels(channel, label).inc(size)

    # -- receiving ---------------------------------------------------------------------------------
    def collect(self, *, tick: int, round: int, expected: Iterable[int], timeout_s: float) -> dict[int, Envelope]:
        """Wait for the messages of ``(tick, round)`` from every ``expected`` peer.

        Returns what arrived when all expected peers were heard or ``timeout_s`` passed (each missing peer
        counted as ``round_timeout``). Messages for older ticks are dropped as ``stale``.
        """
        want = {p for p in expected if p != self.agent_index}
        self._floor_tick = max(self._floor_tick, tick)
        self._discard_below(tick)
        key = (tick, round)
        deadline = time.monotonic() + timeout_s
        while True:
            got = self._pending.get(key, {})
            if want.issubset(got):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for _ in want.difference(got):
                    self._drop("round_timeout")
                break
            if self._poller.poll(remaining * 1000):
                self._drain()
        return self._pending.pop(key, {})

    def _drain(self) -> None:
        while True:
            try:
                frame = self._pull.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._accept(frame)

    def _accept(self, frame: bytes) -> None:
        try:
            env = parse(frame, num_agents=self.num_agents, max_bytes=self.max_frame_bytes)
        except MalformedFrame as exc:
            self._drop(exc.cause)
            log.debug("dropped frame: %s", exc)
            return
        if env.src == self.agent_index:
            self._drop("bad_field")
            return
        if env.tick < self._floor_tick:
            self._drop("stale")
            return
        key = (env.tick, env.round)
        if key not in self._pending and len(self._pending) >= MAX_PENDING_SLOTS:
            oldest = min(self._pending)
            self._drop("overflow", len(self._pending.pop(oldest)))
        slot = self._pending.setdefault(key, {})
        if env.src in slot:
            self._drop("duplicate")
            return
        slot[env.src] = env
        size = len(frame) + self.header_bytes
        label = str(env.src)
        self.totals.messages_received += 1
        self.totals.bytes_received += size
        self.totals.received_from[env.src] += 1
        self.metrics.messages_received.labels(env.channel, label).inc()
        self.metrics.bytes_received.labels(env.channel, label).inc(size)
        latency = max(0.0, time.time() - env.sent_at)
        self.totals.latencies.append(latency)
        self.metrics.latency.observe(latency)

    def _discard_below(self, tick: int) -> None:
        for key in [k for k in self._pending if k[0] < tick]:
            self._drop("stale", len(self._pending.pop(key)))

    def _drop(self, cause: str, count: int = 1) -> None:
        if count:
            self.totals.dropped[cause] += count
            self.metrics.dropped.labels(cause).inc(count)

    def close(self) -> None:
        """Close all sockets (pending messages are discarded)."""
        for sock in self._push.values():
            sock.close(0)
        self._pull.close(0)

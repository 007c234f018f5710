"""The agent-side bus: send one round's message to peers over emulated links, read the round's inbox.

Frames move over a transport (:mod:`comm_bus.transport`): ZeroMQ between agent processes (brokerless: every
agent binds one PULL socket and connects one PUSH socket per peer), or in-memory queues when every agent runs in
one process (the in-process exchange, :mod:`comm_bus.exchange`); everything else is the same code.
One envelope carries the B rows of all env copies for one (tick, round); every row is its own message on
its own link (each env copy is its own world). The sender decides each row's fate with the link model
(:mod:`comm_bus.link_emulation`) and ships it with the frame; the receiver holds frames in its mailbox
(:mod:`comm_bus.mailbox`) until their rows are visible on the bus clock (:mod:`comm_bus.clock`).

Under the sim clock the transport is lossless and :meth:`Bus.collect` waits (up to ``round_timeout``) for
every live peer's frame of the round, so visibility depends only on the config and seed. Under the wall
clock it waits until every peer's rows are visible or the per-round deadline passes. Receiving happens
inline in the caller (no thread). Malformed frames are dropped and counted, never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from comm_bus.addressing import PeerAddressing
from comm_bus.clock import SimClock, WallClock
from comm_bus.envelope import Envelope, MalformedFrame, parse, serialize, visibility_suffix
from comm_bus.faults import LinkFaults
from comm_bus.link_emulation import CAUSES, DELIVERED, NOT_SENT, Fates, LinkEmulator
from comm_bus.mailbox import Delivery, HeldFrame, Mailbox
from comm_bus.metrics import BusMetrics, BusTotals
from comm_bus.quantize import QuantizationError, dequantize, quantize, row_bytes
from comm_bus.trace import TraceWriter
from comm_bus.transport import Transport, ZmqTransport
from marlmesh import plugins
from marlmesh.config.bus import BusConfig, LinkConfig

log = logging.getLogger(__name__)
STOP_POLL_S = 0.1
"""Longest wait of :meth:`Bus.collect` between checks of its ``stop`` event."""


class Bus:
    """One agent's endpoint on the bus.

    Args:
        agent_index: This agent's index.
        num_agents: N (senders outside ``[0, N)`` are rejected).
        addressing: Where peers live (for the default ZeroMQ transport).
        config: The ``bus`` config section (clock, links, quantization, lifespan, trace).
        seed: Run seed (link randomness).
        rounds: Communication rounds per env step (sets the sim round interval when not configured).
        max_frame_bytes: Larger frames are dropped unread (cause ``oversize``).
        trace_path: Where this agent's fate records go (None = no trace).
        faults: Scheduled partitions and degradations of this agent's outgoing links.
        metrics: Prometheus instruments (default: the process-wide ones).
        context: ZeroMQ context (default: the process-wide instance).
        transport: How frames move (default: :class:`~comm_bus.transport.ZmqTransport` over ``addressing``;
            the in-process exchange passes a :class:`~comm_bus.transport.LocalTransport`).

    Raises:
        RuntimeError: If the bus address cannot be bound.
        plugins.PluginError: If the link model is unknown.
    """

    def __init__(
        self,
        agent_index: int,
        num_agents: int,
        addressing: PeerAddressing | None = None,
        *,
        config: BusConfig | None = None,
        seed: int = 0,
        rounds: int = 1,
        max_frame_bytes: int = 16 * 1024 * 1024,
        trace_path: Path | None = None,
        faults: LinkFaults | None = None,
        metrics: BusMetrics | None = None,
        context: zmq.Context | None = None,
        transport: Transport | None = None,
    ) -> None:
        if not 0 <= agent_index < num_agents:
            raise ValueError(f"agent index {agent_index} not in [0, {num_agents})")
        self.config = config or BusConfig()
        cfg = self.config
        self.agent_index = agent_index
        self.num_agents = num_agents
        self.addressing = addressing
        self.header_bytes = cfg.header_bytes
        self.max_frame_bytes = max_frame_bytes
        self.metrics = metrics or BusMetrics.default()
        self.totals = BusTotals()
        if cfg.clock == "sim":
            interval = cfg.round_interval_ms / 1000.0 if cfg.round_interval_ms else cfg.dt_ms / 1000.0 / max(1, rounds)
            self.clock: SimClock | WallClock = SimClock(cfg.dt_ms / 1000.0, interval)
        else:
            self.clock = WallClock()
        self.link_model = plugins.load("links", cfg.links.resolved_model())(cfg.links)
        self.faults = faults or LinkFaults([])
        self._env_steps = 0  # tick * B of the message being sent: when scheduled faults hold
        self.emulator = (
            None
            if self.link_model.ideal and not self.faults
            else LinkEmulator(
                agent_index,
                self._link_params,
                seed,
                shared_medium=cfg.links.shared_medium,
                cut=self._link_cut if self.faults else None,
            )
        )
        self.mailbox = Mailbox(cfg.lifespan_ms / 1000.0)
        self.trace = (
            TraceWriter(trace_path, cfg.trace.max_records_per_agent)
            if trace_path is not None and cfg.trace.enabled
            else None
        )
        if transport is None:
            if addressing is None:
                raise ValueError("Bus needs peer addressing for its ZeroMQ transport (or a transport)")
            transport = ZmqTransport(agent_index, num_agents, addressing, cfg, max_frame_bytes, context)
        self.transport: Transport = transport
        self._auth_counts = transport.auth_counts
        self._seq = 0
        # (src, channel) -> latest (tick, round) frame received: frames of a sender arrive in order.
        self._heard: dict[tuple[int, str], tuple[int, int]] = {}
        self._row_bytes: dict[tuple[int, str], int] = {}
        self._mailbox_seen: dict[str, int] = {}
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _link_params(self, dst: int, now: float) -> LinkConfig:
        link = self.link_model.params_for(self.agent_index, dst, now)
        return self.faults.degrade(link, self.agent_index, dst, self._env_steps) if self.faults else link

    def _link_cut(self, dst: int, now: float) -> bool:
        return self.faults.partitioned(self.agent_index, dst, self._env_steps)

    # -- sending -----------------------------------------------------------------------------------
    def send(
        self,
        *,
        tick: int,
        round: int,
        channel: str,
        payload: Mapping[str, np.ndarray],
        peers: Iterable[int],
        positions: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> Fates:
        """Send one round's message (B rows) to each of ``peers`` over their links.

        Args:
            tick: Batched env step.
            round: Round inside the step.
            channel: Channel name.
            payload: Tensors with B rows each (float tensors are quantized per ``bus.quantization``).
            peers: Receivers (self and unknown indices are skipped).
            positions: ``[N, B, D]`` agent positions for the range check (None = no range check).
            rows: ``[B]`` bool, the env copies that send this round (None = all).

        Returns:
            The fate of every row on every link.
        """
        dsts = tuple(p for p in peers if self.transport.reaches(p))
        wire = quantize(payload, self.config.quantization)
        batch = next(iter(wire.values())).shape[0]
        payload_row = row_bytes(wire, batch)
        now = self.clock.send_time(tick, round)
        self._env_steps = tick * batch
        # rows the receiver would first read older than its lifespan are dropped by the link (expired)
        deadline = None if self.emulator is None else self.clock.usable_until(tick, round, now, self.mailbox.lifespan)
        fates = self._fates(now, dsts, payload_row, batch, positions, rows, deadline)
        self._seq += 1
        common = serialize(
            Envelope(
                src=self.agent_index,
                dst=-1,
                channel=channel,
                tick=tick,
                round=round,
                seq=self._seq,
                sent_at=time.time(),
                payload=wire,
                bus_time=now,
            )
        )
        shared = self.config.links.shared_medium
        exact = self.emulator is None and rows is None  # every row visible at `now`: no per-row fates on the wire
        for i, dst in enumerate(dsts):
            frame = common if exact else common + visibility_suffix(fates.visible_at[i])
            offered = batch if rows is None else int(rows.sum())
            if not self.transport.send(dst, frame):
                self._drop("transport_full", offered)
                continue
            self.totals.frames_sent += 1
            self.totals.messages_sent += offered
            sent_msgs, sent_bytes = self._instruments("sent", channel, dst)
            sent_msgs.inc(offered)
            if not shared:
                self.totals.bytes_sent += offered * fates.row_bytes
                sent_bytes.inc(offered * fates.row_bytes)
        if shared and dsts:  # one radio transmission reaches every receiver: its bytes count once
            offered = batch if rows is None else int(rows.sum())
            self.totals.bytes_sent += offered * fates.row_bytes
            self._instruments("sent", channel, -1)[1].inc(offered * fates.row_bytes)
        if self.emulator is not None:
            counts = np.bincount(fates.cause.reshape(-1), minlength=len(CAUSES))
            for code, cause in CAUSES.items():
                if code not in (DELIVERED, NOT_SENT):
                    self._drop(cause, int(counts[code]))
        if self.trace is not None:
            self.trace.record(tick, round, self.agent_index, now, fates)
        return fates

    def _fates(
        self,
        now: float,
        dsts: tuple[int, ...],
        payload_row: int,
        batch: int,
        positions: np.ndarray | None,
        rows: np.ndarray | None,
        deadline: float | None,
    ) -> Fates:
        if self.emulator is None:
            cause = np.zeros((len(dsts), batch), np.uint8)
            visible = np.full((len(dsts), batch), now)
            if rows is not None:
                cause[:, ~rows] = NOT_SENT
                visible[:, ~rows] = np.nan
            return Fates(dsts, visible, cause, payload_row + self.header_bytes)
        distances = None
        if positions is not None and dsts:
            pos = np.asarray(positions, np.float64)
            distances = np.linalg.norm(pos[list(dsts)] - pos[self.agent_index][None], axis=-1)
        return self.emulator.transmit(now, dsts, payload_row, self.header_bytes, batch, distances, rows, deadline)

    # -- receiving ---------------------------------------------------------------------------------
    def collect(
        self,
        *,
        tick: int,
        round: int,
        channel: str,
        expected: Iterable[int],
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> dict[int, Delivery]:
        """Read round ``round`` of tick ``tick``: the latest visible, fresh value of every expected peer.

        Sim clock: first waits until every expected peer's frame of this round has arrived (at most
        ``timeout_s``, default ``bus.round_timeout_ms``; each missing peer counted as ``round_timeout``).
        Wall clock: waits until those frames arrived and their rows are visible, or the deadline passes.
        Either wait ends within :data:`STOP_POLL_S` once ``stop`` is set (the process is shutting down; the
        missing peers are not counted).

        Returns:
            Sender -> :class:`Delivery` for every expected peer with at least one fresh row.
        """
        want = sorted({p for p in expected if p != self.agent_index and 0 <= p < self.num_agents})
        timeout = self.config.round_timeout_ms / 1000.0 if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        key = (tick, round)
        while True:
            self._drain()
            missing = [p for p in want if self._heard.get((p, channel), (-1, -1)) < key]
            waiting = missing or (self.clock.name == "wall" and self._invisible(want, channel, round, key))
            if not waiting or (stop is not None and stop.is_set()):
                break
            remaining = deadline - time.monotonic() if self.transport.can_wait else 0.0
            if remaining <= 0:
                self._drop("round_timeout", len(missing))
                if missing and self.clock.name == "sim":
                    log.warning(
                        "sim round (tick %d, round %d) went on without peers %s after %.1fs of wall time: "
                        "this run now depends on timing (counted as round_timeout)",
                        tick,
                        round,
                        missing,
                        timeout if self.transport.can_wait else 0.0,
                    )
                break
            poll_ms = remaining * 1000 if missing else min(remaining * 1000, 1.0)
            if stop is not None:
                poll_ms = min(poll_ms, STOP_POLL_S * 1000)
            self.transport.wait(poll_ms)
        now = self.clock.read_time(tick, round)
        out: dict[int, Delivery] = {}
        for src in want:
            got = self.mailbox.read(src, channel, round, now, strict=self.clock.strict)
            if got is None:
                continue
            self._count_delivered(src, channel, got)
            if got.rows is None or got.rows.any():
                out[src] = got
        self._sync_receiver_drops()
        return out

    def _invisible(self, want: list[int], channel: str, round: int, key: tuple[int, int]) -> bool:
        """Wall clock: whether a frame of this round from ``want`` still has rows that are not yet visible."""
        now = time.time()
        for src in want:
            slot = self.mailbox.slots.get((src, channel, round))
            if slot is None:
                continue
            for frame in slot.held:
                if frame.tick == key[0] and bool((frame.visible_at[frame.pending] > now).any()):
                    return True
        return False

    def _count_delivered(self, src: int, channel: str, got: Delivery) -> None:
        n = int(got.latencies.size)
        if n:
            size = n * self._row_bytes.get((src, channel), 0)
            self.totals.messages_received += n
            self.totals.bytes_received += size
            self.totals.received_from[src] += n
            recv_msgs, recv_bytes = self._instruments("received", channel, src)
            recv_msgs.inc(n)
            recv_bytes.inc(size)
            # one sample per read (the rows of one read share a link model; keeps the cost per frame flat)
            sample = float(got.latencies[n // 2])
            self.totals.latencies.append(sample)
            self.metrics.latency.observe(sample)
        fresh = got.age if got.rows is None else got.age[got.rows]
        if fresh.size:
            age = float(fresh[fresh.size // 2])
            self.totals.ages.append(age)
            self.metrics.age.observe(age)

    def _instruments(self, direction: str, channel: str, peer: int) -> tuple[Any, Any]:
        """The (messages, bytes) Prometheus children of one direction, channel and peer (cached)."""
        key = (direction, channel, peer)
        found = self._children.get(key)
        if found is None:
            m = self.metrics
            sent = direction == "sent"
            msgs, size = (m.messages_sent, m.bytes_sent) if sent else (m.messages_received, m.bytes_received)
            label = "all" if peer < 0 else str(peer)  # "all": a shared-medium broadcast
            found = self._children[key] = (msgs.labels(channel, label), size.labels(channel, label))
        return found

    def _drain(self) -> None:
        for frame, user_id in self.transport.receive():
            self._accept(frame, user_id)

    def _accept(self, frame: bytes, user_id: str | None = None) -> None:
        try:
            env = parse(frame, num_agents=self.num_agents, max_bytes=self.max_frame_bytes)
            payload = dequantize(env.payload)
        except MalformedFrame as exc:
            self._drop(exc.cause)
            log.debug("dropped frame: %s", exc)
            return
        except QuantizationError as exc:
            self._drop("bad_tensor")
            log.debug("dropped frame: %s", exc)
            return
        if env.src == self.agent_index:
            self._drop("bad_field")
            return
        if self.transport.authenticated and user_id != str(env.src):
            self._drop("impersonation")
            log.warning("dropped a frame claiming src %d over the connection of agent %s", env.src, user_id)
            return
        batch = next(iter(payload.values())).shape[0]
        uniform = env.visible_at is None  # every row visible at the send time
        visible = np.full(batch, env.bus_time) if uniform else env.visible_at
        self._row_bytes[(env.src, env.channel)] = row_bytes(env.payload, batch) + self.header_bytes
        frame = HeldFrame(env.bus_time, visible, payload, env.tick, uniform=uniform)
        self.mailbox.hold(env.src, env.channel, env.round, frame)
        key = (env.src, env.channel)
        self._heard[key] = max(self._heard.get(key, (-1, -1)), (env.tick, env.round))
        self.totals.frames_received += 1
        transport = max(0.0, time.time() - env.sent_at)
        self.totals.transport_latencies.append(transport)
        self.metrics.transport_latency.observe(transport)

    def _sync_receiver_drops(self) -> None:
        for cause, count in (*self.mailbox.counts.items(), *self._auth_counts.items()):
            new = count - self._mailbox_seen.get(cause, 0)
            if new:
                self._drop(cause, new)
                self._mailbox_seen[cause] = count

    def _drop(self, cause: str, count: int = 1) -> None:
        if count:
            self.totals.dropped[cause] += count
            self.metrics.dropped.labels(cause).inc(count)

    @property
    def bound_port(self) -> int | None:
        """TCP port of this endpoint's socket (None: not a ZeroMQ TCP transport)."""
        return self.transport.bound_port if isinstance(self.transport, ZmqTransport) else None

    def dial_peers(self, ports: Sequence[int]) -> None:
        """Dial every peer at its port from the peer table (when :attr:`addressing` waited for one).

        Args:
            ports: Every agent's bound port, index ``i`` at position ``i``.

        Raises:
            RuntimeError: If the transport is not ZeroMQ or the peers were dialled already.
        """
        if not isinstance(self.transport, ZmqTransport) or self.addressing is None:
            raise RuntimeError("only a ZeroMQ bus endpoint dials peers")
        if len(ports) != self.num_agents:
            raise ValueError(f"peer table lists {len(ports)} ports for {self.num_agents} agents")
        self.addressing = self.addressing.with_peer_ports(ports)
        self.transport.dial(self.addressing)

    def latest_heard(self, src: int, channel: str) -> tuple[int, int] | None:
        """The newest ``(tick, round)`` whose frame arrived from ``src`` on ``channel`` (None: nothing yet)."""
        return self._heard.get((src, channel))

    def forget(self, peer: int) -> None:
        """Drop everything held from ``peer`` (it left the mesh)."""
        self.mailbox.forget(peer)
        for key in [k for k in self._heard if k[0] == peer]:
            del self._heard[key]

    def trace_status(self) -> dict[str, object] | None:
        """Records written and whether the trace was cut at its cap (None without a trace)."""
        if self.trace is None:
            return None
        return {"path": str(self.trace.path), "records": self.trace.written, "truncated": self.trace.truncated}

    def close(self) -> None:
        """Close the transport (held messages are discarded) and the trace file."""
        self.transport.close()
        if self.trace is not None:
            self.trace.close()


def dial_each_other(buses: Sequence[Bus]) -> None:
    """Dial every endpoint of ``buses`` (endpoint ``i`` is agent ``i``, all in this process) to the others' ports."""
    ports = [int(b.bound_port or 0) for b in buses]
    for b in buses:
        b.dial_peers(ports)


def local_buses(num_agents: int, make: Callable[[int, PeerAddressing], Bus]) -> list[Bus]:
    """N bus endpoints in this process on ports the OS assigns on 127.0.0.1, dialled to each other.

    Every endpoint binds first; once all have bound, each dials the others (the in-process form of the
    launcher's peer table).

    Args:
        num_agents: N.
        make: Builds endpoint ``i`` on the addressing it is given (``(i, addressing) -> Bus``).
    """
    buses = [make(i, PeerAddressing.os_assigned()) for i in range(num_agents)]
    dial_each_other(buses)
    return buses

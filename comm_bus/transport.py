"""How a bus endpoint moves frames: ZeroMQ sockets between processes, or an in-memory hub inside one process.

:class:`~comm_bus.bus.Bus` decides every row's fate with the link model, serializes one frame per receiver and
hands it to its transport; the receiving endpoint parses what its transport hands back. Both transports carry
the same bytes, so link emulation, quantization, mailboxes, counters and traces are the same code whichever
moves the frames:

- :class:`ZmqTransport`: brokerless ZeroMQ. One PULL socket bound per agent, one PUSH socket per peer, optional
  CURVE (``bus.security.curve``: every frame's sender authenticated). Used by agent processes (the mesh).
- :class:`LocalHub`: one in-memory queue per agent. A frame sent is at once in the receiver's queue; nothing
  arrives while a receiver waits (everything runs in one thread), so :attr:`Transport.can_wait` is False. Used
  by the in-process exchange (:mod:`comm_bus.exchange`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from typing import Protocol

import zmq

from comm_bus import security
from comm_bus.addressing import PeerAddressing
from marlmesh import exposure
from marlmesh.config.bus import BusConfig

_POLLIN = int(zmq.POLLIN)
"""``zmq.POLLIN`` as a plain int: masking with the enum flag goes through the ``enum`` module's Python code."""
ZERO_COPY_MIN_BYTES = 64 * 1024
"""Frames at least this large are sent without copying (smaller ones are copied: see :meth:`ZmqTransport.send`)."""


class Transport(Protocol):
    """What a bus endpoint needs to move frames."""

    can_wait: bool
    """Whether waiting can make new frames arrive (False: every frame of a round is there before it is read)."""
    authenticated: bool
    """Whether :meth:`receive` yields the authenticated sender of every frame (CURVE)."""
    auth_counts: Counter[str]
    """Frames refused before they reached the endpoint, by cause (e.g. ``unauthenticated``)."""

    def reaches(self, peer: int) -> bool:
        """Whether frames can be sent to ``peer``."""
        ...

    def send(self, peer: int, frame: bytes) -> bool:
        """Queue ``frame`` for ``peer``; False when the transport is full (the frame is not sent)."""
        ...

    def receive(self) -> Iterator[tuple[bytes, str | None]]:
        """Every frame that has arrived, with its authenticated sender (None when not authenticated)."""
        ...

    def wait(self, timeout_ms: float) -> None:
        """Block up to ``timeout_ms`` for a frame to arrive."""
        ...

    def close(self) -> None:
        """Release the transport's resources (frames still queued are discarded)."""
        ...


class ZmqTransport:
    """One agent's ZeroMQ sockets: a PULL socket it binds and a PUSH socket per peer.

    The PULL socket is bound at once (port 0 in the bind address: a port the OS assigns, see :attr:`bound_port`).
    The PUSH sockets dial the peers at once when their addresses are known, else on :meth:`dial` (the peer
    table is read after every endpoint has bound, see :class:`~comm_bus.addressing.PeerAddressing`).

    Args:
        agent_index: This agent.
        num_agents: N (one PUSH socket per other agent).
        addressing: Where peers live.
        config: The ``bus`` section (round timeout as the send timeout, CURVE settings).
        max_frame_bytes: Larger frames are refused by the socket.
        context: ZeroMQ context (default: the process-wide instance).

    Raises:
        RuntimeError: If the bus address cannot be bound.
        ValueError: If CURVE keys are missing or invalid.
        ExposureError: If a bind or peer address is not loopback while CURVE and ``runtime.insecure`` are off
            (:mod:`marlmesh.exposure`).
    """

    can_wait = True

    def __init__(
        self,
        agent_index: int,
        num_agents: int,
        addressing: PeerAddressing,
        config: BusConfig,
        max_frame_bytes: int,
        context: zmq.Context | None = None,
    ) -> None:
        bind = addressing.bind_address(agent_index)
        self._curve = config.security.curve
        exposure.require(exposure.Surface.BUS, bind, secured=self._curve, verb="bind")
        self._ctx = context or zmq.Context.instance()
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.setsockopt(zmq.RCVHWM, 100_000)
        self._pull.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self.auth_counts: Counter[str] = Counter()
        self._keys = None
        if config.security.curve:
            assert config.security.keys_dir is not None
            try:
                self._keys = security.CurveKeys.load(config.security.keys_dir, agent_index, num_agents)
            except ValueError:
                self._pull.close()
                raise
            security.secure_sockets(self._ctx, self._keys, self._pull, self.auth_counts)
        self.authenticated = self._keys is not None
        try:
            self._pull.bind(bind)
        except zmq.ZMQError as exc:
            self._pull.close()
            raise RuntimeError(f"bus: cannot bind {bind}: {exc}") from None
        endpoint = self._pull.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.bound_port: int | None = int(endpoint.rsplit(":", 1)[1]) if endpoint.startswith("tcp://") else None
        """The TCP port the PULL socket bound (None for ipc:// and inproc:// addresses)."""
        self._index = agent_index
        self._num_agents = num_agents
        self._send_timeout_ms = int(config.round_timeout_ms)
        self._push: dict[int, zmq.Socket] = {}
        self._poller = zmq.Poller()
        self._poller.register(self._pull, zmq.POLLIN)
        if addressing.dialable:
            self.dial(addressing)

    def dial(self, addressing: PeerAddressing) -> None:
        """Connect one PUSH socket to every peer at the addresses ``addressing`` gives.

        Raises:
            RuntimeError: If the peers were dialled already or ``addressing`` lacks their ports.
            ExposureError: If a peer address is not loopback while CURVE and ``runtime.insecure`` are off.
        """
        if self._push:
            raise RuntimeError("bus: the peers were dialled already")
        for peer in range(self._num_agents):
            if peer == self._index:
                continue
            address = addressing.peer_address(peer)
            exposure.require(exposure.Surface.BUS, address, secured=self._curve, verb="dial")
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.setsockopt(zmq.SNDTIMEO, self._send_timeout_ms)
            if self._keys is not None:
                security.secure_client(self._keys, sock, peer)
            sock.connect(address)
            self._push[peer] = sock

    def reaches(self, peer: int) -> bool:
        """Whether a PUSH socket to ``peer`` exists."""
        return peer in self._push

    def send(self, peer: int, frame: bytes) -> bool:
        """Send ``frame``; False when the socket stayed full for ``bus.round_timeout_ms``.

        Frames under :data:`ZERO_COPY_MIN_BYTES` are copied into the ZeroMQ message: a zero-copy send hands
        the buffer's release to pyzmq's garbage-collector thread, one more thread wake-up (and interpreter lock
        hand-over) per frame, which costs far more than copying a small frame.
        """
        try:
            self._push[peer].send(frame, copy=len(frame) < ZERO_COPY_MIN_BYTES)
        except zmq.Again:
            return False
        return True

    def receive(self) -> Iterator[tuple[bytes, str | None]]:
        """Drain the PULL socket without blocking."""
        pull = self._pull
        while pull.getsockopt(zmq.EVENTS) & _POLLIN:  # no exception per empty read
            try:
                frame = pull.recv(zmq.NOBLOCK, copy=self._keys is None)
            except zmq.Again:
                return
            if self._keys is None:
                yield frame, None
            else:  # the authenticated agent index of the connection the frame came over
                yield frame.bytes, frame.get("User-Id")

    def wait(self, timeout_ms: float) -> None:
        """Poll the PULL socket."""
        self._poller.poll(max(0.0, timeout_ms))

    def close(self) -> None:
        """Close every socket (and the CURVE authenticator)."""
        for sock in self._push.values():
            sock.close(0)
        self._pull.close(0)
        if self._keys is not None:
            security.release(self._ctx)


class LocalHub:
    """In-memory frame queues of N agents in one process.

    Args:
        num_agents: N.
    """

    def __init__(self, num_agents: int) -> None:
        self.num_agents = num_agents
        self.queues: list[deque[bytes]] = [deque() for _ in range(num_agents)]

    def transport(self, agent_index: int) -> LocalTransport:
        """Agent ``agent_index``'s end of the hub."""
        if not 0 <= agent_index < self.num_agents:
            raise ValueError(f"agent index {agent_index} not in [0, {self.num_agents})")
        return LocalTransport(self, agent_index)


class LocalTransport:
    """One agent's end of a :class:`LocalHub` (see the module docstring)."""

    can_wait = False
    authenticated = False

    def __init__(self, hub: LocalHub, agent_index: int) -> None:
        self._hub = hub
        self._index = agent_index
        self.auth_counts: Counter[str] = Counter()

    def reaches(self, peer: int) -> bool:
        """Every other agent of the hub."""
        return peer != self._index and 0 <= peer < self._hub.num_agents

    def send(self, peer: int, frame: bytes) -> bool:
        """Append ``frame`` to the peer's queue (never full)."""
        self._hub.queues[peer].append(bytes(frame))
        return True

    def receive(self) -> Iterator[tuple[bytes, str | None]]:
        """Pop every queued frame."""
        queue = self._hub.queues[self._index]
        while queue:
            yield queue.popleft(), None

    def wait(self, timeout_ms: float) -> None:
        """Nothing can arrive while this thread waits: return at once."""

    def close(self) -> None:
        """Discard frames still queued for this agent."""
        self._hub.queues[self._index].clear()

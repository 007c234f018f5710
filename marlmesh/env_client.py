"""Client of the env service's gRPC contract (``marlmesh.v1.EnvService``), used by agent processes and tests."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from marlmesh import contract, tensors
from marlmesh.observation import AgentObservation, observation_from_proto
from marlmesh.serving import grpc_options
from marlmesh.tls import TlsIdentity, open_channel
from marlmesh.v1 import env_pb2, env_pb2_grpc

__all__ = ["AgentObservation", "EnvClient", "StepInterrupted"]


class StepInterrupted(Exception):
    """:meth:`EnvClient.step` gave up waiting at the barrier because :meth:`EnvClient.interrupt` was called."""


class EnvClient:
    """Blocking calls to one env service, each with a deadline.

    Args:
        address: ``host:port`` of the env service.
        timeout_s: Deadline of Join, Leave, GetStats and GetSpec.
        max_message_bytes: gRPC message size bound.
        step_timeout_s: Deadline of Step (must exceed the barrier deadline).
        tls_identity: Dial with mutual TLS as this identity (None: plaintext).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        max_message_bytes: int = 64 << 20,
        step_timeout_s: float = 60.0,
        tls_identity: TlsIdentity | None = None,
    ) -> None:
        self.address = address
        self._timeout = timeout_s
        self._step_timeout = step_timeout_s
        self.tls_identity = tls_identity
        self._max_message_bytes = max_message_bytes
        self._interrupted = threading.Event()
        # Two channels: Step (which blocks at the barrier) on its own, so that :meth:`interrupt` can cancel it by
        # closing its channel without cutting a Join, Leave or GetStats in flight on another thread.
        self._channel = self._open()
        self._stub = env_pb2_grpc.EnvServiceStub(self._channel)
        self._step_channel = self._open()
        self._step_stub = env_pb2_grpc.EnvServiceStub(self._step_channel)

    def _open(self) -> grpc.Channel:
        return open_channel(self.address, grpc_options(self._max_message_bytes), self.tls_identity)

    def wait_ready(self, timeout_s: float) -> env_pb2.EnvSpec:
        """Wait until the service answers GetSpec.

        Raises:
            ConnectionError: If it does not within ``timeout_s`` (the message says what to check).
        """
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return self._stub.GetSpec(env_pb2.GetSpecRequest(), timeout=min(2.0, remaining), wait_for_ready=True)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise ConnectionError(
            f"cannot reach env_service at {self.address} within {timeout_s:.0f}s ({last}); "
            f"is it running and is --env-addr / {contract.ENV_ADDR.name} right? {self._tls_hint()}"
        )

    def _tls_hint(self) -> str:
        """What this client's transport needs from the server (half of the failed handshakes are TLS)."""
        if self.tls_identity is None:
            return (
                "This client dialled in plaintext: a service with runtime.tls enabled only accepts clients "
                "with a certificate of its CA (give this client a TLS identity)."
            )
        return (
            f"This client dialled with mutual TLS as {self.tls_identity.name!r}: the service must run with "
            f"runtime.tls enabled, a certificate of the same CA and the name {self.tls_identity.server_name!r}."
        )

    def spec(self) -> env_pb2.EnvSpec:
        """The env spec."""
        return self._stub.GetSpec(env_pb2.GetSpecRequest(), timeout=self._timeout)

    def join(self, agent_index: int, process_id: str) -> tuple[env_pb2.EnvSpec, AgentObservation]:
        """Join as ``agent_index``; returns the spec and the current observation."""
        resp = self._stub.Join(
            env_pb2.JoinRequest(agent_index=agent_index, process_id=process_id), timeout=self._timeout
        )
        return resp.spec, observation_from_proto(resp.observation)

    def step(self, agent_index: int, tick: int, action: np.ndarray) -> tuple[AgentObservation, bool]:
        """Submit the action answering ``tick``; returns the next observation and whether it was applied.

        A blocking call (the cheapest way to wait at the env's barrier); :meth:`interrupt` ends it early.

        Raises:
            StepInterrupted: If :meth:`interrupt` was called while the call waited.
            grpc.RpcError: If the call failed.
        """
        request = env_pb2.StepRequest(agent_index=agent_index, tick=tick, action=tensors.encode(action))
        try:
            resp = self._step_stub.Step(request, timeout=self._step_timeout)
        except (grpc.RpcError, ValueError) as exc:  # ValueError: the channel was closed just before the call
            cancelled = not isinstance(exc, grpc.RpcError) or exc.code() == grpc.StatusCode.CANCELLED
            if self._interrupted.is_set() and cancelled:
                raise StepInterrupted(
                    f"agent {agent_index} stopped while waiting at the barrier of tick {tick}"
                ) from None
            raise
        return observation_from_proto(resp.observation), resp.action_applied

    def interrupt(self) -> None:
        """Cancel the Step calls in flight (a waiting :meth:`step` raises :class:`StepInterrupted`).

        For shutdown: peers that already left would hold the barrier until its deadline. Only the Step channel
        is replaced: a :meth:`leave` racing this call (the agent stopping) still reaches the env, and the
        client stays usable.
        """
        self._interrupted.set()
        old = self._step_channel
        self._step_channel = self._open()
        self._step_stub = env_pb2_grpc.EnvServiceStub(self._step_channel)
        old.close()

    def step_future(self, agent_index: int, tick: int, action: np.ndarray) -> grpc.Future:
        """Like :meth:`step` but non-blocking (several agents can wait at the barrier from one thread)."""
        return self._step_stub.Step.future(
            env_pb2.StepRequest(agent_index=agent_index, tick=tick, action=tensors.encode(action)),
            timeout=self._step_timeout,
        )

    @staticmethod
    def step_result(future: grpc.Future) -> tuple[AgentObservation, bool]:
        """The result of :meth:`step_future` (blocks; raises ``grpc.RpcError`` like :meth:`step`)."""
        resp = future.result()
        return observation_from_proto(resp.observation), resp.action_applied

    def leave(self, agent_index: int) -> None:
        """Tell the env to stop waiting for this agent."""
        self._stub.Leave(env_pb2.LeaveRequest(agent_index=agent_index), timeout=self._timeout)

    def stats(self, episodes_from: int = 0, max_episodes: int = 0) -> env_pb2.EnvStats:
        """Counters and finished episodes."""
        return self._stub.GetStats(
            env_pb2.StatsRequest(episodes_from=episodes_from, max_episodes=max_episodes), timeout=self._timeout
        )

    def close(self) -> None:
        """Close the channels."""
        self._channel.close()
        self._step_channel.close()

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

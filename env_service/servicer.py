"""Thin gRPC adapter over :class:`env_service.node.EnvNode`: decode, call, encode, map errors to statuses."""

from __future__ import annotations

import collections

import grpc

from env_service.convert import spec_to_proto, stats_to_proto
from env_service.node import MAX_EPISODE_HISTORY, EnvError, EnvNode
from marlmesh import tensors
from marlmesh.observation import view_to_proto
from marlmesh.rpc_guard import guarded
from marlmesh.v1 import env_pb2, env_pb2_grpc

_STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}

DEFAULT_MAX_EPISODES = 1000
"""Episodes returned by GetStats when the request does not say."""
MAX_EPISODES_PER_CALL = MAX_EPISODE_HISTORY
"""Most episodes one GetStats returns (the env keeps no more records than this anyway)."""
MAX_PROCESS_ID_CHARS = 256
"""Longest ``JoinRequest.process_id`` accepted."""


class EnvServicer(env_pb2_grpc.EnvServiceServicer):
    """Join / Step / Leave / GetStats / GetSpec."""

    def __init__(self, node: EnvNode) -> None:
        self._node = node
        self._spec = spec_to_proto(node)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.internal_errors: collections.Counter[str] = collections.Counter()

    def _abort(self, context: grpc.ServicerContext, exc: EnvError) -> None:
        self.rejected[type(exc).__name__] += 1
        context.abort(_STATUS[exc.kind], str(exc))

    def _invalid(self, context: grpc.ServicerContext, message: str) -> None:
        self.rejected["InvalidRequest"] += 1
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    @guarded
    def Join(self, request, context):  # noqa: N802 (gRPC method name)
        """Register the agent and return the spec and its current observation."""
        if not 0 < len(request.process_id) <= MAX_PROCESS_ID_CHARS:
            self._invalid(
                context, f"process_id must have 1..{MAX_PROCESS_ID_CHARS} characters, got {len(request.process_id)}"
            )
        try:
            view = self._node.join(request.agent_index, request.process_id)
        except EnvError as exc:
            self._abort(context, exc)
        return env_pb2.JoinResponse(spec=self._spec, observation=view_to_proto(view))

    @guarded
    def Step(self, request, context):  # noqa: N802
        """Submit an action and wait for the barrier."""
        try:
            self._node.check_agent(request.agent_index)
        except EnvError as exc:
            self._abort(context, exc)
        if request.tick < 0:
            self._invalid(context, f"tick must be >= 0, got {request.tick}")
        if not request.HasField("action"):
            self._invalid(context, "StepRequest.action is missing")
        try:
            action = tensors.decode(request.action, what="StepRequest.action")
        except tensors.TensorError as exc:
            self.rejected["TensorError"] += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            view, applied = self._node.step(request.agent_index, request.tick, action)
        except EnvError as exc:
            self._abort(context, exc)
        return env_pb2.StepResponse(observation=view_to_proto(view), action_applied=applied)

    @guarded
    def Leave(self, request, context):  # noqa: N802
        """Stop waiting for the agent."""
        try:
            self._node.leave(request.agent_index)
        except EnvError as exc:
            self._abort(context, exc)
        return env_pb2.LeaveResponse()

    @guarded
    def GetStats(self, request, context):  # noqa: N802
        """Counters and finished episodes from ``episodes_from``."""
        if request.episodes_from < 0 or request.max_episodes < 0:
            self._invalid(context, "episodes_from and max_episodes must be >= 0 (max_episodes 0 = default)")
        limit = min(request.max_episodes or DEFAULT_MAX_EPISODES, MAX_EPISODES_PER_CALL)
        return stats_to_proto(self._node.stats(request.episodes_from, limit))

    @guarded
    def GetSpec(self, request, context):  # noqa: N802
        """The env spec."""
        return self._spec

"""Thin gRPC adapter over :class:`env_service.node.EnvNode`: decode, call, encode, map errors to statuses."""

from __future__ import annotations

import collections

import grpc

from env_service.convert import spec_to_proto, stats_to_proto, view_to_proto
from env_service.node import EnvError, EnvNode
from marlmesh import tensors
from marlmesh.v1 import env_pb2, env_pb2_grpc

_STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}

DEFAULT_MAX_EPISODES = 1000
"""Episodes returned by GetStats when the request does not say."""


class EnvServicer(env_pb2_grpc.EnvServiceServicer):
    """Join / Step / Leave / GetStats / GetSpec."""

    def __init__(self, node: EnvNode) -> None:
        self._node = node
        self._spec = spec_to_proto(node)
        self.rejected: collections.Counter[str] = collections.Counter()

    def _abort(self, context: grpc.ServicerContext, exc: EnvError) -> None:
        self.rejected[type(exc).__name__] += 1
        context.abort(_STATUS[exc.kind], str(exc))

    def Join(self, request, context):  # noqa: N802 (gRPC method name)
        """Register the agent and return the spec and its current observation."""
        try:
            view = self._node.join(request.agent_index, request.process_id)
        except EnvError as exc:
            self._abort(context, exc)
        return env_pb2.JoinResponse(spec=self._spec, observation=view_to_proto(view))

    def Step(self, request, context):  # noqa: N802
        """Submit an action and wait for the barrier."""
        try:
            self._node.check_agent(request.agent_index)
        except EnvError as exc:
            self._abort(context, exc)
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

    def Leave(self, request, context):  # noqa: N802
        """Stop waiting for the agent."""
        try:
            self._node.leave(request.agent_index)
        except EnvError as exc:
            self._abort(context, exc)
        return env_pb2.LeaveResponse()

    def GetStats(self, request, context):  # noqa: N802
        """Counters and finished episodes from ``episodes_from``."""
        if request.episodes_from < 0 or request.max_episodes < 0:
            self.rejected["InvalidRequest"] += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "episodes_from and max_episodes must be >= 0")
        limit = request.max_episodes or DEFAULT_MAX_EPISODES
        return stats_to_proto(self._node.stats(request.episodes_from, limit))

    def GetSpec(self, request, context):  # noqa: N802
        """The env spec."""
        return self._spec

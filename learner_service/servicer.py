"""Thin gRPC adapter over :class:`learner_service.node.LearnerNode`: decode, validate, call, map errors."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

import grpc

from learner_service.node import LearnerNode, WeightsVersion
from learner_service.policy_graphs import PolicyGraphsSource
from marlmesh import tensors
from marlmesh.rpc_guard import guarded
from marlmesh.v1 import learner_pb2, learner_pb2_grpc

log = logging.getLogger(__name__)


class LearnerServicer(learner_pb2_grpc.LearnerServiceServicer):
    """PushRollout / WatchWeights / GetStatus / GetPolicyGraphs.

    A rejected fragment is answered ``INVALID_ARGUMENT`` with the reason (and counted in the node's
    ``fragments_dropped``); other rejected requests are counted in :attr:`rejected` by method. ``on_fragment``
    is called after each fragment was accepted or refused, before the answer (the learner records its ledger).
    """

    def __init__(self, node: LearnerNode, stop: threading.Event, on_fragment: Callable[[], None] | None = None) -> None:
        self._node = node
        self._stop = stop
        self._on_fragment = on_fragment or (lambda: None)
        self._cache: tuple[int, learner_pb2.Weights] | None = None
        self._cache_lock = threading.Lock()
        self._graphs = PolicyGraphsSource(node.channel, node.spec)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.watch_streams = 0
        """WatchWeights calls accepted (their stream started)."""
        self.internal_errors: collections.Counter[str] = collections.Counter()

    @guarded
    def PushRollout(self, request, context):  # noqa: N802
        """Validate and queue a fragment."""
        try:
            columns = tensors.decode_named(request.columns, what="RolloutFragment.columns")
        except tensors.TensorError as exc:
            self._node.reject_undecodable(str(exc))
            self._on_fragment()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        accepted, reason = self._node.submit(
            request.agent_index,
            columns,
            num_steps=request.num_steps,
            version_range=(request.min_policy_version, request.max_policy_version),
        )
        self._on_fragment()  # before the answer: an acknowledged fragment is always in the ledger
        if not accepted:
            status = grpc.StatusCode.UNAVAILABLE if self._node.closed else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(status, reason)
        return learner_pb2.PushAck(accepted=True, version=self._node.version)

    def _encoded(self, w: WeightsVersion) -> learner_pb2.Weights:
        with self._cache_lock:
            if self._cache is None or self._cache[0] != w.version:
                msg = learner_pb2.Weights(
                    agent_index=self._node.spec.agent_index, version=w.version, params=tensors.encode_named(w.params)
                )
                self._cache = (w.version, msg)
            return self._cache[1]

    @guarded
    def WatchWeights(self, request, context):  # noqa: N802
        """Stream every new weights version until the client goes away or the server stops."""
        self._check_agent("WatchWeights", request.agent_index, context)
        if request.have_version < -1:
            self.rejected["WatchWeights"] += 1
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"have_version must be >= -1 (-1 = none yet), got {request.have_version}",
            )
        self.watch_streams += 1
        have = request.have_version
        while context.is_active() and not self._stop.is_set():
            w = self._node.wait_newer(have, timeout=0.5)
            if w is not None:
                yield self._encoded(w)
                have = w.version

    def _check_agent(self, method: str, agent_index: int, context: grpc.ServicerContext) -> None:
        """Abort with ``INVALID_ARGUMENT`` (counted) unless the request is for this learner's agent."""
        if agent_index != self._node.spec.agent_index:
            self.rejected[method] += 1
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"learner of agent {self._node.spec.agent_index} cannot serve agent {agent_index}",
            )

    def export_graphs(self) -> None:
        """Export the policy graphs now, so that ``GetPolicyGraphs`` answers at once.

        An agent acting with ``train.agent_runtime: onnx`` asks for them during its start; a failure here is
        logged and left for that request to report.
        """
        try:
            self._graphs.message()
        except ValueError as exc:
            log.warning("cannot export the policy graphs for the onnx runtime: %s", exc)

    @guarded
    def GetPolicyGraphs(self, request, context):  # noqa: N802
        """The agent's policy graphs with the parameters as inputs (exported on the first request)."""
        self._check_agent("GetPolicyGraphs", request.agent_index, context)
        try:
            return self._graphs.message()
        except ValueError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    @guarded
    def GetStatus(self, request, context):  # noqa: N802
        """Counters and the last losses."""
        s = self._node.status()
        return learner_pb2.LearnerStatus(
            agent_index=self._node.spec.agent_index,
            version=s["version"],
            updates=s["updates"],
            samples_trained=s["samples_trained"],
            fragments_received=s["fragments_received"],
            fragments_dropped=s["fragments_dropped"],
            last_losses=s["last_losses"],
            fragments_trained=s["fragments_trained"],
            resumed_from_version=s["resumed_from_version"],
            checkpoints_corrupt=s["checkpoints_corrupt"],
            updates_rejected=s["updates_rejected"],
        )

"""The agent's side of its learner: fragments go out and weights come in on background threads.

Neither direction ever blocks stepping: fragments wait in a small queue (oldest dropped and counted when the
learner falls behind), and new weights are picked up by version between steps. Only lockstep training
(:mod:`agent_service.weight_sync`) waits, for the version trained on the fragment it just pushed.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading

import grpc
import numpy as np

from marlmesh import tensors
from marlmesh.policy_runtime import PolicyGraphs
from marlmesh.serving import grpc_options
from marlmesh.tls import TlsIdentity, open_channel
from marlmesh.v1 import learner_pb2, learner_pb2_grpc

log = logging.getLogger(__name__)


class LearnerLink:
    """Pushes rollout fragments to the learner and watches its weights versions.

    Args:
        address: Learner gRPC address ``host:port``.
        agent_index: This agent.
        timeout_s: Deadline of each PushRollout.
        max_message_bytes: gRPC message size bound.
        queue_limit: Fragments waiting to be sent before the oldest is dropped.
        tls_identity: Dial with mutual TLS as this identity (None: plaintext).
    """

    def __init__(
        self,
        address: str,
        agent_index: int,
        *,
        timeout_s: float,
        max_message_bytes: int,
        queue_limit: int = 2,
        tls_identity: TlsIdentity | None = None,
    ) -> None:
        self.address = address
        self.agent_index = agent_index
        self._timeout = timeout_s
        self._channel = open_channel(address, grpc_options(max_message_bytes), tls_identity)
        self._stub = learner_pb2_grpc.LearnerServiceStub(self._channel)
        self._outbox: queue.Queue[tuple[int, dict[str, np.ndarray]] | None] = queue.Queue(maxsize=queue_limit)
        self._latest: tuple[int, dict[str, np.ndarray]] | None = None
        self._lock = threading.Lock()
        self._new_weights = threading.Condition(self._lock)
        self._have_first = threading.Event()
        self._stop = threading.Event()
        self.fragments_sent = 0
        """Fragments the learner accepted."""
        self.fragments_dropped: collections.Counter[str] = collections.Counter()
        """Fragments lost on this side, by reason: ``agent_queue_full`` (the learner fell behind),
        ``push_failed`` (learner unreachable), ``rejected`` (the learner refused it, INVALID_ARGUMENT),
        ``unsent_at_close`` (still queued or in flight when the agent stopped)."""
        self._closing = threading.Event()
        self.versions_received = 0
        self._fragment_id = 0
        self._threads = [
            threading.Thread(target=self._send_loop, name="push-rollouts", daemon=True),
            threading.Thread(target=self._watch_loop, name="watch-weights", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- fragments ---------------------------------------------------------------------------------
    @property
    def fragments_created(self) -> int:
        """Fragments handed to :meth:`push` (each ends up sent or in ``fragments_dropped``)."""
        return self._fragment_id

    def push(self, columns: dict[str, np.ndarray]) -> None:
        """Queue a fragment; if the queue is full the oldest waiting fragment is dropped (counted)."""
        self._fragment_id += 1
        item = (self._fragment_id, columns)
        while True:
            try:
                self._outbox.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._outbox.get_nowait()
                    self._drop("agent_queue_full")
                except queue.Empty:
                    pass

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.fragments_dropped[reason] += count
            self._new_weights.notify_all()  # a lockstep wait for this fragment's weights ends

    @property
    def fragments_lost(self) -> int:
        """Fragments dropped on this side so far, all reasons."""
        with self._lock:
            return sum(self.fragments_dropped.values())

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            if self._closing.is_set():  # close() gave up flushing: account for the rest, do not send
                self._drop("unsent_at_close")
                continue
            self._send(*item)

    def _send(self, frag_id: int, cols: dict[str, np.ndarray]) -> None:
        versions = cols["policy_version"]
        req = learner_pb2.RolloutFragment(
            agent_index=self.agent_index,
            fragment_id=frag_id,
            num_steps=int(cols["obs"].shape[0]),
            min_policy_version=int(versions.min()),
            max_policy_version=int(versions.max()),
            columns=tensors.encode_named(cols),
        )
        try:
            ack = self._stub.PushRollout(req, timeout=self._timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self._drop("rejected")
                log.warning("learner rejected fragment %d: %s", frag_id, exc.details())
            elif self._closing.is_set():
                self._drop("unsent_at_close")
            else:
                self._drop("push_failed")
                log.warning("fragment %d not delivered to learner: %s", frag_id, exc.code().name)
            return
        except ValueError:  # the channel was closed under us by close()
            self._drop("unsent_at_close")
            return
        if ack.accepted:
            with self._lock:
                self.fragments_sent += 1
        else:
            self._drop("rejected")
            log.warning("learner rejected fragment %d: %s", frag_id, ack.reason)

    # -- weights -----------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        have = -1
        while not self._stop.is_set():
            try:
                stream = self._stub.WatchWeights(
                    learner_pb2.WatchWeightsRequest(agent_index=self.agent_index, have_version=have),
                    wait_for_ready=True,
                )
                for msg in stream:
                    params = tensors.decode_named(msg.params, what="Weights.params")
                    with self._lock:
                        self._latest = (msg.version, params)
                        self._new_weights.notify_all()
                    have = msg.version
                    self.versions_received += 1
                    self._have_first.set()
                    if self._stop.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                log.info("weights stream from %s ended (%s); reconnecting", self.address, exc.code().name)
            except tensors.TensorError as exc:
                log.warning("bad weights from learner: %s", exc)
            self._stop.wait(0.5)

    def wait_first_weights(self, timeout: float) -> bool:
        """Block until the first weights version arrived (the learner's initial or resumed parameters)."""
        return self._have_first.wait(timeout)

    def newer_weights(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """The newest received weights if newer than ``have_version``."""
        with self._lock:
            latest = self._latest
        return latest if latest is not None and latest[0] > have_version else None

    def wait_newer_weights(
        self, have_version: int, timeout: float, lost_before: int | None = None
    ) -> tuple[int, dict[str, np.ndarray]] | None:
        """Block until weights newer than ``have_version`` arrived; None if they did not within ``timeout``.

        With ``lost_before``, the wait also ends (None) as soon as more than that many fragments were dropped
        on this side (the fragment whose weights were awaited never reached the learner).
        """

        def done() -> bool:
            newer = self._latest is not None and self._latest[0] > have_version
            lost = lost_before is not None and sum(self.fragments_dropped.values()) > lost_before
            return newer or lost

        with self._new_weights:
            self._new_weights.wait_for(done, timeout)
            latest = self._latest
        return latest if latest is not None and latest[0] > have_version else None

    # -- policy graphs ---------------------------------------------------------------------------------
    def policy_graphs(self, timeout: float) -> PolicyGraphs:
        """This agent's policy graphs with the parameters as inputs (``train.agent_runtime: onnx``).

        Raises:
            RuntimeError: If the learner did not answer within ``timeout`` or refused.
            ValueError: If its answer is malformed.
        """
        request = learner_pb2.PolicyGraphsRequest(agent_index=self.agent_index)
        try:
            msg = self._stub.GetPolicyGraphs(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            raise RuntimeError(
                f"no policy graphs from learner at {self.address} ({exc.code().name}: {exc.details()})"
            ) from None
        return PolicyGraphs.from_proto(msg)

    def close(self, flush_timeout: float = 5.0) -> None:
        """Send what is queued (up to ``flush_timeout``), then stop both threads.

        Whatever could not be sent in time is counted in ``fragments_dropped["unsent_at_close"]``.
        """
        self._stop.set()
        try:
            self._outbox.put(None, timeout=flush_timeout)
        except queue.Full:
            pass
        self._threads[0].join(flush_timeout)
        self._closing.set()
        self._channel.close()  # ends a push still in flight
        if self._threads[0].is_alive():
            try:
                self._outbox.put(None, timeout=1.0)
            except queue.Full:
                pass
            self._threads[0].join(2.0)
        self._threads[1].join(1.0)

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
from collections.abc import Callable

import grpc
import numpy as np
from prometheus_client import Counter

from marlmesh import tensors
from marlmesh.policy_runtime import PolicyGraphs
from marlmesh.serving import grpc_options
from marlmesh.tls import TlsIdentity, open_channel
from marlmesh.v1 import learner_pb2, learner_pb2_grpc
from marlmesh.weights_check import WEIGHTS_REJECT_CAUSES, WeightsError, check_weights

log = logging.getLogger(__name__)

WEIGHTS_REJECTED = Counter(
    "marlmesh_agent_weights_rejected",
    "Weights versions this agent refused (kept acting with its own), by cause",
    ["cause"],
)
for _cause in WEIGHTS_REJECT_CAUSES:  # known label values start at 0
    WEIGHTS_REJECTED.labels(cause=_cause)


class LearnerLink:
    """Pushes rollout fragments to the learner and watches its weights versions.

    Args:
        address: Learner gRPC address ``host:port``.
        agent_index: This agent.
        timeout_s: Deadline of each PushRollout.
        max_message_bytes: gRPC message size bound.
        queue_limit: Fragments waiting to be sent before the oldest is dropped.
        tls_identity: Dial with mutual TLS as this identity (None: plaintext).
        await_layout: Take no weights until :meth:`expect_layout` gave the policy's parameter shapes (an agent
            process builds its policy after opening the link); False: check float32 and finite values only until
            then.
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
        await_layout: bool = False,
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
        self._in_flight = 0
        self.on_fragment_change: Callable[[], None] | None = None
        """Called after every change of the fragment counters (the agent records its fragment ledger)."""
        self._closing = threading.Event()
        self.versions_received = 0
        """Weights versions received and accepted."""
        self.weights_rejected: collections.Counter[str] = collections.Counter(dict.fromkeys(WEIGHTS_REJECT_CAUSES, 0))
        """Weights versions refused before use, by cause (:data:`~marlmesh.weights_check.WEIGHTS_REJECT_CAUSES`)."""
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._layout_known = threading.Event()
        if not await_layout:
            self._layout_known.set()
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

    def fragment_counts(self) -> dict[str, object]:
        """The fragment counters, read together (the agent's fragment ledger).

        ``fragments_created``, ``fragments_sent``, ``fragments_dropped`` (by reason) and ``fragments_in_flight``
        (1 while a push waits for the learner's answer).
        """
        with self._lock:
            return {
                "fragments_created": self._fragment_id,
                "fragments_sent": self.fragments_sent,
                "fragments_dropped": dict(self.fragments_dropped),
                "fragments_in_flight": self._in_flight,
            }

    def _set_in_flight(self, n: int) -> None:
        with self._lock:
            self._in_flight = n
        self._changed()

    def _changed(self) -> None:
        if self.on_fragment_change is not None:
            self.on_fragment_change()

    def push(self, columns: dict[str, np.ndarray]) -> None:
        """Queue a fragment; if the queue is full the oldest waiting fragment is dropped (counted)."""
        with self._lock:
            self._fragment_id += 1
            item = (self._fragment_id, columns)
        self._changed()
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

    def _drop(self, reason: str, count: int = 1, settles_push: bool = False) -> None:
        """Count ``count`` fragments dropped for ``reason`` (``settles_push``: the push in flight ended so)."""
        with self._lock:
            self.fragments_dropped[reason] += count
            if settles_push:
                self._in_flight = 0
            self._new_weights.notify_all()  # a lockstep wait for this fragment's weights ends
        self._changed()

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
        self._set_in_flight(1)
        try:
            ack = self._stub.PushRollout(req, timeout=self._timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self._drop("rejected", settles_push=True)
                log.warning("learner rejected fragment %d: %s", frag_id, exc.details())
            elif self._closing.is_set():
                self._drop("unsent_at_close", settles_push=True)
            else:
                self._drop("push_failed", settles_push=True)
                log.warning("fragment %d not delivered to learner: %s", frag_id, exc.code().name)
            return
        except ValueError:  # the channel was closed under us by close()
            self._drop("unsent_at_close", settles_push=True)
            return
        if ack.accepted:
            with self._lock:
                self.fragments_sent += 1
                self._in_flight = 0
            self._changed()
        else:
            self._drop("rejected", settles_push=True)
            log.warning("learner rejected fragment %d: %s", frag_id, ack.reason)

    # -- weights -----------------------------------------------------------------------------------
    def expect_layout(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Check every weights version against the policy's parameter ``shapes`` (name -> shape) from now on.

        With ``await_layout`` the link takes no weights before this call; otherwise versions received before
        it were checked for float32 and finite values only.
        """
        with self._lock:
            self._shapes = dict(shapes)
        self._layout_known.set()

    def _accept(self, version: int, params: dict[str, np.ndarray]) -> bool:
        """Check a received version; count and log (once per cause) a refused one."""
        shapes = self._shapes or {k: np.shape(v) for k, v in params.items()}
        try:
            check_weights(params, shapes)
        except WeightsError as exc:
            self._refuse(exc.cause, version, str(exc))
            return False
        return True

    def _refuse(self, cause: str, version: int, reason: str) -> None:
        with self._lock:
            self.weights_rejected[cause] += 1
            first = self.weights_rejected[cause] == 1
            self._new_weights.notify_all()  # a lockstep wait for this version ends
        WEIGHTS_REJECTED.labels(cause=cause).inc()
        if first:
            log.warning(
                "refused weights version %d from %s (%s): %s; acting on with the current version (further %s "
                "refusals are counted, not logged)",
                version,
                self.address,
                cause,
                reason,
                cause,
            )
        else:
            log.debug("refused weights version %d (%s): %s", version, cause, reason)

    @property
    def weights_refused(self) -> int:
        """Weights versions refused so far, all causes."""
        with self._lock:
            return sum(self.weights_rejected.values())

    def _watch_loop(self) -> None:
        have = -1
        while not self._layout_known.wait(0.5):
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            try:
                stream = self._stub.WatchWeights(
                    learner_pb2.WatchWeightsRequest(agent_index=self.agent_index, have_version=have),
                    wait_for_ready=True,
                )
                for msg in stream:
                    have = max(have, msg.version)  # a refused version is not asked for again
                    if self._take(msg):
                        self.versions_received += 1
                        self._have_first.set()
                    if self._stop.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                log.info("weights stream from %s ended (%s); reconnecting", self.address, exc.code().name)
            self._stop.wait(0.5)

    def _take(self, msg: learner_pb2.Weights) -> bool:
        """Decode and check one weights message; keep it as the newest if it passes."""
        if msg.agent_index != self.agent_index:
            self._refuse("wrong_agent", msg.version, f"weights of agent {msg.agent_index}, not {self.agent_index}")
            return False
        try:
            params = tensors.decode_named(msg.params, what="Weights.params")
        except tensors.TensorError as exc:
            self._refuse("undecodable", msg.version, str(exc))
            return False
        if not self._accept(msg.version, params):
            return False
        with self._lock:
            self._latest = (msg.version, params)
            self._new_weights.notify_all()
        return True

    def wait_first_weights(self, timeout: float) -> bool:
        """Block until the first weights version arrived (the learner's initial or resumed parameters)."""
        return self._have_first.wait(timeout)

    def newer_weights(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """The newest received weights if newer than ``have_version``."""
        with self._lock:
            latest = self._latest
        return latest if latest is not None and latest[0] > have_version else None

    def wait_newer_weights(
        self,
        have_version: int,
        timeout: float,
        lost_before: int | None = None,
        refused_before: int | None = None,
    ) -> tuple[int, dict[str, np.ndarray]] | None:
        """Block until weights newer than ``have_version`` arrived; None if they did not within ``timeout``.

        With ``lost_before``, the wait also ends (None) as soon as more than that many fragments were dropped
        on this side (the fragment whose weights were awaited never reached the learner); with
        ``refused_before``, as soon as more than that many weights versions were refused (the awaited version
        was poisoned).
        """

        def done() -> bool:
            newer = self._latest is not None and self._latest[0] > have_version
            lost = lost_before is not None and sum(self.fragments_dropped.values()) > lost_before
            refused = refused_before is not None and sum(self.weights_rejected.values()) > refused_before
            return newer or lost or refused

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

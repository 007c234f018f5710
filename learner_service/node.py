"""One agent's learner (plain logic, no gRPC): accepts that agent's fragments, trains, versions weights.

Threading: gRPC handler threads call :meth:`LearnerNode.submit` and :meth:`LearnerNode.wait_newer`; one
training thread calls :meth:`LearnerNode.train_next`. Fragments wait in a bounded queue; when it is full the
oldest is dropped (counted as ``superseded``), so an agent is never blocked by a slow learner.
"""

from __future__ import annotations

import collections
import copy
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from learner_service.metrics import REJECT_CAUSES, UPDATE_REJECT_CAUSES, LearnerMetrics
from learner_service.ppo import NonFiniteUpdate
from marlmesh import plugins
from marlmesh.checkpoint import load_latest, quarantine, remove_partial_writes, save_checkpoint
from marlmesh.config import Config
from marlmesh.policy_spec import PolicySpec
from marlmesh.rollout import FragmentError, validate_columns

if TYPE_CHECKING:
    from learner_service.gossip import Gossip
    from marlmesh.tensorboard import ScalarLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsVersion:
    """A published parameter set."""

    version: int
    params: dict[str, np.ndarray]


def policy_params(policy: torch.nn.Module) -> dict[str, np.ndarray]:
    """Parameters and buffers of a policy as float32 numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in policy.state_dict().items()}


def load_policy_params(policy: torch.nn.Module, params: dict[str, np.ndarray]) -> None:
    """Load :func:`policy_params`-style arrays (every key of the policy's state dict) into ``policy``."""
    policy.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in params.items()})


class LearnerNode:
    """The learner of agent ``spec.agent_index``.

    Args:
        config: The run's config.
        spec: This agent's policy spec (from the env spec).
        checkpoint_dir: Where checkpoints go; resumes from the newest valid one there. None = no checkpoints.
        queue_limit: Fragments waiting for training before the oldest is dropped.
        gossip: Gossip endpoint; every ``gossip.period`` updates the parameters are mixed with the neighbour
            learners' before they are published (see :mod:`learner_service.gossip`).
        metrics: Prometheus instruments (default: the process-wide ones, :meth:`LearnerMetrics.default`).
        scalars: Where each update's statistics go as TensorBoard scalars (``learner/<stat>`` at step
            :attr:`updates`), or None. The caller closes it once training stopped.
    """

    def __init__(
        self,
        config: Config,
        spec: PolicySpec,
        checkpoint_dir: Path | None,
        queue_limit: int = 2,
        gossip: Gossip | None = None,
        metrics: LearnerMetrics | None = None,
        scalars: ScalarLog | None = None,
    ) -> None:
        self.config = config
        self.metrics = (metrics or LearnerMetrics.default()).for_agent(spec.agent_index)
        self.gossip = gossip
        """Parameter mixing with neighbour learners after updates (``algo.dgmappo.gossip``), or None."""
        self.scalars = scalars
        self.spec = spec
        self.checkpoint_dir = checkpoint_dir
        self.channel = plugins.load("channels", config.channel.name)(config.channel)
        algo = plugins.load("algos", config.algo.name)()
        self.learner = algo.build_learner(config, spec, self.channel)
        self.policy = self.learner.policy
        self.version = 0
        self.updates = 0
        self.samples_trained = 0
        self._started = time.monotonic()
        self._seconds_before = 0.0  # training time of the processes before a resume (from the checkpoint)
        self.fragments_received = 0
        self.fragments_trained = 0
        """Fragments trained on by this process (``updates`` also counts those before a resume)."""
        self.resumed_from_version = -1
        """Version of the checkpoint this process resumed from (-1: started fresh)."""
        self.checkpoints_corrupt = 0
        """Checkpoints found corrupt or partial at start (moved aside as ``*.corrupt``)."""
        self.dropped: collections.Counter[str] = collections.Counter()
        """Fragments refused (causes of :data:`~learner_service.metrics.REJECT_CAUSES`) or accepted and dropped
        untrained (:data:`~learner_service.metrics.DROP_CAUSES`)."""
        self.updates_rejected: collections.Counter[str] = collections.Counter()
        """Updates rolled back, by cause (:data:`~learner_service.metrics.UPDATE_REJECT_CAUSES`)."""
        self.last_stats: dict[str, float] = {}
        self._queue: collections.deque[dict[str, np.ndarray]] = collections.deque()
        self._queue_limit = queue_limit
        self._cond = threading.Condition()
        self._closed = False
        if checkpoint_dir is not None:
            self._resume(checkpoint_dir)
        self._published = WeightsVersion(self.version, policy_params(self.policy))
        self.metrics.published(self.version)

    def _resume(self, directory: Path) -> None:
        for partial in remove_partial_writes(directory):
            log.warning("removed partial checkpoint write %s (its writer died mid-write)", partial)

        def corrupt(path: Path, reason: str) -> None:
            self.checkpoints_corrupt += 1
            moved = quarantine(path)
            log.error("corrupt checkpoint %s (%s); moved to %s, using the previous one", path, reason, moved)

        found = load_latest(directory, on_corrupt=corrupt)
        if found is None:
            return
        payload, path = found
        self.policy.load_state_dict(payload["policy"])
        self.learner.optimizer.load_state_dict(payload["optimizer"])
        self.version = int(payload["version"])
        self.resumed_from_version = self.version
        self.updates = int(payload.get("updates", self.version))
        self.samples_trained = int(payload.get("samples_trained", 0))
        self._seconds_before = float(payload.get("train_seconds", 0.0))
        log.info("resumed agent %d from %s (version %d)", self.spec.agent_index, path, self.version)

    # -- called by gRPC handlers -------------------------------------------------------------------
    def submit(
        self,
        agent_index: int,
        columns: dict[str, np.ndarray],
        *,
        num_steps: int | None = None,
        version_range: tuple[int, int] | None = None,
    ) -> tuple[bool, str]:
        """Queue a fragment for training; returns ``(accepted, reason)``. Never raises on bad data.

        Args:
            agent_index: The agent the fragment claims to come from.
            columns: Decoded columns.
            num_steps: T as stated in the fragment header (checked against the columns when given).
            version_range: ``(min, max)`` policy version stated in the header (checked when given).
        """
        with self._cond:
            self.fragments_received += 1
            closed = self._closed
        if closed:
            return self._reject("closed", "the learner is shutting down")
        if agent_index != self.spec.agent_index:
            return self._reject(
                "wrong_agent", f"fragment of agent {agent_index} sent to learner {self.spec.agent_index}"
            )
        try:
            validate_columns(
                columns,
                obs_shape=self.spec.obs_shape,
                action_space=self.spec.action_space,
                rounds=self.channel.rounds,
                num_agents=self.spec.num_agents,
                message_dim=self.spec.message_dim,
                num_steps=num_steps,
                version_range=version_range,
            )
        except FragmentError as exc:
            return self._reject(exc.cause, str(exc))
        with self._cond:
            self.metrics.accepted()
            if self._closed:  # closed while validating: never queue after close (would go unaccounted)
                self._drop("shutdown")
                return True, ""
            if len(self._queue) >= self._queue_limit:
                self._queue.popleft()
                self._drop("superseded")
            self._queue.append(columns)
            self._cond.notify_all()
        return True, ""

    def _drop(self, cause: str, count: int = 1) -> None:
        """Count accepted fragments dropped untrained (caller holds the lock)."""
        self.dropped[cause] += count
        self.metrics.dropped(cause, count)

    def _reject(self, cause: str, reason: str) -> tuple[bool, str]:
        """Count a refused fragment; the first of each cause is logged as a warning, the others at debug level."""
        with self._cond:
            self.dropped[cause] += 1
            first = self.dropped[cause] == 1
        self.metrics.rejected(cause)
        if first:
            log.warning("rejected fragment (%s): %s; further ones of this cause are counted, not logged", cause, reason)
        else:
            log.debug("rejected fragment (%s): %s", cause, reason)
        return False, reason

    def reject_undecodable(self, reason: str) -> None:
        """Count a fragment that arrived but could not even be decoded (the servicer refuses it)."""
        self.count_received()
        self._reject("bad_tensor", reason)

    def wait_newer(self, have_version: int, timeout: float) -> WeightsVersion | None:
        """The published weights if newer than ``have_version`` (waits up to ``timeout`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: self._published.version > have_version or self._closed, timeout)
            pub = self._published
        return pub if pub.version > have_version else None

    # -- training thread ---------------------------------------------------------------------------
    def train_next(self, timeout: float) -> bool:
        """Train on the next queued fragment (waits up to ``timeout``); returns whether a new version was published.

        An update whose loss statistics or resulting parameters are non-finite is rolled back: the last good
        parameters and optimizer state are restored, nothing is published, and the update and its fragment are
        counted (``updates_rejected``, ``fragments_dropped["non_finite_update"]``).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._closed, timeout) or self._closed:
                return False
            columns = self._queue.popleft()
        start = time.perf_counter()
        good = self._snapshot()
        try:
            lr = self.learner.set_progress(self.budget_fraction())
            stats = self.learner.update(columns)
            stats["lr"] = lr
            if self.gossip is not None and (self.updates + 1) % self.gossip.period == 0:
                self._mix(columns)
            cause, detail = self._non_finite(stats), ""
        except NonFiniteUpdate as exc:
            cause, detail = exc.cause, str(exc)
        except Exception:  # e.g. a distribution refusing NaN parameters a previous minibatch stepped into
            if self._params_finite():
                raise
            cause, detail = "non_finite_params", "the update raised on non-finite parameters"
        if cause is not None:
            self._roll_back(good, cause, detail)
            return False
        lag = float(self.version - columns["policy_version"].min())
        params = policy_params(self.policy)
        with self._cond:
            self.version += 1
            self.updates += 1
            self.fragments_trained += 1
            self.samples_trained += int(stats["samples"])
            stats["update_seconds"] = time.perf_counter() - start
            stats["policy_lag"] = lag
            self.last_stats = stats
            self._published = WeightsVersion(self.version, params)
            self._cond.notify_all()
            step, totals = self.updates, {"version": self.version, "samples_trained": self.samples_trained}
        self.metrics.updated(stats, self.version, stats["update_seconds"])
        if self.scalars is not None:
            self.scalars.scalars("learner", {**stats, **totals}, step)
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        log.info(
            "version %d: pg %.4f v %.4f ent %.3f kl %.4f lag %.0f (%.2fs)",
            self.version,
            stats["policy_loss"],
            stats["value_loss"],
            stats["entropy"],
            stats["approx_kl"],
            lag,
            stats["update_seconds"],
        )
        return True

    def _snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        """Copies of the policy's state and the optimizer's state (what a rolled-back update restores)."""
        policy = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        return policy, copy.deepcopy(self.learner.optimizer.state_dict())

    def _params_finite(self) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in self.policy.state_dict().values() if v.is_floating_point())

    def _non_finite(self, stats: dict[str, float]) -> str | None:
        """The cause an update must be rolled back for (non-finite statistics or parameters), or None."""
        if not all(math.isfinite(v) for v in stats.values()):
            return "non_finite_loss"
        return None if self._params_finite() else "non_finite_params"

    def _roll_back(self, good: tuple[dict[str, torch.Tensor], dict[str, object]], cause: str, detail: str) -> None:
        """Restore the last good parameters and optimizer state; count the update and its fragment; publish nothing."""
        self.policy.load_state_dict(good[0])
        self.learner.optimizer.load_state_dict(good[1])
        with self._cond:
            self.updates_rejected[cause] += 1
            self._drop("non_finite_update")
            total = sum(self.updates_rejected.values())
        self.metrics.update_rejected(cause)
        log.error(
            "update rejected (%s: %s): kept version %d and its optimizer state, published nothing "
            "(%d updates rejected so far)",
            cause,
            detail or "non-finite statistics",
            self.version,
            total,
        )

    def budget_fraction(self) -> float:
        """Share of the run's budget used so far (drives ``algo.ppo.anneal_lr``).

        Samples trained against ``train.total_env_steps``, or :meth:`train_seconds` against
        ``train.max_wall_seconds``, whichever is larger.
        """
        train = self.config.train
        fraction = self.samples_trained / train.total_env_steps
        if train.max_wall_seconds:
            fraction = max(fraction, self.train_seconds() / train.max_wall_seconds)
        return fraction

    def train_seconds(self) -> float:
        """This learner's running time, over restarts: a resumed learner adds the time its checkpoint recorded.

        The time between the last checkpoint and a crash, and the downtime until the restart, are not counted.
        """
        return self._seconds_before + time.monotonic() - self._started

    def _mix(self, columns: dict[str, np.ndarray]) -> None:
        """Gossip: mix this learner's parameters with its current neighbours' (published with this update)."""
        from learner_service.gossip import heard_neighbours

        assert self.gossip is not None
        own = policy_params(self.policy)
        g, totals = self.gossip, self.gossip.bus.totals
        before = (g.counters["rounds"], totals.bytes_sent, totals.bytes_received)
        mixed = g.mix(own, heard_neighbours(columns, self.spec.agent_index, self.spec.num_agents))
        load_policy_params(self.policy, mixed)
        self.metrics.gossiped(
            g.counters["rounds"] - before[0], totals.bytes_sent - before[1], totals.bytes_received - before[2]
        )

    def save_checkpoint(self) -> Path | None:
        """Write the current state as an atomic checkpoint."""
        if self.checkpoint_dir is None:
            return None
        payload = {
            "version": self.version,
            "updates": self.updates,
            "samples_trained": self.samples_trained,
            "train_seconds": self.train_seconds(),
            "policy": self.policy.state_dict(),
            "optimizer": self.learner.optimizer.state_dict(),
            "spec": self.spec,
            "channel": self.config.channel.name,
        }
        return save_checkpoint(self.checkpoint_dir, self.version, payload, self.config.train.checkpoint_keep)

    def status(self) -> dict[str, object]:
        """Counters for GetStatus and the summary."""
        with self._cond:
            return {
                "version": self.version,
                "updates": self.updates,
                "samples_trained": self.samples_trained,
                "fragments_received": self.fragments_received,
                "fragments_trained": self.fragments_trained,
                "fragments_dropped": dict(self.dropped),
                "fragments_rejected": {cause: self.dropped[cause] for cause in REJECT_CAUSES},
                "updates_rejected": {cause: self.updates_rejected[cause] for cause in UPDATE_REJECT_CAUSES},
                "resumed_from_version": self.resumed_from_version,
                "checkpoints_corrupt": self.checkpoints_corrupt,
                "queued": len(self._queue),
                "last_losses": dict(self.last_stats),
                **({"gossip": self.gossip.status()} if self.gossip is not None else {}),
            }

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def count_received(self) -> None:
        """Count a fragment that arrived but could not even be decoded (the servicer rejects it)."""
        with self._cond:
            self.fragments_received += 1

    def close(self) -> None:
        """Wake every waiter; no more training. Fragments still queued are counted as dropped (``shutdown``)."""
        with self._cond:
            if self._queue:
                self._drop("shutdown", len(self._queue))
                self._queue.clear()
            self._closed = True
            self._cond.notify_all()

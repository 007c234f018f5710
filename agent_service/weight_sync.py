"""When an agent takes up new weights from its learner (``train.weight_sync``).

:class:`AsyncWeights` (default): between steps the agent swaps in the newest version that has arrived and
never waits, so acting and learning overlap (policy lag varies with machine load; runs are not repeatable).

:class:`LockstepWeights`: synchronous on-policy PPO. Right after pushing rollout fragment k the agent waits
(up to ``train.lockstep_timeout_s``) for the version its learner trained on fragments 1..k and acts with it
from that same step on; the learner therefore trains on every fragment in order, each collected by the
version before it. The agent stops at :func:`marlmesh.lockstep.final_tick`. Together with the sim clock
this makes a run a function of its config and seed.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from agent_service.learner_link import LearnerLink
from marlmesh.config import Config
from marlmesh.lockstep import final_tick

log = logging.getLogger(__name__)

Params = tuple[int, dict[str, np.ndarray]]


class WeightSync(Protocol):
    """What the agent loop asks about weights and the end of the run."""

    def between_steps(self, have_version: int) -> Params | None:
        """Weights to load before the next step, or None."""
        ...

    def after_push(self, have_version: int) -> Params | None:
        """Weights to load right after a fragment was pushed (acting with them from this step on), or None."""
        ...

    def is_final(self, tick: int) -> bool:
        """Whether the agent stops at ``tick`` (after pushing its last fragment) instead of acting."""
        ...


class AsyncWeights:
    """The newest received version between steps, never waiting; the run ends when the launcher stops it.

    Args:
        learner: The learner link (None in evaluation: weights never change).
    """

    def __init__(self, learner: LearnerLink | None) -> None:
        self.learner = learner

    def between_steps(self, have_version: int) -> Params | None:
        """The newest received weights if newer than ``have_version``."""
        return None if self.learner is None else self.learner.newer_weights(have_version)

    def after_push(self, have_version: int) -> Params | None:
        """Never: new weights are picked up between steps."""
        return None

    def is_final(self, tick: int) -> bool:
        """Never: the launcher ends the run."""
        return False


class LockstepWeights:
    """After fragment k, wait for and act with the weights trained on fragments 1..k; stop at ``end_tick``.

    Args:
        learner: The learner link.
        end_tick: Env tick at which the agent pushes its last fragment and stops acting.
        timeout_s: Longest wait for a version after a push.
    """

    def __init__(self, learner: LearnerLink, end_tick: int, timeout_s: float) -> None:
        self.learner = learner
        self.end_tick = end_tick
        self.timeout_s = timeout_s
        self._lost_seen = 0  # one fragment in flight at a time: a drop beyond this is the one just pushed
        self._refused_seen = 0  # weights versions refused so far: one beyond this is the version awaited

    def between_steps(self, have_version: int) -> Params | None:
        """Never: versions change only right after a push."""
        return None

    def after_push(self, have_version: int) -> Params | None:
        """Wait for the version after ``have_version`` (the learner's update on the fragment just pushed).

        Returns None (acting on with the current version) if the fragment was dropped on the way (counted in
        the link's ``fragments_dropped``) or the version that came back was refused (``weights_rejected``);
        the run is then no longer exact.

        Raises:
            TimeoutError: If it does not arrive within ``timeout_s``.
        """
        got = self.learner.wait_newer_weights(
            have_version, self.timeout_s, lost_before=self._lost_seen, refused_before=self._refused_seen
        )
        lost, refused = self.learner.fragments_lost, self.learner.weights_refused
        if got is None and lost > self._lost_seen:
            self._lost_seen, self._refused_seen = lost, refused
            log.warning("lockstep: the fragment was dropped before training; acting on with version %d", have_version)
            return None
        if got is None and refused > self._refused_seen:
            self._lost_seen, self._refused_seen = lost, refused
            log.warning(
                "lockstep: the weights trained on the fragment were refused; acting on with version %d", have_version
            )
            return None
        self._lost_seen, self._refused_seen = lost, refused
        if got is None:
            raise TimeoutError(
                f"lockstep: learner at {self.learner.address} did not publish weights version {have_version + 1} "
                f"within {self.timeout_s:.0f}s of the fragment push (train.lockstep_timeout_s)"
            )
        if got[0] != have_version + 1:  # e.g. the learner restarted from a checkpoint: no longer in step
            log.warning("lockstep: expected weights version %d, got %d", have_version + 1, got[0])
        return got

    def is_final(self, tick: int) -> bool:
        """True from ``end_tick`` on."""
        return tick >= self.end_tick


def weight_sync_for(config: Config, learner: LearnerLink | None, num_envs: int) -> WeightSync:
    """The policy ``train.weight_sync`` asks for (evaluation, without a learner, is always async)."""
    if learner is None or config.train.weight_sync == "async":
        return AsyncWeights(learner)
    t = config.train
    return LockstepWeights(learner, final_tick(t.total_env_steps, num_envs, t.rollout_steps), t.lockstep_timeout_s)

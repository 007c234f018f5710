"""Time awareness (``env.time_feature``): every observation ends with the elapsed share of the episode.

In a task with a fixed horizon (MPE: ``max_cycles`` steps), the return still to come depends on how many
steps are left, which an agent cannot see in its observation. Its local critic then has to average over every
remaining time, and its advantages carry that error as noise. :class:`TimeObservation` appends
``t / max_cycles`` (0 after reset, 1 at the last observation) to each agent's flat Box observation, so actor and
critic know where they are in the episode (time-limit awareness, Pardo et al. 2018). The agent could count the
steps itself: this is local information, not a view of the other agents.

With time in the observation, reaching the horizon is a true end of the (time-augmented) task, not a cut: the
wrapper reports the horizon's truncation as *termination*, so learners do not bootstrap from a value of
"time 1", a state no agent ever acts in (Pardo et al.: time-aware agents treat time-outs as terminal).
"""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

from marlmesh.envs.wrapper import ObservationWrapper


class TimeObservation(ObservationWrapper):
    """Append ``steps_taken / horizon`` to every agent's observation.

    Args:
        env: A ParallelEnv with flat Box observations and a fixed horizon ``env.unwrapped.max_cycles``.

    Raises:
        ValueError: If the env has no positive ``max_cycles`` or an observation space is not a flat Box.
    """

    def __init__(self, env: ParallelEnv) -> None:
        horizon = getattr(env.unwrapped, "max_cycles", None)
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(
                f"env.time_feature needs an env with a fixed horizon (unwrapped.max_cycles), got {horizon!r}"
            )
        self.horizon = horizon
        super().__init__(
            env,
            {
                a: self.grown_box(env.observation_space(a), [0.0], [1.0], "env.time_feature")
                for a in env.possible_agents
            },
        )
        self._steps = 0

    # -- ParallelEnv API (the rest is delegated by ObservationWrapper) ------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Reset; the time entry is 0."""
        obs, infos = self.env.reset(seed=seed, options=options)
        self._steps = 0
        return self._stamp(obs), infos

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        """Step; the time entry is the share of the horizon elapsed (at most 1); the horizon terminates."""
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        self._steps += 1
        if self._steps >= self.horizon:
            terms = {a: bool(terms.get(a, False) or truncs.get(a, False)) for a in set(terms) | set(truncs)}
            truncs = dict.fromkeys(truncs, False)
        return self._stamp(obs), rewards, terms, truncs, infos

    def _stamp(self, obs: dict) -> dict:
        share = np.float32(min(1.0, self._steps / self.horizon))
        return {a: np.append(np.asarray(o, np.float32), share) for a, o in obs.items()}

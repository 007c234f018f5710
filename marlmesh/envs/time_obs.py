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

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class TimeObservation(ParallelEnv):
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
        self.env = env
        self.horizon = horizon
        self.possible_agents = list(env.possible_agents)
        self.metadata = getattr(env, "metadata", {})
        self._spaces = {a: self._grow(env.observation_space(a)) for a in self.possible_agents}
        self._steps = 0

    @staticmethod
    def _grow(space: spaces.Space) -> spaces.Box:
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"env.time_feature needs flat Box observations, got {space}")
        low = np.append(space.low.astype(np.float32), np.float32(0.0))
        high = np.append(space.high.astype(np.float32), np.float32(1.0))
        return spaces.Box(low, high, dtype=np.float32)

    # -- ParallelEnv API -----------------------------------------------------------------------------
    @property
    def agents(self) -> list[str]:  # type: ignore[override]
        """Agents alive in the current episode."""
        return self.env.agents

    @property
    def unwrapped(self) -> ParallelEnv:
        """The innermost env."""
        return self.env.unwrapped

    def observation_space(self, agent: str) -> spaces.Box:
        """The inner space plus one ``[0, 1]`` entry."""
        return self._spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """Unchanged."""
        return self.env.action_space(agent)

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

    def render(self) -> Any:
        """Delegated."""
        return self.env.render()

    def close(self) -> None:
        """Delegated."""
        self.env.close()

    def state(self) -> np.ndarray:
        """Delegated (the global state gets no time entry)."""
        return self.env.state()

    def _stamp(self, obs: dict) -> dict:
        share = np.float32(min(1.0, self._steps / self.horizon))
        return {a: np.append(np.asarray(o, np.float32), share) for a, o in obs.items()}

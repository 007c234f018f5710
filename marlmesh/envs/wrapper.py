"""Base of the observation wrappers (``env.obs_radius``, ``env.time_feature``): a ParallelEnv that delegates.

A subclass sets its grown observation spaces with :meth:`ObservationWrapper.grown_box` and overrides ``reset``
and ``step``; everything else (agents, action spaces, render, close, global state, the unwrapped env the
adapters read) passes through to the wrapped env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class ObservationWrapper(ParallelEnv):
    """Delegates everything but the observations to ``env``.

    Args:
        env: The wrapped ParallelEnv.
        spaces_by_agent: Each agent's observation space after wrapping.
    """

    def __init__(self, env: ParallelEnv, spaces_by_agent: dict[str, spaces.Space]) -> None:
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.metadata = getattr(env, "metadata", {})
        self._spaces = spaces_by_agent

    @staticmethod
    def grown_box(space: spaces.Space, low: np.ndarray, high: np.ndarray, what: str) -> spaces.Box:
        """``space`` (a flat Box) with entries of bounds ``low``/``high`` appended.

        Raises:
            ValueError: If ``space`` is not a flat Box (``what`` names the option that needs one).
        """
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"{what} needs flat Box observations, got {space}")
        return spaces.Box(
            np.concatenate([space.low.astype(np.float32), np.asarray(low, np.float32)]),
            np.concatenate([space.high.astype(np.float32), np.asarray(high, np.float32)]),
            dtype=np.float32,
        )

    @property
    def agents(self) -> list[str]:  # type: ignore[override]
        """Agents alive in the current episode."""
        return self.env.agents

    @property
    def unwrapped(self) -> ParallelEnv:
        """The innermost env (adapters read its world)."""
        return self.env.unwrapped

    def observation_space(self, agent: str) -> spaces.Space:
        """The observation space after wrapping."""
        return self._spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """Unchanged."""
        return self.env.action_space(agent)

    def render(self) -> Any:
        """Delegated."""
        return self.env.render()

    def close(self) -> None:
        """Delegated."""
        self.env.close()

    def state(self) -> np.ndarray:
        """Delegated (the global state is not an agent's observation, so it is not wrapped)."""
        return self.env.state()

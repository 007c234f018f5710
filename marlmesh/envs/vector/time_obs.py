"""``env.time_feature`` for a vectorized env: :class:`marlmesh.envs.time_obs.TimeObservation`, per copy.

Every observation ends with ``t / max_cycles`` of its copy (0 after a reset, 1 at the horizon), and reaching the
horizon is reported as termination, not truncation (see :mod:`marlmesh.envs.time_obs` for why).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from marlmesh.envs.vector.base import VectorEnv, VectorStep


class VectorTimeObservation(VectorEnv):
    """Append each copy's elapsed share of the episode to every agent's observation.

    Args:
        env: A vectorized env with flat Box observations and a fixed ``max_cycles``.

    Raises:
        ValueError: If the env has no positive ``max_cycles`` or an observation space is not a flat Box.
    """

    def __init__(self, env: VectorEnv) -> None:
        horizon = env.max_cycles
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"env.time_feature needs an env with a fixed horizon (max_cycles), got {horizon!r}")
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.num_envs = env.num_envs
        self.position_dim = env.position_dim
        self.has_collisions = env.has_collisions
        self.max_cycles = horizon
        self.metadata = env.metadata
        self._spaces = {}
        for agent in self.possible_agents:
            space = env.observation_space(agent)
            if not isinstance(space, spaces.Box) or len(space.shape) != 1:
                raise ValueError(f"env.time_feature needs flat Box observations, got {space}")
            self._spaces[agent] = spaces.Box(
                np.append(space.low.astype(np.float32), np.float32(0.0)),
                np.append(space.high.astype(np.float32), np.float32(1.0)),
                dtype=np.float32,
            )
        self._steps = np.zeros(self.num_envs, np.int64)

    @property
    def unwrapped(self) -> VectorEnv:
        """The innermost env."""
        return self.env.unwrapped

    def observation_space(self, agent: str) -> spaces.Space:
        """The wrapped env's space with one entry in ``[0, 1]`` appended."""
        return self._spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """Unchanged."""
        return self.env.action_space(agent)

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Reset every copy; the time entry is 0."""
        self._steps[:] = 0
        return self._stamp(self.env.reset(seed))

    def reset_copies(self, copies: np.ndarray) -> list[np.ndarray]:
        """Reset some copies; their time entry is 0."""
        self._steps[copies] = 0
        return self._stamp(self.env.reset_copies(copies))

    def step(self, actions: Sequence[np.ndarray]) -> VectorStep:
        """Step; the time entry is the elapsed share (at most 1); the horizon terminates instead of truncating."""
        out = self.env.step(actions)
        self._steps += 1
        at_horizon = self._steps >= self.max_cycles
        out.terminated = out.terminated | (out.truncated & at_horizon[None, :])
        out.truncated = out.truncated & ~at_horizon[None, :]
        out.obs = self._stamp(out.obs)
        return out

    def positions(self) -> np.ndarray | None:
        """Delegated."""
        return self.env.positions()

    def close(self) -> None:
        """Delegated."""
        self.env.close()

    def _stamp(self, obs: list[np.ndarray]) -> list[np.ndarray]:
        share = np.minimum(1.0, self._steps / self.max_cycles).astype(np.float32)[:, None]
        return [np.concatenate([np.asarray(o, np.float32), share], axis=1) for o in obs]

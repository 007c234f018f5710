"""Small PettingZoo ParallelEnvs for tests.

:class:`HeterogeneousEnv` has two agents with different observation and action spaces (one discrete, one
continuous), so it exercises every per-agent code path that MPE's homogeneous tasks do not. It passes
PettingZoo's ``parallel_api_test``. Reachable as ``env.name=marlmesh.testing.envs:heterogeneous_env``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class HeterogeneousEnv(ParallelEnv):
    """A scout that sees a target and names its column, and a mover that walks to it.

    - ``scout``: obs ``[target_x, target_y, mover_x, mover_y]`` (4,), actions Discrete(3) = which third of
      the x axis the target is in; reward 1 when right, else 0.
    - ``mover``: obs ``[x, y, vx, vy, target_x, target_y]`` (6,), actions Box(-1, 1, (2,)) = acceleration;
      reward ``-distance to target``.

    Args:
        max_cycles: Steps per episode (truncation).
    """

    metadata = {"name": "marlmesh_heterogeneous_v0", "render_modes": []}

    def __init__(self, max_cycles: int = 10) -> None:
        self.max_cycles = int(max_cycles)
        self.possible_agents = ["scout", "mover"]
        self.agents: list[str] = []
        self._obs_spaces = {
            "scout": spaces.Box(-2.0, 2.0, (4,), np.float32),
            "mover": spaces.Box(-4.0, 4.0, (6,), np.float32),
        }
        self._act_spaces = {"scout": spaces.Discrete(3), "mover": spaces.Box(-1.0, 1.0, (2,), np.float32)}
        self._rng = np.random.default_rng()
        self._t = 0
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._target = np.zeros(2)

    def observation_space(self, agent: str) -> spaces.Space:
        """Per-agent observation space."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """Per-agent action space."""
        return self._act_spaces[agent]

    def _observe(self) -> dict[str, np.ndarray]:
        return {
            "scout": np.concatenate([self._target, self._pos]).astype(np.float32),
            "mover": np.concatenate([self._pos, self._vel, self._target]).astype(np.float32),
        }

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode: random target and mover position in [-1, 1]^2."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._t = 0
        self._pos = self._rng.uniform(-1, 1, 2)
        self._vel = np.zeros(2)
        self._target = self._rng.uniform(-1, 1, 2)
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Apply both actions; the episode is truncated after ``max_cycles`` steps."""
        column = int(np.clip((self._target[0] + 1.0) / (2.0 / 3.0), 0, 2))
        scout_reward = 1.0 if int(actions.get("scout", -1)) == column else 0.0
        accel = np.clip(np.asarray(actions.get("mover", np.zeros(2)), np.float64), -1.0, 1.0)
        self._vel = np.clip(0.5 * self._vel + 0.1 * accel, -1.0, 1.0)
        self._pos = np.clip(self._pos + self._vel, -1.5, 1.5)
        self._t += 1
        rewards = {"scout": scout_reward, "mover": -float(np.linalg.norm(self._pos - self._target))}
        done = self._t >= self.max_cycles
        obs = self._observe()
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        infos: dict[str, dict] = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


def heterogeneous_env(max_cycles: int = 10) -> HeterogeneousEnv:
    """Factory for ``env.name=marlmesh.testing.envs:heterogeneous_env``."""
    return HeterogeneousEnv(max_cycles=max_cycles)

"""The common part of every vectorized MPE task: world, spaces, action decoding, horizon, collisions.

:class:`MPEVectorEnv` does what mpe2's ``SimpleEnv`` does around a scenario, for B copies at once: it builds the
action spaces from the agents' ``movable``/``silent`` flags and ``dim_c`` (Discrete ``5 * dim_c`` / Box ``5 +
dim_c`` for a movable speaker, as mpe2), decodes actions into forces and messages, steps the
:class:`~marlmesh.envs.vector.physics.VectorWorld`, counts steps to ``max_cycles`` (truncation), and reports agent
positions and agent-agent overlaps. A task subclasses it and supplies the scenario: the world's entities
(:meth:`MPEVectorEnv.make_spec`), the reset draw (:meth:`MPEVectorEnv.reset_world`), the observations
(:meth:`MPEVectorEnv.observe`) and the rewards (:meth:`MPEVectorEnv.rewards`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from marlmesh.envs.vector.base import VectorEnv, VectorStep
from marlmesh.envs.vector.physics import MOVE_DIM, VectorWorld, WorldSpec, decode_actions


def observation_box(dim: int, flags: int = 0) -> spaces.Box:
    """mpe2's unbounded float32 observation Box of ``dim`` entries, with ``flags`` trailing entries in ``[0, 1]``.

    ``flags`` > 0 gives the space of ``env.obs_radius`` (:class:`marlmesh.envs.partial_obs.RadiusObservation`).
    """
    if not flags:
        return spaces.Box(low=-np.float32(np.inf), high=+np.float32(np.inf), shape=(dim,), dtype=np.float32)
    low = np.concatenate([np.full(dim, -np.inf, np.float32), np.zeros(flags, np.float32)])
    high = np.concatenate([np.full(dim, np.inf, np.float32), np.ones(flags, np.float32)])
    return spaces.Box(low, high, dtype=np.float32)


def mpe_action_space(movable: bool, silent: bool, dim_c: int, continuous: bool) -> spaces.Space:
    """The action space mpe2's ``SimpleEnv`` gives an agent."""
    if movable:
        dim = MOVE_DIM
    else:
        dim = 0 if continuous else 1
    if not silent:
        dim = dim + dim_c if continuous else dim * dim_c
    return spaces.Box(low=0, high=1, shape=(dim,)) if continuous else spaces.Discrete(dim)


class MPEVectorEnv(VectorEnv):
    """B copies of an MPE scenario.

    Args:
        num_envs: B.
        max_cycles: Steps per episode (every agent is truncated at the last one).
        continuous_actions: Box actions instead of Discrete.

    Raises:
        ValueError: If ``num_envs`` or ``max_cycles`` is not positive.
    """

    position_dim = 2

    def __init__(self, num_envs: int, max_cycles: int, continuous_actions: bool) -> None:
        if not isinstance(max_cycles, int) or max_cycles < 1:
            raise ValueError(f"max_cycles must be a positive int, got {max_cycles!r}")
        self.num_envs = int(num_envs)
        self.max_cycles = max_cycles
        self.continuous_actions = bool(continuous_actions)
        self.world = VectorWorld(self.make_spec(), self.num_envs)
        spec = self.world.spec
        self.possible_agents = self.agent_names()
        if len(self.possible_agents) != spec.num_agents:
            raise ValueError(f"{type(self).__name__}: {len(self.possible_agents)} names for {spec.num_agents} agents")
        self.has_collisions = bool(spec.collide[: spec.num_agents].any())
        self.steps = np.zeros(self.num_envs, np.int64)
        self.step_overlaps = np.zeros((self.num_envs, spec.num_agents, spec.num_agents), bool)
        """``[B, A, A]`` agent overlaps of the state the last step produced (computed once per step)."""
        self.metadata = {"name": type(self).__name__}
        self._act_spaces = {
            name: mpe_action_space(bool(spec.movable[i]), bool(spec.silent[i]), spec.dim_c, self.continuous_actions)
            for i, name in enumerate(self.possible_agents)
        }
        self.world.seed(None)
        self.reset_world(np.arange(self.num_envs))
        self._obs_spaces = {
            name: observation_box(o.shape[1] - self.observation_flags(i), self.observation_flags(i))
            for i, (name, o) in enumerate(zip(self.possible_agents, self.observe(), strict=True))
        }

    # -- the scenario ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def make_spec(self) -> WorldSpec:
        """The world's entities (agents first) and physics."""

    @abc.abstractmethod
    def reset_world(self, copies: np.ndarray) -> None:
        """Draw the initial state of ``copies`` (indices) from their generators (``self.world.rngs``)."""

    @abc.abstractmethod
    def observe(self) -> list[np.ndarray]:
        """Per agent ``[B, obs_dim]`` float32 observations of the current state."""

    @abc.abstractmethod
    def rewards(self) -> np.ndarray:
        """``[B, N]`` float64 rewards of the current (just stepped) state (:attr:`step_overlaps` is set)."""

    def agent_names(self) -> list[str]:
        """The agents' names in world order (mpe2's ``agent.name``); ``agent_0 .. agent_{A-1}`` by default."""
        return [f"agent_{i}" for i in range(self.world.spec.num_agents)]

    def observation_flags(self, agent_index: int) -> int:
        """How many trailing ``[0, 1]`` entries (visibility flags) agent ``agent_index``'s observation has."""
        return 0

    def terminal(self) -> np.ndarray:
        """``[B]`` bool: the episode ends (terminates) in this copy. Never, by default (horizon only)."""
        return np.zeros(self.num_envs, bool)

    # -- VectorEnv ---------------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        """As mpe2 (plus the visibility flags of a partial observation)."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """As mpe2's ``SimpleEnv``."""
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Reset every copy (copy ``b`` seeded with ``seed + b``)."""
        if seed is not None:
            self.world.seed(seed)
        return self.reset_copies(np.ones(self.num_envs, bool))

    def reset_copies(self, copies: np.ndarray) -> list[np.ndarray]:
        """Reset the copies where ``copies`` is True (their generators continue)."""
        idx = np.flatnonzero(copies)
        self.reset_world(idx)
        self.steps[idx] = 0
        return self.observe()

    def step(self, actions: Sequence[np.ndarray]) -> VectorStep:
        """One world step of every copy, then rewards, observations, horizon, collisions and positions."""
        u, c = decode_actions(actions, self.world.spec, self.continuous_actions)
        self.world.step(u, c)
        self.step_overlaps = self.world.agent_overlaps()
        self.steps += 1
        n = len(self.possible_agents)
        reward = self.rewards().T.astype(np.float32)
        truncated = np.broadcast_to(self.steps >= self.max_cycles, (n, self.num_envs)).copy()
        terminated = np.broadcast_to(self.terminal(), (n, self.num_envs)) & ~truncated
        return VectorStep(
            obs=self.observe(),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            cost=self.collisions(),
            positions=self.positions(),
        )

    def positions(self) -> np.ndarray:
        """``[N, B, 2]`` float32 agent positions."""
        return self.world.agent_pos.transpose(1, 0, 2).astype(np.float32)

    def collisions(self) -> np.ndarray:
        """``[N, B]`` float32: per agent, how many other colliding agents overlap it after the last step."""
        if not self.has_collisions:
            return np.zeros((len(self.possible_agents), self.num_envs), np.float32)
        return self.step_overlaps.sum(axis=2).T.astype(np.float32)

    # -- helpers for scenarios ------------------------------------------------------------------------------
    @staticmethod
    def split_agents(obs: np.ndarray) -> list[np.ndarray]:
        """Per-agent contiguous float32 ``[B, D]`` arrays from a ``[B, N, D]`` array."""
        return list(np.ascontiguousarray(np.asarray(obs, np.float32).transpose(1, 0, 2)))

"""A one-copy PettingZoo ParallelEnv view of a vectorized env, for everything that plays single episodes.

:func:`marlmesh.envs.make_env` returns :class:`VectorParallelEnv` for a vectorized plugin, so baselines, policy
export, manifests and diagnostics see an ordinary ParallelEnv. Its ``unwrapped.world`` is, for an MPE task, a
live view of copy 0 in mpe2's shape (``world.agents[i].state.p_pos``, ``.size``, ``.collide``, ``landmarks``):
reading it reads the arrays, assigning ``state.p_pos``/``state.p_vel`` writes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marlmesh.envs.vector.base import VectorEnv
from marlmesh.envs.vector.physics import VectorWorld


class _StateView:
    """mpe2's ``EntityState``/``AgentState`` of entity ``e`` in copy 0 of a :class:`VectorWorld`."""

    def __init__(self, world: VectorWorld, e: int) -> None:
        self._world, self._e = world, e

    @property
    def p_pos(self) -> np.ndarray:
        return self._world.state.pos[0, self._e]

    @p_pos.setter
    def p_pos(self, value: np.ndarray) -> None:
        self._world.state.pos[0, self._e] = value

    @property
    def p_vel(self) -> np.ndarray:
        return self._world.state.vel[0, self._e]

    @p_vel.setter
    def p_vel(self, value: np.ndarray) -> None:
        self._world.state.vel[0, self._e] = value

    @property
    def c(self) -> np.ndarray:
        return self._world.state.comm[0, self._e]


class _BodyView:
    """An mpe2 entity's properties and state, read from the spec and copy 0."""

    def __init__(self, world: VectorWorld, e: int, name: str) -> None:
        spec = world.spec
        self.name = name
        self.size = float(spec.size[e])
        self.movable = bool(spec.movable[e])
        self.collide = bool(spec.collide[e])
        self.initial_mass = float(spec.mass[e])
        self.max_speed = None if np.isinf(spec.max_speed[e]) else float(spec.max_speed[e])
        if e < spec.num_agents:
            self.silent = bool(spec.silent[e])
            self.accel = float(spec.accel[e])
        self.state = _StateView(world, e)

    @property
    def mass(self) -> float:
        return self.initial_mass


class MPEWorldView:
    """Copy 0 of a :class:`VectorWorld` shaped like mpe2's ``World`` (``agents``, ``landmarks``, ``entities``).

    Args:
        world: The batched world.
        agent_names: Names of the agents (world order).
    """

    def __init__(self, world: VectorWorld, agent_names: list[str]) -> None:
        spec = world.spec
        a = spec.num_agents
        self.agents = [_BodyView(world, i, name) for i, name in enumerate(agent_names)]
        self.landmarks = [_BodyView(world, e, f"landmark {e - a}") for e in range(a, spec.num_entities)]
        self.dim_c, self.dim_p = spec.dim_c, 2
        self.dt, self.damping = spec.dt, spec.damping
        self.contact_force, self.contact_margin = spec.contact_force, spec.contact_margin

    @property
    def entities(self) -> list[_BodyView]:
        """Agents, then landmarks."""
        return self.agents + self.landmarks


class VectorParallelEnv(ParallelEnv):
    """Copy 0 of a one-copy :class:`VectorEnv` behind the PettingZoo Parallel API.

    An agent leaves ``agents`` when its episode ends (the step that ends it still returns its observation), as
    with mpe2 behind PettingZoo's AEC-to-parallel conversion.

    Args:
        vector: The vectorized env (``num_envs == 1``).

    Raises:
        ValueError: If ``vector.num_envs != 1``.
    """

    def __init__(self, vector: VectorEnv) -> None:
        if vector.num_envs != 1:
            raise ValueError(f"a ParallelEnv view needs a one-copy vectorized env, got num_envs={vector.num_envs}")
        self.vector = vector
        self.possible_agents = list(vector.possible_agents)
        self.agents: list[str] = []
        self.metadata = dict(vector.metadata)
        self.render_mode = None
        self.max_cycles = vector.max_cycles
        inner = vector.unwrapped
        world = getattr(inner, "world", None)
        if isinstance(world, VectorWorld):
            self.world = MPEWorldView(world, self.possible_agents)
        self.last_cost = np.zeros((len(self.possible_agents), 1), np.float32)
        self._obs: list[np.ndarray] = []

    @property
    def unwrapped(self) -> VectorParallelEnv:
        """This view (what adapters and diagnostics read: ``world``, ``max_cycles``, ``vector``)."""
        return self

    def observation_space(self, agent: str) -> spaces.Space:
        """The vectorized env's."""
        return self.vector.observation_space(agent)

    def action_space(self, agent: str) -> spaces.Space:
        """The vectorized env's."""
        return self.vector.action_space(agent)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Reset (seeded with ``seed``, or continuing the generator)."""
        self._obs = self.vector.reset(seed)
        self.agents = list(self.possible_agents)
        self.last_cost = np.zeros_like(self.last_cost)
        return self._by_agent(self._obs), {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        """Step copy 0 with one action per live agent (agents that are gone act with the space's zero)."""
        batch = []
        for name in self.possible_agents:
            space = self.vector.action_space(name)
            act = actions.get(name)
            if act is None:
                act = np.zeros(space.shape, space.dtype) if isinstance(space, spaces.Box) else 0
            batch.append(np.asarray(act)[None])
        out = self.vector.step(batch)
        self._obs = out.obs
        self.last_cost = out.cost
        live = list(self.agents)
        index = {a: i for i, a in enumerate(self.possible_agents)}
        obs = {a: self._obs[index[a]][0] for a in live}
        rewards = {a: float(out.reward[index[a], 0]) for a in live}
        terms = {a: bool(out.terminated[index[a], 0]) for a in live}
        truncs = {a: bool(out.truncated[index[a], 0]) for a in live}
        self.agents = [a for a in live if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, {a: {} for a in live}

    def state(self) -> np.ndarray:
        """Every agent's current observation, concatenated (mpe2's global state)."""
        return np.concatenate([o[0] for o in self._obs]) if self._obs else np.zeros(0, np.float32)

    def render(self) -> Any:
        """Vectorized envs do not render."""
        return None

    def close(self) -> None:
        """Close the vectorized env."""
        self.vector.close()

    def _by_agent(self, obs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {a: obs[i][0] for i, a in enumerate(self.possible_agents)}

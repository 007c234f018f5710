"""What env_service needs from an environment beyond the PettingZoo Parallel API.

:class:`EnvAdapter` reads the physics that the comm bus needs (agent positions, for radio range) and the
events that episode statistics and cost signals need (agent-agent collisions). The generic adapter reports
neither; :class:`MPEAdapter` reads them from an MPE world, :class:`VectorEnvAdapter` from a vectorized env's
one-copy view. ``adapter_for`` picks one by inspecting the env.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pettingzoo import ParallelEnv


class EnvAdapter:
    """Generic adapter: no positions, no collisions (any PettingZoo ParallelEnv).

    Args:
        agents: The env's ``possible_agents``, in marlmesh index order.
    """

    has_positions = False
    has_collisions = False
    position_dim = 0

    def __init__(self, agents: Sequence[str]) -> None:
        self.agents = list(agents)

    def positions(self, env: ParallelEnv) -> np.ndarray | None:
        """Agent positions ``[N, D]`` in env units, or None."""
        return None

    def collisions(self, env: ParallelEnv) -> np.ndarray:
        """Per-agent number of agents it overlaps with in the current state, ``[N]`` float32."""
        return np.zeros(len(self.agents), np.float32)

    def positions_batch(self, envs: Sequence[ParallelEnv]) -> np.ndarray | None:
        """:meth:`positions` of every env copy, ``[B, N, D]`` (None without positions)."""
        if not self.has_positions:
            return None
        return np.stack([self.positions(env) for env in envs])

    def collisions_batch(self, envs: Sequence[ParallelEnv]) -> np.ndarray:
        """:meth:`collisions` of every env copy, ``[B, N]`` float32."""
        return np.stack([self.collisions(env) for env in envs]) if envs else np.zeros((0, len(self.agents)), np.float32)


class MPEAdapter(EnvAdapter):
    """MPE worlds (``env.unwrapped.world``): 2-D positions and agent-agent collisions.

    A collision is two colliding agents whose discs overlap (the test behind ``simple_spread``'s penalty).
    """

    has_positions = True
    position_dim = 2

    def __init__(self, agents: Sequence[str], env: ParallelEnv) -> None:
        super().__init__(agents)
        world_agents = env.unwrapped.world.agents
        names = [a.name for a in world_agents]
        missing = [a for a in self.agents if a not in names]
        if missing:
            raise ValueError(f"MPE world has no entities named {missing}")
        self._order = [names.index(a) for a in self.agents]
        self.has_collisions = any(world_agents[i].collide for i in self._order)

    def _bodies(self, env: ParallelEnv) -> list:
        world_agents = env.unwrapped.world.agents
        return [world_agents[i] for i in self._order]

    def positions(self, env: ParallelEnv) -> np.ndarray:
        """Positions ``[N, 2]``."""
        return np.stack([np.asarray(a.state.p_pos, np.float32) for a in self._bodies(env)])

    def collisions(self, env: ParallelEnv) -> np.ndarray:
        """Per agent, how many other colliding agents overlap it."""
        bodies = self._bodies(env)
        pos = np.stack([np.asarray(a.state.p_pos, np.float64) for a in bodies])
        size = np.array([a.size for a in bodies])
        collide = np.array([bool(a.collide) for a in bodies])
        dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        hit = (dist < size[:, None] + size[None, :]) & collide[:, None] & collide[None, :]
        np.fill_diagonal(hit, False)
        return hit.sum(axis=1).astype(np.float32)

    def positions_batch(self, envs: Sequence[ParallelEnv]) -> np.ndarray:
        """Positions of every env copy, ``[B, N, 2]`` float32, read in one pass (no per-copy numpy calls)."""
        return np.array([[a.state.p_pos for a in self._bodies(env)] for env in envs], np.float32).reshape(
            len(envs), len(self._order), self.position_dim
        )

    def collisions_batch(self, envs: Sequence[ParallelEnv]) -> np.ndarray:
        """:meth:`collisions` of every env copy, ``[B, N]`` float32, computed for all copies at once."""
        n = len(self._order)
        bodies = [self._bodies(env) for env in envs]
        pos = np.array([[a.state.p_pos for a in bs] for bs in bodies], np.float64).reshape(len(envs), n, 2)
        size = np.array([[a.size for a in bs] for bs in bodies], np.float64).reshape(len(envs), n)
        collide = np.array([[bool(a.collide) for a in bs] for bs in bodies], bool).reshape(len(envs), n)
        dist = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=-1)
        hit = (dist < size[:, :, None] + size[:, None, :]) & collide[:, :, None] & collide[:, None, :]
        hit[:, np.arange(n), np.arange(n)] = False
        return hit.sum(axis=2).astype(np.float32)


class VectorEnvAdapter(EnvAdapter):
    """The positions and collisions a vectorized env reports, read through its one-copy view.

    For :class:`~marlmesh.envs.vector.parallel.VectorParallelEnv` (what ``make_env`` gives for a vectorized plugin).

    Args:
        agents: The env's ``possible_agents``.
        env: A view (its ``unwrapped.vector`` is read).
    """

    def __init__(self, agents: Sequence[str], env: ParallelEnv) -> None:
        super().__init__(agents)
        vector = env.unwrapped.vector
        self.position_dim = int(vector.position_dim)
        self.has_positions = self.position_dim > 0
        self.has_collisions = bool(vector.has_collisions)

    def positions(self, env: ParallelEnv) -> np.ndarray | None:
        """Positions ``[N, D]`` of the view's copy."""
        pos = env.unwrapped.vector.positions()
        return None if pos is None else pos[:, 0]

    def collisions(self, env: ParallelEnv) -> np.ndarray:
        """Per agent, the collisions the last step reported."""
        return np.asarray(env.unwrapped.last_cost[:, 0], np.float32)


def adapter_for(env: ParallelEnv) -> EnvAdapter:
    """The richest adapter that fits ``env``."""
    agents = list(env.possible_agents)
    if hasattr(env.unwrapped, "vector"):
        return VectorEnvAdapter(agents, env)
    world = getattr(env.unwrapped, "world", None)
    if world is not None and hasattr(world, "agents"):
        try:
            return MPEAdapter(agents, env)
        except (AttributeError, ValueError):
            pass
    return EnvAdapter(agents)

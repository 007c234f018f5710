"""simple_spread, vectorized: N agents cover N landmarks and avoid each other (mpe2's ``simple_spread_v3``).

Same world (agents of size 0.15 that collide and are silent, landmarks of size 0.05, ``dim_c = 2``), same reset
draw (per copy, each agent's then each landmark's position uniform in ``[-1, 1]^2`` from the copy's generator, so
a copy seeded ``s`` starts where mpe2 seeded ``s`` starts), same observation layout
``[vel(2), pos(2), landmarks rel. (2 each), other agents rel. (2 each), their comm (2 each, always 0)]`` and same
reward ``(1 - local_ratio) * global + local_ratio * local`` (global: minus the sum over landmarks of the closest
agent's distance; local: minus the number of other agents an agent overlaps).

``obs_radius`` gives, natively, exactly what :class:`marlmesh.envs.partial_obs.RadiusObservation` gives for
mpe2's simple_spread: the slots of every landmark and other agent (with its comm) farther than the radius are 0,
and one visibility flag per landmark, then per other agent, is appended.
"""

from __future__ import annotations

import numpy as np

from marlmesh.envs.vector.mpe_env import MPEVectorEnv
from marlmesh.envs.vector.physics import WorldSpec, distances, norm2

AGENT_SIZE = 0.15
"""mpe2 simple_spread's agent radius."""

LANDMARK_SIZE = 0.05
"""mpe2's default entity radius (simple_spread's landmarks)."""

CAPTURE_RADIUS = 0.1
"""A landmark is covered when an agent is closer than this (mpe2's ``Scenario.CAPTURE_RADIUS``)."""


class SimpleSpread(MPEVectorEnv):
    """B copies of simple_spread.

    Args:
        num_envs: B.
        obs_radius: Visibility radius (``env.obs_radius``), or None for full observation.
        N: Agents (and landmarks).
        local_ratio: Weight of the local (collision) reward, in ``[0, 1]``.
        max_cycles: Steps per episode.
        continuous_actions: Box(0, 1, (5,)) actions instead of Discrete(5).
        terminate_on_success: End the episode (terminated) as soon as every landmark is covered.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        num_envs: int = 1,
        obs_radius: float | None = None,
        N: int = 3,  # noqa: N803 -- mpe2's keyword
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        terminate_on_success: bool = False,
    ) -> None:
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive int, got {N!r}")
        if not 0.0 <= local_ratio <= 1.0:
            raise ValueError(f"local_ratio is a proportion in [0, 1], got {local_ratio}")
        if obs_radius is not None and not obs_radius > 0:
            raise ValueError(f"obs_radius must be > 0, got {obs_radius}")
        self.n = N
        self.local_ratio = float(local_ratio)
        self.terminate_on_success = bool(terminate_on_success)
        self.obs_radius = None if obs_radius is None else float(obs_radius)
        # others[i]: the other agents in agent i's observation, in world order
        self._others = np.array([[j for j in range(N) if j != i] for i in range(N)], np.int64).reshape(N, N - 1)
        super().__init__(num_envs, max_cycles, continuous_actions)
        self.metadata = {"name": "simple_spread_v3"}

    def make_spec(self) -> WorldSpec:
        """N colliding, silent agents; N landmarks that neither move nor collide; a 2-word (unused) channel."""
        return WorldSpec.build(agent_size=[AGENT_SIZE] * self.n, landmark_size=[LANDMARK_SIZE] * self.n, dim_c=2)

    def reset_world(self, copies: np.ndarray) -> None:
        """Agents, then landmarks, uniform in ``[-1, 1]^2`` from each copy's generator; at rest, silent."""
        if len(copies) == 0:
            return
        state = self.world.state
        state.pos[copies] = self.world.uniform(copies, -1.0, 1.0, (2 * self.n, 2))
        state.vel[copies] = 0.0
        state.comm[copies] = 0.0

    def observation_flags(self, agent_index: int) -> int:
        """With ``obs_radius``: a flag per landmark and per other agent."""
        return 0 if self.obs_radius is None else 2 * self.n - 1

    def observe(self) -> list[np.ndarray]:
        """Every agent's observation (masked and flagged with ``obs_radius``)."""
        state, n = self.world.state, self.n
        b = self.num_envs
        pos = state.pos[:, :n]
        vel = state.vel[:, :n]
        marks = state.pos[:, n:]
        rel_marks = marks[:, None, :, :] - pos[:, :, None, :]  # [B, N, L, 2]
        rel_others = pos[:, self._others] - pos[:, :, None, :]  # [B, N, N-1, 2]
        comm = state.comm[:, self._others]  # [B, N, N-1, dim_c]
        parts = [vel, pos, rel_marks.reshape(b, n, -1), rel_others.reshape(b, n, -1), comm.reshape(b, n, -1)]
        if self.obs_radius is not None:
            seen_marks = norm2(rel_marks) <= self.obs_radius  # [B, N, L]
            seen_others = norm2(rel_others) <= self.obs_radius  # [B, N, N-1]
            parts[2] = (rel_marks * seen_marks[..., None]).reshape(b, n, -1)
            parts[3] = (rel_others * seen_others[..., None]).reshape(b, n, -1)
            parts[4] = (comm * seen_others[..., None]).reshape(b, n, -1)
            parts += [seen_marks, seen_others]
        return self.split_agents(np.concatenate(parts, axis=-1, dtype=np.float32))

    def terminal(self) -> np.ndarray:
        """With ``terminate_on_success``: every landmark has an agent within :data:`CAPTURE_RADIUS`."""
        if not self.terminate_on_success:
            return super().terminal()
        return (distances(self.world.landmark_pos, self.world.agent_pos).min(axis=2) < CAPTURE_RADIUS).all(axis=1)

    def rewards(self) -> np.ndarray:
        """``(1 - local_ratio) * global + local_ratio * local`` per copy and agent, ``[B, N]``."""
        pos, marks = self.world.agent_pos, self.world.landmark_pos
        global_reward = -distances(marks, pos).min(axis=2).sum(axis=1)  # [B]
        local = -self.step_overlaps.sum(axis=2).astype(np.float64)  # [B, N]
        return global_reward[:, None] * (1.0 - self.local_ratio) + local * self.local_ratio

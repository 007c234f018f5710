"""Cooperative pursuit with a vision radius: N learning predators chase scripted prey in a walled arena.

The world is the batched MPE physics (:mod:`~marlmesh.envs.vector.physics`) with mpe2 ``simple_tag``'s bodies:
predators have radius 0.075, acceleration 3.0 and top speed 1.0; prey radius 0.05, acceleration 4.0 and top speed
1.3, so a prey outruns any single predator and is caught by a team that corners it. Every body collides (mpe2
contact forces); optional obstacles are static discs of radius 0.2. The arena is the square ``[-1, 1]^2`` with
hard walls: after each physics step a body is clipped into the square (touching the wall) and its velocity into
the wall is zeroed (:meth:`PursuitEnv.apply_walls`; mpe2 has no walls, ``simple_tag`` instead penalises learned
prey for leaving).

Prey policy (fixed, deterministic): a prey flees the predators within ``prey_sight`` (all of them by default) by
accelerating at full force along ``sum_j (q - p_j) / |q - p_j|^2`` plus a repulsion ``wall_repulsion / d`` from
each wall at distance ``d`` that keeps it off the walls; with no predator in sight it brakes. It is caught by
being cornered: when predators approach from several sides, the repulsions cancel.

Observation of predator i (float32), in this order:

- own velocity (2), own absolute position (2);
- per prey: a visibility flag (1.0 when the prey is within ``vision_radius`` of the predator, else 0.0), the
  prey's position relative to the predator (2) and its velocity (2), all zeros when not seen (5 per prey);
- the other predators' positions relative to the predator (2 (N - 1)), always visible at any distance (the team
  knows where its members are; what it lacks is where the prey is);
- the obstacles' relative positions (2 per obstacle), always visible.

So a predator that does not see the prey can only learn where it is from a peer that does: with the default
``vision_radius`` the prey is in a given predator's sight in a minority of steps (see docs/tasks.md).

Team reward (the same for every predator, per step)::

    capture_reward * (number of predator-prey pairs in contact) - distance_weight * mean_i min_m |p_i - q_m|

The distance term is dense (a learner climbs it by approaching the prey, and every predator that does not know
where the prey is costs the team); contacts are mpe2's ``is_collision`` (distance below the sum of the radii).
Episodes never terminate and truncate after ``max_cycles`` steps (default 50: at top speed 1.0 a predator needs
about 20 steps to cross the arena, so 25 steps would leave no time to gather and corner a prey once found).

Reference settings (:mod:`marlmesh.experiments.pursuit_baselines`): ``shared_vision=True`` gives every predator
the prey whenever any predator sees it (what lossless, instantaneous communication can deliver);
``vision_radius=None`` shows every prey to everyone (full observability).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from marlmesh.envs.vector.base import VectorEnv, VectorStep
from marlmesh.envs.vector.physics import MOVE_DIM, MOVES, VectorWorld, WorldSpec, distances, overlaps

PREDATOR_SIZE, PREDATOR_ACCEL, PREDATOR_MAX_SPEED = 0.075, 3.0, 1.0
"""mpe2 simple_tag's adversaries."""
PREY_SIZE, PREY_ACCEL, PREY_MAX_SPEED = 0.05, 4.0, 1.3
"""mpe2 simple_tag's good agents."""
OBSTACLE_SIZE = 0.2
"""mpe2 simple_tag's landmarks."""
ARENA = 1.0
"""Half side of the walled square arena."""
DEFAULT_VISION_RADIUS = 0.5
"""How far a predator sees prey by default (chosen so that communication matters; docs/tasks.md)."""

_UNSET: Any = object()


class PursuitEnv(VectorEnv):
    """B copies of the pursuit task (see the module docstring).

    Args:
        num_envs: B.
        obs_radius: ``env.obs_radius``: the same as ``vision_radius`` (either may be given; both only if equal).
        N: Number of predators (the learning agents), >= 2.
        num_prey: Number of scripted prey, >= 1.
        num_obstacles: Number of static obstacles.
        vision_radius: How far a predator sees prey; None: everywhere (the full-observability reference).
        shared_vision: Every predator sees a prey that any predator sees (the perfect-communication reference).
        prey_sight: How far a prey sees predators; None: everywhere.
        max_cycles: Episode length.
        capture_reward: Team reward per predator-prey pair in contact, per step.
        distance_weight: Weight of the mean predator-to-nearest-prey distance, subtracted per step.
        wall_repulsion: Strength of the prey's repulsion from the walls.
        prey_max_speed: Prey top speed.
        prey_accel: Prey acceleration.
        continuous_actions: ``Box(0, 1, (5,))`` actions (force ``(a2 - a1, a4 - a3)``) instead of ``Discrete(5)``.

    Raises:
        ValueError: For a bad count, radius or horizon, or ``obs_radius`` and ``vision_radius`` that disagree.
    """

    position_dim = 2
    has_collisions = True

    def __init__(
        self,
        num_envs: int = 1,
        obs_radius: float | None = None,
        *,
        N: int = 3,  # noqa: N803 -- mpe2's kwarg name
        num_prey: int = 1,
        num_obstacles: int = 0,
        vision_radius: float | None = _UNSET,
        shared_vision: bool = False,
        prey_sight: float | None = None,
        max_cycles: int = 50,
        capture_reward: float = 10.0,
        distance_weight: float = 1.0,
        wall_repulsion: float = 0.1,
        prey_max_speed: float = PREY_MAX_SPEED,
        prey_accel: float = PREY_ACCEL,
        continuous_actions: bool = False,
    ) -> None:
        if vision_radius is _UNSET:
            vision_radius = DEFAULT_VISION_RADIUS if obs_radius is None else obs_radius
        elif obs_radius is not None and obs_radius != vision_radius:
            raise ValueError(
                f"pursuit: env.obs_radius={obs_radius} and env.kwargs.vision_radius={vision_radius} disagree "
                "(they are the same setting; give one)"
            )
        if N < 2:
            raise ValueError(f"pursuit: env.kwargs.N must be >= 2 predators, got {N}")
        if num_prey < 1:
            raise ValueError(f"pursuit: env.kwargs.num_prey must be >= 1, got {num_prey}")
        if num_obstacles < 0:
            raise ValueError(f"pursuit: env.kwargs.num_obstacles must be >= 0, got {num_obstacles}")
        if max_cycles < 1:
            raise ValueError(f"pursuit: env.kwargs.max_cycles must be >= 1, got {max_cycles}")
        for key, value in (("vision_radius", vision_radius), ("prey_sight", prey_sight)):
            if value is not None and not value > 0:
                raise ValueError(f"pursuit: env.kwargs.{key} must be > 0 or null, got {value}")
        self.n, self.num_prey, self.num_obstacles = int(N), int(num_prey), int(num_obstacles)
        self.vision_radius = None if vision_radius is None else float(vision_radius)
        self.shared_vision = bool(shared_vision)
        self.prey_sight = None if prey_sight is None else float(prey_sight)
        self.max_cycles = int(max_cycles)
        self.capture_reward = float(capture_reward)
        self.distance_weight = float(distance_weight)
        self.wall_repulsion = float(wall_repulsion)
        self.continuous = bool(continuous_actions)
        n, m = self.n, self.num_prey
        spec = WorldSpec.build(
            agent_size=[PREDATOR_SIZE] * n + [PREY_SIZE] * m,
            landmark_size=[OBSTACLE_SIZE] * self.num_obstacles,
            landmark_collide=True,
            max_speed=[PREDATOR_MAX_SPEED] * n + [float(prey_max_speed)] * m + [None] * self.num_obstacles,
            accel=[PREDATOR_ACCEL] * n + [float(prey_accel)] * m,
        )
        self.num_envs = int(num_envs)
        self.world = VectorWorld(spec, self.num_envs)
        self.possible_agents = [f"predator_{i}" for i in range(n)]
        self.metadata = {"name": "pursuit"}
        self.obs_dim = 4 + 5 * m + 2 * (n - 1) + 2 * self.num_obstacles
        self._obs_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self._act_space = (
            spaces.Box(0.0, 1.0, (MOVE_DIM,), np.float32) if self.continuous else spaces.Discrete(MOVE_DIM)
        )
        self.t = np.zeros(self.num_envs, np.int64)

    # -- spaces ---------------------------------------------------------------------------------------------

    def observation_space(self, agent: str) -> spaces.Space:
        """``Box(-inf, inf, (4 + 5 M + 2 (N - 1) + 2 O,))`` for every predator."""
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        """``Discrete(5)`` (mpe2's moves) or ``Box(0, 1, (5,))`` with ``continuous_actions``."""
        return self._act_space

    # -- views of the state ---------------------------------------------------------------------------------

    @property
    def predator_pos(self) -> np.ndarray:
        """``[B, N, 2]``."""
        return self.world.state.pos[:, : self.n]

    @property
    def prey_pos(self) -> np.ndarray:
        """``[B, M, 2]``."""
        return self.world.state.pos[:, self.n : self.n + self.num_prey]

    def sees_prey(self) -> np.ndarray:
        """``[B, N, M]`` bool: predator i is shown prey m (within ``vision_radius``; shared with ``shared_vision``)."""
        if self.vision_radius is None:
            return np.ones((self.num_envs, self.n, self.num_prey), bool)
        seen = distances(self.predator_pos, self.prey_pos) <= self.vision_radius
        if self.shared_vision:
            seen = np.broadcast_to(seen.any(axis=1, keepdims=True), seen.shape).copy()
        return seen

    def contacts(self) -> np.ndarray:
        """``[B, N, M]`` bool: predator i touches prey m (mpe2's ``is_collision``)."""
        return distances(self.predator_pos, self.prey_pos) < PREDATOR_SIZE + PREY_SIZE

    def positions(self) -> np.ndarray:
        """``[N, B, 2]`` float32 predator positions."""
        return np.ascontiguousarray(self.predator_pos.transpose(1, 0, 2), dtype=np.float32)

    # -- API ------------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Reset every copy (copy ``b`` seeded with ``seed + b``; None continues each copy's generator)."""
        if seed is not None:
            self.world.seed(seed)
        return self.reset_copies(np.ones(self.num_envs, bool))

    def reset_copies(self, copies: np.ndarray) -> list[np.ndarray]:
        """Reset the copies where ``copies`` is True: bodies uniform in ``[-1, 1]^2``, obstacles in ``[-0.9, 0.9]^2``.

        Each copy draws from its own generator, agents (predators, then prey) first, then obstacles.
        """
        idx = np.flatnonzero(copies)
        if idx.size:
            a = self.n + self.num_prey
            state = self.world.state
            state.pos[idx, :a] = self.world.uniform(idx, -ARENA, ARENA, (a, 2))
            if self.num_obstacles:
                state.pos[idx, a:] = self.world.uniform(idx, -0.9, 0.9, (self.num_obstacles, 2))
            state.vel[idx] = 0.0
            self.t[idx] = 0
        return self.observations()

    def step(self, actions: Sequence[np.ndarray]) -> VectorStep:
        """Step every copy: predators' moves, the prey's flight, physics, walls; then rewards and observations."""
        b, n = self.num_envs, self.n
        spec = self.world.spec
        u = np.zeros((b, spec.num_agents, 2))
        if self.continuous:
            act = np.stack([np.asarray(x, np.float64).reshape(b, MOVE_DIM) for x in actions], axis=1)
            u[:, :n] = np.stack([act[..., 2] - act[..., 1], act[..., 4] - act[..., 3]], axis=-1)
        else:
            u[:, :n] = MOVES[np.stack([np.asarray(x, np.int64).reshape(b) for x in actions], axis=1) % MOVE_DIM]
        u[:, n:] = self.prey_direction()
        u *= spec.accel[None, :, None]
        self.world.step(u)
        self.apply_walls()
        self.t += 1
        team = self.team_reward()
        reward = np.broadcast_to(team[None, :], (n, b)).astype(np.float32)
        truncated = np.broadcast_to((self.t >= self.max_cycles)[None, :], (n, b)).copy()
        return VectorStep(
            obs=self.observations(),
            reward=reward,
            terminated=np.zeros((n, b), bool),
            truncated=truncated,
            cost=self.collision_cost(),
            positions=self.positions(),
        )

    # -- task logic -----------------------------------------------------------------------------------------

    def prey_direction(self) -> np.ndarray:
        """``[B, M, 2]`` each prey's control (norm <= 1): flee the predators it sees, off the walls; else brake."""
        q = self.prey_pos
        delta = q[:, :, None, :] - self.predator_pos[:, None, :, :]  # [B, M, N, 2]
        dist2 = np.maximum(np.sum(np.square(delta), axis=-1), 1e-6)
        weight = 1.0 / dist2
        if self.prey_sight is not None:
            weight = np.where(dist2 <= self.prey_sight**2, weight, 0.0)
        flee = np.sum(delta * weight[..., None], axis=2)
        wall = self.wall_repulsion * (
            1.0 / np.maximum(ARENA + q, 1e-3) - 1.0 / np.maximum(ARENA - q, 1e-3)
        )  # pushes away from the nearer wall on each axis
        fleeing = weight.any(axis=2)[..., None]
        direction = flee + wall
        norm = np.sqrt(np.sum(np.square(direction), axis=-1, keepdims=True))
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.where(norm > 1e-9, direction / norm, 0.0)
        # no predator in sight: brake (a force against the velocity, at most what stops the prey)
        vel = self.world.state.vel[:, self.n : self.n + self.num_prey]
        spec = self.world.spec
        brake = -vel * (1 - spec.damping) / (spec.dt * spec.accel[None, self.n :, None])
        speed = np.sqrt(np.sum(np.square(brake), axis=-1, keepdims=True))
        brake = np.where(speed > 1.0, brake / np.maximum(speed, 1e-9), brake)
        return np.where(fleeing, unit, brake)

    def apply_walls(self) -> None:
        """Keep every moving body inside the arena: clip its centre and zero its velocity into the wall.

        Body ``i`` of radius ``s_i`` is kept within ``ARENA - s_i - 1e-6 i`` of the centre on each axis (touching
        the wall; the tiny per-body offset keeps two bodies pushed into the same corner from sharing a point,
        where mpe2's contact force is undefined).
        """
        spec = self.world.spec
        a = spec.num_agents
        bound = (ARENA - spec.size[:a] - 1e-6 * np.arange(a))[None, :, None]
        pos, vel = self.world.state.pos[:, :a], self.world.state.vel[:, :a]
        vel[((pos > bound) & (vel > 0)) | ((pos < -bound) & (vel < 0))] = 0.0
        self.world.state.pos[:, :a] = np.clip(pos, -bound, bound)

    def team_reward(self) -> np.ndarray:
        """``[B]``: capture reward per predator-prey contact minus the weighted mean predator-to-prey distance."""
        d = distances(self.predator_pos, self.prey_pos)  # [B, N, M]
        touching = (d < PREDATOR_SIZE + PREY_SIZE).sum(axis=(1, 2))
        return self.capture_reward * touching - self.distance_weight * d.min(axis=2).mean(axis=1)

    def collision_cost(self) -> np.ndarray:
        """``[N, B]`` float32: how many other predators each predator overlaps."""
        size = np.full(self.n, PREDATOR_SIZE)
        hit = overlaps(self.predator_pos, size, np.ones(self.n, bool))
        return hit.sum(axis=2).T.astype(np.float32)

    def observations(self) -> list[np.ndarray]:
        """Per predator ``[B, obs_dim]`` float32 (layout in the module docstring)."""
        state, n, m = self.world.state, self.n, self.num_prey
        pred, prey = self.predator_pos, self.prey_pos
        seen = self.sees_prey()  # [B, N, M]
        rel_prey = prey[:, None, :, :] - pred[:, :, None, :]  # [B, N, M, 2]
        prey_vel = np.broadcast_to(state.vel[:, None, n : n + m], rel_prey.shape)
        block = np.concatenate([seen[..., None].astype(np.float64), rel_prey, prey_vel], axis=-1)
        block = np.where(seen[..., None], block, 0.0).reshape(self.num_envs, n, 5 * m)
        rel_peers = pred[:, None, :, :] - pred[:, :, None, :]  # [B, i, j, 2]: p_j - p_i
        others = ~np.eye(n, dtype=bool)
        peers = rel_peers[:, others].reshape(self.num_envs, n, 2 * (n - 1))
        parts = [state.vel[:, :n], pred, block, peers]
        if self.num_obstacles:
            obstacles = state.pos[:, None, n + m :, :] - pred[:, :, None, :]
            parts.append(obstacles.reshape(self.num_envs, n, 2 * self.num_obstacles))
        obs = np.concatenate(parts, axis=-1).astype(np.float32)
        return [obs[:, i] for i in range(n)]


def pursuit(num_envs: int = 1, obs_radius: float | None = None, **kwargs: Any) -> PursuitEnv:
    """The ``marlmesh.pursuit`` env plugin: :class:`PursuitEnv` with ``env.kwargs``."""
    return PursuitEnv(num_envs, obs_radius, **kwargs)


pursuit.vectorized = True  # type: ignore[attr-defined]

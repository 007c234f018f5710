"""A batched MPE world: B copies of the same entities stepped at once with mpe2's physics (numpy only).

The semantics follow mpe2's ``_mpe_utils/core.py`` (``World.step``) and ``simple_env.py`` (``_set_action``)
exactly, with the per-entity Python loops replaced by array operations over ``[B, E, ...]``:

- Entities ``0 .. A-1`` are the agents (``world.agents`` order), ``A .. E-1`` the landmarks.
- Action force: a movable agent's control ``u`` (discrete move ``k`` of ``[no-op, -x, +x, -y, +y]``, or the
  continuous ``(a[2] - a[1], a[4] - a[3])``), times its sensitivity (``accel``, 5.0 when unset). No motor noise.
- Contact force between two colliding entities ``i != j``: ``contact_force * (p_i - p_j) / |p_i - p_j| *
  k * log(1 + exp(-(|p_i - p_j| - (size_i + size_j)) / k))`` with ``k = contact_margin`` (a softplus
  penetration), applied to each entity that is movable.
- Integration (movable entities only): ``p += v * dt``; ``v *= 1 - damping``; ``v += F / mass * dt``; then the
  speed is clipped to ``max_speed`` where one is set.
- Communication state: a silent agent's ``c`` is zeros, otherwise the action's ``c`` (no noise).

Positions and velocities are float64, as in mpe2. The only differences from mpe2 are floating-point summation
order (forces are summed per entity in one reduction), far below the 1e-5 the equivalence test checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_SENSITIVITY = 5.0
"""mpe2's action force scale of an agent without ``accel``."""

MOVE_DIM = 5
"""Discrete moves of a movable agent: ``[no-op, -x, +x, -y, +y]`` (mpe2's ``dim_p * 2 + 1``)."""

MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
"""Unit force direction of each discrete move."""


@dataclass(frozen=True, eq=False)
class WorldSpec:
    """The static description of one MPE world (the same in every copy; compared by identity).

    Attributes:
        num_agents: A; entities ``0 .. A-1`` are agents.
        size: ``[E]`` radius of every entity (agents first, then landmarks).
        movable: ``[E]`` bool.
        collide: ``[E]`` bool.
        mass: ``[E]``.
        max_speed: ``[E]``; ``inf`` where mpe2 has ``None``.
        accel: ``[A]`` action sensitivity of each agent (mpe2's ``accel``, or 5.0 when it is ``None``).
        silent: ``[A]`` bool: the agent cannot communicate.
        dim_c: Communication channel dimension (0: none).
        dt: Time step.
        damping: Velocity damping per step.
        contact_force: Contact force scale.
        contact_margin: Softness ``k`` of the contact penetration.
    """

    num_agents: int
    size: np.ndarray
    movable: np.ndarray
    collide: np.ndarray
    mass: np.ndarray
    max_speed: np.ndarray
    accel: np.ndarray
    silent: np.ndarray
    dim_c: int = 0
    dt: float = 0.1
    damping: float = 0.25
    contact_force: float = 1e2
    contact_margin: float = 1e-3
    _colliders: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        e, a = len(self.size), self.num_agents
        for name in ("movable", "collide", "mass", "max_speed"):
            if len(getattr(self, name)) != e:
                raise ValueError(f"WorldSpec.{name} has {len(getattr(self, name))} entries, size has {e}")
        for name in ("accel", "silent"):
            if len(getattr(self, name)) != a:
                raise ValueError(f"WorldSpec.{name} has {len(getattr(self, name))} entries for {a} agents")
        if not 0 < a <= e:
            raise ValueError(f"WorldSpec needs 1 <= num_agents <= entities, got {a} of {e}")
        object.__setattr__(self, "_colliders", np.flatnonzero(self.collide))

    @classmethod
    def build(
        cls,
        agent_size: Sequence[float],
        landmark_size: Sequence[float],
        *,
        agent_collide: Sequence[bool] | bool = True,
        landmark_collide: Sequence[bool] | bool = False,
        agent_movable: Sequence[bool] | bool = True,
        landmark_movable: Sequence[bool] | bool = False,
        mass: Sequence[float] | float = 1.0,
        max_speed: Sequence[float | None] | float | None = None,
        accel: Sequence[float | None] | float | None = None,
        silent: Sequence[bool] | bool = True,
        dim_c: int = 0,
        **physics: float,
    ) -> WorldSpec:
        """A spec from per-kind properties (scalars broadcast; ``None`` speeds/accels mean mpe2's unset)."""
        a, lm = len(agent_size), len(landmark_size)
        e = a + lm

        def per(values: object, n: int, dtype: type) -> np.ndarray:
            arr = np.asarray(values if np.ndim(values) else [values] * n, dtype=object)
            if len(arr) != n:
                raise ValueError(f"expected {n} values, got {len(arr)}")
            return arr.astype(dtype)

        speeds = per(max_speed, e, object)
        accels = per(accel, a, object)
        return cls(
            num_agents=a,
            size=np.concatenate([per(agent_size, a, float), per(landmark_size, lm, float)]),
            movable=np.concatenate([per(agent_movable, a, bool), per(landmark_movable, lm, bool)]),
            collide=np.concatenate([per(agent_collide, a, bool), per(landmark_collide, lm, bool)]),
            mass=per(mass, e, float),
            max_speed=np.array([np.inf if s is None else float(s) for s in speeds]),
            accel=np.array([DEFAULT_SENSITIVITY if x is None else float(x) for x in accels]),
            silent=per(silent, a, bool),
            dim_c=int(dim_c),
            **physics,
        )

    @property
    def num_entities(self) -> int:
        """E (agents and landmarks)."""
        return len(self.size)

    @property
    def colliders(self) -> np.ndarray:
        """Indices of the entities that collide."""
        return self._colliders


@dataclass
class WorldState:
    """The mutable state of B copies.

    Attributes:
        pos: ``[B, E, 2]`` float64 positions.
        vel: ``[B, E, 2]`` float64 velocities.
        comm: ``[B, A, dim_c]`` float64 communication state of the agents.
    """

    pos: np.ndarray
    vel: np.ndarray
    comm: np.ndarray

    @classmethod
    def zeros(cls, spec: WorldSpec, num_envs: int) -> WorldState:
        """All entities at the origin, at rest, silent."""
        e = spec.num_entities
        return cls(
            pos=np.zeros((num_envs, e, 2)),
            vel=np.zeros((num_envs, e, 2)),
            comm=np.zeros((num_envs, spec.num_agents, spec.dim_c)),
        )


def norm2(delta: np.ndarray) -> np.ndarray:
    """Euclidean length over the last axis of 2-D vectors ``[..., 2]`` (mpe2's ``sqrt(sum(square(d)))``, same bits)."""
    x, y = delta[..., 0], delta[..., 1]
    return np.sqrt(x * x + y * y)


def discrete_move_force(moves: np.ndarray, spec: WorldSpec) -> np.ndarray:
    """The control force ``[B, A, 2]`` of discrete moves ``[B, A]`` (ints in ``0 .. 4``), scaled by ``accel``."""
    return MOVES[moves] * spec.accel[None, :, None]


def continuous_move_force(actions: np.ndarray, spec: WorldSpec) -> np.ndarray:
    """The control force ``[B, A, 2]`` of continuous move actions ``[B, A, 5]``: ``(a2 - a1, a4 - a3) * accel``."""
    actions = np.asarray(actions, np.float64)
    u = np.stack([actions[..., 2] - actions[..., 1], actions[..., 4] - actions[..., 3]], axis=-1)
    return u * spec.accel[None, :, None]


def decode_actions(actions: Sequence[np.ndarray], spec: WorldSpec, continuous: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split per-agent actions into control forces and communication, as mpe2's ``_set_action`` does.

    Args:
        actions: Per agent ``[B]`` ints (discrete: ``move + 5 * word`` for a movable agent that speaks, ``move``
            for a silent one, ``word`` for an immobile speaker) or ``[B, dim]`` floats (continuous: the 5 move
            entries, then ``dim_c`` message entries, for what the agent has).
        spec: The world.
        continuous: The action spaces are Boxes.

    Returns:
        ``u`` ``[B, A, 2]`` (zeros for immobile agents) and ``c`` ``[B, A, dim_c]`` (zeros for silent agents;
        a one-hot word in the discrete case).
    """
    a = spec.num_agents
    b = len(actions[0])
    if spec.movable[:a].all() and spec.silent.all():  # fast path: every agent moves and none speaks
        joint = np.stack([np.asarray(x) for x in actions], axis=1)
        if continuous:
            u = continuous_move_force(joint.reshape(b, a, -1)[..., :MOVE_DIM], spec)
        else:
            u = discrete_move_force(joint.astype(np.int64).reshape(b, a) % MOVE_DIM, spec)
        return u, np.zeros((b, a, spec.dim_c))
    u = np.zeros((b, a, 2))
    c = np.zeros((b, a, spec.dim_c))
    for i in range(a):
        act = np.asarray(actions[i])
        movable, speaks = bool(spec.movable[i]), not bool(spec.silent[i])
        if continuous:
            act = act.astype(np.float64).reshape(b, -1)
            if movable:
                u[:, i] = np.stack([act[:, 2] - act[:, 1], act[:, 4] - act[:, 3]], axis=-1) * spec.accel[i]
                act = act[:, MOVE_DIM:]
            if speaks:
                c[:, i] = act[:, : spec.dim_c]
        else:
            act = act.astype(np.int64).reshape(b)
            if movable:
                u[:, i] = MOVES[act % MOVE_DIM] * spec.accel[i]
                act = act // MOVE_DIM
            if speaks:
                c[np.arange(b), i, act] = 1.0
    return u, c


def contact_forces(pos: np.ndarray, spec: WorldSpec) -> np.ndarray:
    """The summed contact force on every entity, ``[B, E, 2]`` (zeros for entities that do not collide).

    The force is computed on every ordered pair of distinct colliding entities (mpe2 computes each unordered
    pair once and applies it with opposite signs: the same values).
    """
    force = np.zeros_like(pos)
    idx = spec.colliders
    if len(idx) < 2:
        return force
    p = pos[:, idx]
    delta = p[:, :, None, :] - p[:, None, :, :]  # [B, C, C, 2]: p_i - p_j
    dist = norm2(delta)  # [B, C, C]
    size = spec.size[idx]
    dist_min = size[:, None] + size[None, :]
    k = spec.contact_margin
    penetration = np.logaddexp(0, -(dist - dist_min) / k) * k
    c = len(idx)
    off_diag = ~np.eye(c, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(off_diag, spec.contact_force * penetration / dist, 0.0)
    force[:, idx] = np.sum(delta * scale[..., None], axis=2)
    return force


def integrate(state: WorldState, force: np.ndarray, spec: WorldSpec) -> None:
    """Advance positions and velocities of the movable entities by one ``dt`` under ``force`` ``[B, E, 2]``."""
    mov = spec.movable
    if not mov.any():
        return
    pos, vel = state.pos[:, mov], state.vel[:, mov]
    pos += vel * spec.dt
    vel = vel * (1 - spec.damping) + (force[:, mov] / spec.mass[mov][None, :, None]) * spec.dt
    max_speed = spec.max_speed[mov]
    if np.isfinite(max_speed).any():
        speed = norm2(vel)
        over = speed > max_speed[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            clipped = vel / speed[..., None] * max_speed[None, :, None]
        vel = np.where(over[..., None], clipped, vel)
    state.pos[:, mov] = pos
    state.vel[:, mov] = vel


def step_world(state: WorldState, u: np.ndarray, c: np.ndarray | None, spec: WorldSpec) -> None:
    """One mpe2 ``World.step`` of every copy, in place.

    Args:
        state: The copies' state (updated).
        u: ``[B, A, 2]`` control forces (already scaled by the agents' sensitivity; ignored for immobile agents).
        c: ``[B, A, dim_c]`` communication actions, or None for none.
        spec: The world.
    """
    force = contact_forces(state.pos, spec)
    a = spec.num_agents
    force[:, :a] += np.where(spec.movable[:a][None, :, None], u, 0.0)
    integrate(state, force, spec)
    if spec.dim_c:
        if c is None:
            state.comm[:] = 0.0
        else:
            state.comm[:] = np.where(spec.silent[None, :, None], 0.0, c)


def overlaps(pos: np.ndarray, size: np.ndarray, collide: np.ndarray) -> np.ndarray:
    """Which pairs of the given bodies overlap: ``[B, K, K]`` bool (``dist < size_i + size_j``, both collide).

    Args:
        pos: ``[B, K, 2]`` positions of K bodies (e.g. the agents).
        size: ``[K]`` radii.
        collide: ``[K]`` bool.
    """
    delta = pos[:, :, None, :] - pos[:, None, :, :]
    dist = norm2(delta)
    hit = dist < (size[:, None] + size[None, :])
    k = len(size)
    hit &= (collide[:, None] & collide[None, :] & ~np.eye(k, dtype=bool))[None]
    return hit


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[B, K, L]`` between bodies ``a`` ``[B, K, 2]`` and ``b`` ``[B, L, 2]``."""
    delta = a[:, :, None, :] - b[:, None, :, :]
    return norm2(delta)


@dataclass
class VectorWorld:
    """B copies of one MPE world: a spec, a state, and the per-copy random generators of the resets.

    Copy ``b``'s generator is ``numpy.random.default_rng``-compatible (``gymnasium.utils.seeding.np_random``,
    as mpe2 seeds it), so a scenario that draws its reset the way mpe2's does gets the same initial state as
    mpe2 for the same seed.

    Args:
        spec: The world.
        num_envs: B.
    """

    spec: WorldSpec
    num_envs: int
    state: WorldState = field(init=False)
    rngs: list[np.random.Generator] = field(init=False)

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        self.state = WorldState.zeros(self.spec, self.num_envs)
        self.rngs = [np.random.default_rng() for _ in range(self.num_envs)]

    def seed(self, seed: int | None, copies: np.ndarray | None = None) -> None:
        """Reseed copies (all by default): copy ``b`` with ``seed + b`` (None: fresh entropy), as mpe2's reset does."""
        from gymnasium.utils import seeding

        for b in range(self.num_envs) if copies is None else copies:
            self.rngs[b] = seeding.np_random(None if seed is None else seed + int(b))[0]

    def uniform(self, copies: np.ndarray, low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
        """``[len(copies), *shape]`` uniform draws, copy ``b``'s from its own generator (one call per copy, in order).

        One ``Generator.uniform(low, high, shape)`` call consumes the stream as the same number of consecutive
        scalar or per-row draws would, so a scenario that draws row by row in mpe2 gets the same numbers.
        """
        return np.stack([self.rngs[int(b)].uniform(low, high, shape) for b in copies]).reshape(len(copies), *shape)

    def step(self, u: np.ndarray, c: np.ndarray | None = None) -> None:
        """One world step of every copy (see :func:`step_world`)."""
        step_world(self.state, u, c, self.spec)

    @property
    def agent_pos(self) -> np.ndarray:
        """``[B, A, 2]`` agent positions (a view)."""
        return self.state.pos[:, : self.spec.num_agents]

    @property
    def landmark_pos(self) -> np.ndarray:
        """``[B, E - A, 2]`` landmark positions (a view)."""
        return self.state.pos[:, self.spec.num_agents :]

    def agent_overlaps(self) -> np.ndarray:
        """``[B, A, A]`` pairs of distinct colliding agents whose discs overlap (mpe2's ``is_collision``)."""
        a = self.spec.num_agents
        return overlaps(self.agent_pos, self.spec.size[:a], self.spec.collide[:a])

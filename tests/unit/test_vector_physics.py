"""The batched MPE world steps exactly like mpe2's ``World.step`` (forces, contacts, damping, speed limit, comm)."""

from __future__ import annotations

import numpy as np
import pytest
from mpe2._mpe_utils.core import Agent, Landmark, World

from marlmesh.envs.vector.base import AutoresetStep, VectorEnv, VectorStep, is_vectorized
from marlmesh.envs.vector.physics import (
    WorldSpec,
    WorldState,
    contact_forces,
    decode_actions,
    overlaps,
    step_world,
)


def _mpe_world(spec: WorldSpec) -> World:
    world = World()
    world.dim_c = spec.dim_c
    world.agents = [Agent() for _ in range(spec.num_agents)]
    world.landmarks = [Landmark() for _ in range(spec.num_entities - spec.num_agents)]
    for e, body in enumerate(world.entities):
        body.size = float(spec.size[e])
        body.movable = bool(spec.movable[e])
        body.collide = bool(spec.collide[e])
        body.initial_mass = float(spec.mass[e])
        body.max_speed = None if np.isinf(spec.max_speed[e]) else float(spec.max_speed[e])
    for i, agent in enumerate(world.agents):
        agent.accel = float(spec.accel[i])
        agent.silent = bool(spec.silent[i])
    return world


def _load(world: World, state: WorldState, b: int) -> None:
    for e, body in enumerate(world.entities):
        body.state.p_pos = state.pos[b, e].copy()
        body.state.p_vel = state.vel[b, e].copy()


def _mixed_spec() -> WorldSpec:
    # 4 agents (one immobile speaker, one with a speed limit, different masses), 3 landmarks (one colliding,
    # one movable), a 3-word channel
    return WorldSpec.build(
        agent_size=[0.15, 0.1, 0.075, 0.2],
        landmark_size=[0.05, 0.2, 0.1],
        agent_movable=[True, True, True, False],
        landmark_movable=[False, True, False],
        landmark_collide=[False, True, True],
        mass=[1.0, 2.0, 1.0, 1.0, 1.0, 3.0, 1.0],
        max_speed=[None, 0.4, None, None, None, None, None],
        accel=[None, 3.0, None, None],
        silent=[True, False, True, False],
        dim_c=3,
    )


def test_step_matches_mpe2_world_with_contacts_speed_limit_and_comm() -> None:
    spec = _mixed_spec()
    b = 16
    rng = np.random.default_rng(0)
    state = WorldState.zeros(spec, b)
    # a crowded box so that many pairs are in contact
    state.pos[:] = rng.uniform(-0.3, 0.3, state.pos.shape)
    state.vel[:] = rng.uniform(-0.5, 0.5, state.vel.shape)
    state.vel[:, ~spec.movable] = 0.0
    worlds = [_mpe_world(spec) for _ in range(b)]
    for copy, world in enumerate(worlds):
        _load(world, state, copy)
    for _ in range(20):
        u = rng.uniform(-5, 5, (b, spec.num_agents, 2))
        c = rng.uniform(0, 1, (b, spec.num_agents, spec.dim_c))
        step_world(state, u, c, spec)
        for copy, world in enumerate(worlds):
            for i, agent in enumerate(world.agents):
                agent.action.u = u[copy, i].copy()
                agent.action.c = c[copy, i].copy()
            world.step()
            np.testing.assert_allclose(state.pos[copy], [e.state.p_pos for e in world.entities], atol=1e-9)
            np.testing.assert_allclose(state.vel[copy], [e.state.p_vel for e in world.entities], atol=1e-9)
            np.testing.assert_allclose(state.comm[copy], [a.state.c for a in world.agents], atol=0)
    # the speed limit was reached and the immobile entities never moved
    assert np.linalg.norm(state.vel[:, 1], axis=-1).max() == pytest.approx(0.4)
    assert np.all(state.vel[:, ~spec.movable] == 0.0)


def test_contact_force_is_the_softplus_penetration_along_the_centre_line() -> None:
    spec = WorldSpec.build(agent_size=[0.15, 0.15], landmark_size=[0.05])
    pos = np.array([[[0.0, 0.0], [0.2, 0.0], [0.0, 0.0]]])  # agents 0.1 inside each other; landmark ignored
    force = contact_forces(pos, spec)
    expected = 1e2 * 1e-3 * np.logaddexp(0, 0.1 / 1e-3)  # ~ contact_force * penetration depth
    np.testing.assert_allclose(force[0, 0], [-expected, 0.0])
    np.testing.assert_allclose(force[0, 1], [expected, 0.0])
    np.testing.assert_array_equal(force[0, 2], [0.0, 0.0])


def test_decode_actions_follows_mpe2_set_action() -> None:
    spec = _mixed_spec()
    # discrete: movable speaker agent 1 (Discrete(5 * 3)): move 4 (+y), word 2; immobile speaker 3: word 1
    u, c = decode_actions([np.array([1]), np.array([4 + 5 * 2]), np.array([3]), np.array([1])], spec, False)
    np.testing.assert_array_equal(u[0], [[-5, 0], [0, 3], [0, -5], [0, 0]])
    np.testing.assert_array_equal(c[0], [[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]])
    # continuous: (a2 - a1, a4 - a3) * accel, then the message entries
    acts = [
        np.array([[0, 0.2, 0.5, 0.1, 0.4]]),
        np.array([[0, 0.0, 1.0, 0.0, 0.0, 0.1, 0.2, 0.3]]),
        np.array([[0.3, 0, 0, 0, 0]]),
        np.array([[0.7, 0.8, 0.9]]),
    ]
    u, c = decode_actions(acts, spec, True)
    np.testing.assert_allclose(u[0], [[1.5, 1.5], [3, 0], [0, 0], [0, 0]])
    np.testing.assert_allclose(c[0], [[0, 0, 0], [0.1, 0.2, 0.3], [0, 0, 0], [0.7, 0.8, 0.9]])
    # fast path (every agent movable and silent): the same mapping
    plain = WorldSpec.build(agent_size=[0.15] * 3, landmark_size=[0.05] * 3)
    u, _ = decode_actions([np.array([0, 2]), np.array([3, 4]), np.array([1, 0])], plain, False)
    np.testing.assert_array_equal(u[:, :, :], [[[0, 0], [0, -5], [-5, 0]], [[5, 0], [0, 5], [0, 0]]])


def test_overlaps_are_distinct_colliding_pairs() -> None:
    pos = np.array([[[0.0, 0.0], [0.25, 0.0], [0.0, 0.29], [3.0, 3.0]]])
    hit = overlaps(pos, np.full(4, 0.15), np.array([True, True, False, True]))
    assert hit[0].sum(axis=1).tolist() == [1, 1, 0, 0]


def test_spec_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="expected 2 values"):
        WorldSpec.build(agent_size=[0.1, 0.1], landmark_size=[], silent=[True])


class _Counter(VectorEnv):
    """A two-agent toy: obs is the step count; agent 1 terminates in copies whose count reaches their limit."""

    possible_agents = ["a", "b"]  # noqa: RUF012

    def __init__(self, limits: list[int]) -> None:
        self.num_envs = len(limits)
        self.limits = np.array(limits)
        self.t = np.zeros(self.num_envs)

    def observation_space(self, agent):  # pragma: no cover - not used
        raise NotImplementedError

    action_space = observation_space

    def _obs(self):
        return [self.t[:, None].astype(np.float32) + k for k in range(2)]

    def reset(self, seed=None):
        self.t[:] = 0
        return self._obs()

    def reset_copies(self, copies):
        self.t[copies] = 0
        return self._obs()

    def step(self, actions):
        self.t += 1
        term = np.zeros((2, self.num_envs), bool)
        term[1] = self.t >= self.limits
        zeros = np.zeros((2, self.num_envs), np.float32)
        return VectorStep(self._obs(), zeros + 1, term, np.zeros_like(term), zeros, None)


def test_step_autoreset_keeps_final_and_truncates_running_agents() -> None:
    env = _Counter([2, 3])
    assert is_vectorized(_Counter) and not is_vectorized(object)
    env.reset(0)
    first = env.step_autoreset([np.zeros(2), np.zeros(2)])
    assert isinstance(first, AutoresetStep) and not first.ended.any()
    second = env.step_autoreset([np.zeros(2), np.zeros(2)])
    assert second.ended.tolist() == [True, False]
    assert second.terminated[:, 0].tolist() == [False, True]
    assert second.truncated[:, 0].tolist() == [True, False]  # agent a was still running in the ended copy
    assert not second.truncated[:, 1].any()
    assert second.final[0][:, 0].tolist() == [2, 0] and second.final[1][:, 0].tolist() == [3, 0]
    assert second.obs[0][:, 0].tolist() == [0, 2]  # copy 0 was reset, copy 1 continues


def test_per_copy_draws_match_mpe2_row_by_row_seeding() -> None:
    from gymnasium.utils import seeding

    from marlmesh.envs.vector.physics import VectorWorld

    world = VectorWorld(WorldSpec.build(agent_size=[0.15] * 2, landmark_size=[0.05] * 2), num_envs=3)
    world.seed(7)
    got = world.uniform(np.array([0, 2]), -1, 1, (4, 2))
    for row, b in zip(got, (0, 2), strict=True):
        rng = seeding.np_random(7 + b)[0]
        np.testing.assert_array_equal(row, [rng.uniform(-1, 1, 2) for _ in range(4)])

"""The pursuit task (``marlmesh.pursuit``) through the VectorEnv API, and its scripted references."""

from __future__ import annotations

import numpy as np
import pytest

from marlmesh.envs.vector.pursuit import (
    ARENA,
    DEFAULT_VISION_RADIUS,
    PREDATOR_SIZE,
    PREY_SIZE,
    PursuitEnv,
    pursuit,
)
from marlmesh.experiments.baselines import evaluate_vector_env, make_policy
from marlmesh.experiments.pursuit_controller import scripted_pursuit
from marlmesh.plugins import load
from marlmesh.spaces import SpaceSpec

NOOP = 0


def evaluate_vector(env: PursuitEnv, baseline: str, seed: int) -> np.ndarray:
    return evaluate_vector_env(env, "marlmesh.pursuit", baseline, seed)


def place(env: PursuitEnv, predators: list[tuple[float, float]], prey: list[tuple[float, float]]) -> None:
    """Put copy 0's bodies at rest at the given positions."""
    env.world.state.pos[0, : env.n] = predators
    env.world.state.pos[0, env.n : env.n + env.num_prey] = prey
    env.world.state.vel[0] = 0.0


def noop(env: PursuitEnv) -> list[np.ndarray]:
    return [np.full(env.num_envs, NOOP) for _ in range(env.n)]


def test_registered_as_a_vectorized_env_plugin():
    factory = load("envs", "marlmesh.pursuit")
    assert factory.vectorized is True
    env = factory(num_envs=2, N=4)
    assert env.possible_agents == [f"predator_{i}" for i in range(4)]


def test_shapes_of_observations_rewards_cost_and_positions():
    env = PursuitEnv(5, N=4, num_prey=2, num_obstacles=3)
    obs = env.reset(seed=0)
    dim = 4 + 5 * 2 + 2 * 3 + 2 * 3
    assert env.observation_space("predator_0").shape == (dim,)
    assert len(obs) == 4 and all(o.shape == (5, dim) and o.dtype == np.float32 for o in obs)
    out = env.step(noop(env))
    assert out.reward.shape == out.cost.shape == out.terminated.shape == out.truncated.shape == (4, 5)
    assert out.positions.shape == (4, 5, 2) and out.positions.dtype == np.float32
    np.testing.assert_allclose(out.positions, env.predator_pos.transpose(1, 0, 2).astype(np.float32))
    assert (out.reward == out.reward[0]).all()  # a team reward


def test_seeding_is_per_copy_and_later_resets_continue_each_copy():
    many, one = PursuitEnv(3), PursuitEnv(1)
    a = many.reset(seed=7)
    b = one.reset(seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[1], y[0])  # copy 1 of seed 7 is copy 0 of seed 8
    np.testing.assert_array_equal(many.world.state.pos[1], one.world.state.pos[0])
    again = PursuitEnv(3)
    again.reset(seed=7)
    np.testing.assert_array_equal(again.world.state.pos, many.world.state.pos)
    many.reset_copies(np.array([False, True, False]))
    one.reset()
    np.testing.assert_array_equal(many.world.state.pos[1], one.world.state.pos[0])
    np.testing.assert_array_equal(many.world.state.pos[0], again.world.state.pos[0])


def test_prey_flees_the_predators_and_brakes_when_it_sees_none():
    env = PursuitEnv(1, prey_sight=0.5)
    env.reset(seed=0)
    place(env, [(0.0, 0.0), (-0.8, -0.8), (-0.8, 0.8)], [(0.3, 0.0)])
    before = np.linalg.norm(env.prey_pos[0, 0] - env.predator_pos[0, 0])
    for _ in range(3):
        env.step(noop(env))
    after = np.linalg.norm(env.prey_pos[0, 0] - env.predator_pos[0, 0])
    assert after > before + 0.05
    assert env.world.state.vel[0, env.n, 0] > 0  # running away along +x
    place(env, [(-0.9, -0.9), (-0.9, 0.9), (-0.9, 0.0)], [(0.5, 0.0)])
    env.world.state.vel[0, env.n] = (0.4, 0.0)
    env.step(noop(env))
    assert abs(env.world.state.vel[0, env.n, 0]) < 1e-9  # no predator within 0.5: it stops


def test_capture_reward_fires_on_contact():
    env = PursuitEnv(1, capture_reward=10.0, distance_weight=1.0)
    env.reset(seed=0)
    place(env, [(0.0, 0.0), (0.0, 0.6), (0.0, -0.6)], [(0.1, 0.0)])
    out = env.step(noop(env))  # positions move by the (zero) velocity first: the contact holds this step
    assert env.contacts()[0, :, 0].tolist() == [True, False, False]
    d = np.linalg.norm(env.predator_pos[0] - env.prey_pos[0, 0], axis=1)
    np.testing.assert_allclose(out.reward[:, 0], 10.0 - d.mean(), rtol=1e-6)
    place(env, [(0.0, 0.0), (0.0, 0.6), (0.0, -0.6)], [(0.1 + PREDATOR_SIZE + PREY_SIZE, 0.0)])
    out = env.step(noop(env))
    assert not env.contacts().any() and out.reward[0, 0] < 0


def test_episode_truncates_at_max_cycles_and_autoreset_restarts_it():
    env = PursuitEnv(2, max_cycles=5)
    env.reset(seed=1)
    for t in range(1, 6):
        out = env.step(noop(env))
        assert not out.terminated.any()
        assert out.truncated.all() == (t == 5) and out.truncated.any() == (t == 5)
    env.reset(seed=1)
    for _ in range(4):
        env.step_autoreset(noop(env))
    last = env.step_autoreset(noop(env))
    assert last.ended.all() and (env.t == 0).all()


def test_cost_counts_predator_predator_overlaps():
    env = PursuitEnv(1)
    env.reset(seed=0)
    place(env, [(0.0, 0.0), (0.1, 0.0), (0.8, 0.8)], [(-0.8, -0.8)])
    out = env.step(noop(env))
    assert out.cost[:, 0].tolist() == [1.0, 1.0, 0.0]


def test_bodies_stay_inside_the_walls():
    env = PursuitEnv(16, N=3)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        env.step([rng.integers(0, 5, 16) for _ in range(3)])
        assert np.isfinite(env.world.state.pos).all()
        assert (np.abs(env.world.state.pos[:, : env.n]) <= ARENA - PREDATOR_SIZE).all()
        assert (np.abs(env.prey_pos) <= ARENA - PREY_SIZE).all()


def test_vision_masks_the_prey_beyond_the_radius():
    env = PursuitEnv(1, vision_radius=0.5)
    assert env.vision_radius == 0.5 == DEFAULT_VISION_RADIUS
    env.reset(seed=0)
    place(env, [(0.0, 0.0), (0.8, 0.8), (-0.8, -0.8)], [(0.3, 0.2)])
    obs = env.observations()
    np.testing.assert_allclose(obs[0][0, 4:7], [1.0, 0.3, 0.2], atol=1e-6)
    assert (obs[1][0, 4:9] == 0).all() and (obs[2][0, 4:9] == 0).all()
    np.testing.assert_allclose(obs[1][0, 9:13], [-0.8, -0.8, -1.6, -1.6], atol=1e-6)  # peers: always seen
    shared = PursuitEnv(1, shared_vision=True)
    shared.reset(seed=0)
    place(shared, [(0.0, 0.0), (0.8, 0.8), (-0.8, -0.8)], [(0.3, 0.2)])
    seen = shared.observations()
    np.testing.assert_allclose(seen[1][0, 4:7], [1.0, 0.3 - 0.8, 0.2 - 0.8], atol=1e-6)
    full = PursuitEnv(1, vision_radius=None)
    full.reset(seed=0)
    place(full, [(0.0, 0.0), (0.8, 0.8), (-0.8, -0.8)], [(-0.9, 0.9)])
    assert all(o[0, 4] == 1.0 for o in full.observations())


def test_obs_radius_is_the_vision_radius():
    assert PursuitEnv(1, obs_radius=0.3).vision_radius == 0.3
    assert pursuit(1, 0.3, vision_radius=0.3).vision_radius == 0.3
    with pytest.raises(ValueError, match="disagree"):
        PursuitEnv(1, obs_radius=0.3, vision_radius=0.4)
    with pytest.raises(ValueError, match="N must be >= 2"):
        PursuitEnv(1, N=1)


def test_continuous_actions_push_like_mpe2():
    env = PursuitEnv(1, continuous_actions=True)
    env.reset(seed=0)
    place(env, [(0.0, 0.0), (0.8, 0.8), (-0.8, -0.8)], [(-0.8, 0.8)])
    push = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]], np.float32)  # +x at full force
    env.step([push, np.zeros((1, 5)), np.zeros((1, 5))])
    np.testing.assert_allclose(env.world.state.vel[0, 0], [0.3, 0.0])  # accel 3.0 * dt 0.1


def test_scripted_references_order_random_none_perfect_full():
    space = SpaceSpec.from_gym(PursuitEnv(1).action_space("predator_0"))
    assert make_policy("scripted", "marlmesh.pursuit", 0, 3, space, PursuitEnv(1).obs_dim, 0) is not None
    episodes = 48
    returns = {
        "random": evaluate_vector(PursuitEnv(episodes), "random", 0).mean(),
        "none": evaluate_vector(PursuitEnv(episodes), "scripted", 0).mean(),
        "perfect": evaluate_vector(PursuitEnv(episodes, shared_vision=True), "scripted", 0).mean(),
        "full": evaluate_vector(PursuitEnv(episodes, vision_radius=None), "scripted", 0).mean(),
    }
    assert returns["random"] < returns["none"] < returns["perfect"] < returns["full"], returns
    assert returns["perfect"] - returns["none"] > 50, returns  # communication is worth a lot


def test_scripted_predator_handles_continuous_actions_and_rejects_other_layouts():
    env = PursuitEnv(8, continuous_actions=True, vision_radius=None)
    returns = evaluate_vector(env, "scripted", 0)
    assert returns.mean() > evaluate_vector(PursuitEnv(8, continuous_actions=True), "random", 0).mean()
    with pytest.raises(ValueError, match="marlmesh.pursuit"):
        scripted_pursuit(0, 3, SpaceSpec(kind="discrete", n=5), 8, 0)


def test_reference_cli_prints_the_three_settings(capsys):
    from marlmesh.experiments.pursuit_baselines import main

    assert main(["--episodes", "4", "--set", "env.kwargs.N=2"]) == 0
    out = capsys.readouterr().out
    assert "{'N': 2}" in out and all(f"scripted, {name}" in out for name in ("none", "perfect", "full"))
    assert main(["--set", "N"]) == 2
    assert main(["--episodes", "2", "--set", "N=1"]) == 2
    assert "N must be >= 2" in capsys.readouterr().err

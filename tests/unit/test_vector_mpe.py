"""The vectorized simple_spread equals mpe2's: same state, same actions -> same observations and rewards (1e-5).

Also: the env service's copy block steps it with the same autoreset/final semantics as mpe2 copies, ``make_env``
gives a one-copy ParallelEnv view, and a short in-process training runs on it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from env_service.copies import EnvCopies
from marlmesh.config import EnvConfig
from marlmesh.envs import is_vectorized_env, make_env, make_vector_env
from marlmesh.envs.partial_obs import RadiusObservation
from marlmesh.envs.vector.parallel import VectorParallelEnv
from marlmesh.envs.vector.spread import SimpleSpread

VECTOR = "marlmesh.simple_spread"
MPE2 = "mpe2.simple_spread_v3"
B = 3


def _copy_state_in(vec: SimpleSpread, refs: list) -> None:
    """Write every mpe2 copy's world state into the vectorized env (copy b <- refs[b])."""
    state = vec.unwrapped.world.state
    for b, ref in enumerate(refs):
        world = ref.unwrapped.world
        for e, body in enumerate(world.entities):
            state.pos[b, e] = body.state.p_pos
            state.vel[b, e] = body.state.p_vel
        for i, agent in enumerate(world.agents):
            state.comm[b, i] = agent.state.c


def _random_actions(rng: np.random.Generator, space, n: int) -> np.ndarray:
    if space.shape == ():
        return rng.integers(0, space.n, n)
    return rng.uniform(0, 1, (n, *space.shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("kwargs", "obs_radius"),
    [
        ({"N": 3}, None),
        ({"N": 5}, None),
        ({"N": 3, "local_ratio": 0.0}, None),
        ({"N": 3, "local_ratio": 1.0}, None),
        ({"N": 5, "local_ratio": 0.5}, 0.6),
        ({"N": 3, "continuous_actions": True}, None),
        ({"N": 5, "continuous_actions": True, "local_ratio": 1.0}, 0.9),
    ],
)
def test_same_state_and_actions_give_mpe2_observations_and_rewards(kwargs, obs_radius):
    config = dict(kwargs={**kwargs, "max_cycles": 10}, obs_radius=obs_radius)
    refs = [make_env(EnvConfig(name=MPE2, **config)) for _ in range(B)]
    if obs_radius is not None:
        assert isinstance(refs[0], RadiusObservation)
    vec = make_vector_env(EnvConfig(name=VECTOR, **config), B)
    names = vec.possible_agents
    assert names == refs[0].possible_agents
    for name in names:
        assert vec.observation_space(name) == refs[0].observation_space(name)
        assert vec.action_space(name) == refs[0].action_space(name)
    rng = np.random.default_rng(sum(map(ord, repr(kwargs))))
    collided = 0.0
    for episode in range(3):
        # a different seed than the vectorized env's: the state is copied in, not re-drawn
        for b, ref in enumerate(refs):
            ref.reset(seed=100 * episode + b)
        vec.reset(seed=episode)
        if episode == 2:  # crowd the agents so that collisions (and the contact force) happen
            for ref in refs:
                for agent in ref.unwrapped.world.agents:
                    agent.state.p_pos = agent.state.p_pos * 0.1
        _copy_state_in(vec, refs)
        for t in range(10):
            actions = [_random_actions(rng, vec.action_space(a), B) for a in names]
            out = vec.step(actions)
            for b, ref in enumerate(refs):
                joint = {
                    a: (int(actions[i][b]) if actions[i].ndim == 1 else actions[i][b]) for i, a in enumerate(names)
                }
                obs, rewards, terms, truncs, _ = ref.step(joint)
                for i, a in enumerate(names):
                    np.testing.assert_allclose(out.obs[i][b], obs[a], atol=1e-5, err_msg=f"obs {a} copy {b} t {t}")
                    assert out.reward[i, b] == pytest.approx(rewards[a], abs=1e-5)
                    assert out.truncated[i, b] == truncs[a] and out.terminated[i, b] == terms[a]
            collided += out.cost.sum()
        assert out.truncated.all()
    assert collided > 0  # the crowded episode did exercise collisions


def test_a_seeded_reset_starts_where_mpe2_seeded_starts_and_resets_continue_the_generator():
    config = EnvConfig(name=VECTOR, kwargs={"N": 4, "max_cycles": 3})
    vec = make_vector_env(config, 2)
    refs = [make_env(EnvConfig(name=MPE2, kwargs={"N": 4, "max_cycles": 3})) for _ in range(2)]
    first = vec.reset(seed=11)
    for b, ref in enumerate(refs):
        obs, _ = ref.reset(seed=11 + b)
        for i, a in enumerate(vec.possible_agents):
            np.testing.assert_allclose(first[i][b], obs[a], atol=1e-6)
    again = vec.reset_copies(np.array([False, True]))
    obs, _ = refs[1].reset()
    for i, a in enumerate(vec.possible_agents):
        np.testing.assert_array_equal(again[i][0], first[i][0])  # copy 0 untouched
        np.testing.assert_allclose(again[i][1], obs[a], atol=1e-6)


def test_terminate_on_success_ends_the_episode_where_mpe2_does():
    config = dict(kwargs={"N": 3, "max_cycles": 10, "terminate_on_success": True})
    refs = [make_env(EnvConfig(name=MPE2, **config)) for _ in range(2)]
    vec = make_vector_env(EnvConfig(name=VECTOR, **config), 2)
    for b, ref in enumerate(refs):
        ref.reset(seed=b)
        world = ref.unwrapped.world
        for k, (agent, mark) in enumerate(zip(world.agents, world.landmarks, strict=True)):
            mark.state.p_pos = np.array([0.8 * (k - 1), 0.0])
            agent.state.p_pos = mark.state.p_pos + (0.05 if b == 0 else 0.5)  # copy 0 covers all, copy 1 none
    vec.reset(seed=0)
    _copy_state_in(vec, refs)
    out = vec.step([np.zeros(2, np.int64)] * 3)
    for b, ref in enumerate(refs):
        _, _, terms, truncs, _ = ref.step({a: 0 for a in ref.agents})
        assert out.terminated[:, b].tolist() == [terms[a] for a in vec.possible_agents]
        assert not out.truncated[:, b].any() and not any(truncs.values())
    assert out.terminated[:, 0].all() and not out.terminated[:, 1].any()


def _assert_same(x, y) -> None:
    for field in ("obs", "final"):
        for p, q in zip(getattr(x, field), getattr(y, field), strict=True):
            assert p.dtype == q.dtype and p.shape == q.shape
            np.testing.assert_allclose(p, q, atol=1e-5, err_msg=field)
    for field in ("reward", "terminated", "truncated", "cost", "positions", "ended"):
        p, q = getattr(x, field), getattr(y, field)
        assert p.dtype == q.dtype and p.shape == q.shape, field
        np.testing.assert_allclose(p, q, atol=1e-5, err_msg=field)


@pytest.mark.parametrize("options", [{}, {"obs_radius": 0.7, "time_feature": True}])
def test_env_copies_step_the_vector_env_with_mpe2_autoreset_semantics(options):
    kwargs = {"N": 3, "max_cycles": 4}
    loop = EnvCopies(EnvConfig(name=MPE2, kwargs=kwargs, **options), seed=5, lo=2, hi=6)
    vector = EnvCopies(EnvConfig(name=VECTOR, kwargs=kwargs, **options), seed=5, lo=2, hi=6)
    assert vector.vector is not None and loop.vector is None and vector.envs == []
    _assert_same(loop.reset(), vector.reset())  # copy b seeded seed + lo + b in both
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(9):  # two episode ends and a reset of every copy in between
        actions = [rng.integers(0, 5, 4) for _ in range(3)]
        a, v = loop.step(actions), vector.step(actions)
        _assert_same(a, v)
        if v.ended.any():
            ended += 1
            assert np.abs(v.final[0][v.ended]).sum() > 0 and not np.any(v.final[0][~v.ended])
            if options.get("time_feature"):
                assert v.terminated.all() and not v.truncated.any() and np.all(v.final[0][:, -1] == 1.0)
            else:
                assert v.truncated.all()
    assert ended == 2


def test_make_env_gives_a_one_copy_parallel_view_with_an_mpe_world():
    config = EnvConfig(name=VECTOR, kwargs={"N": 3, "max_cycles": 2})
    assert is_vectorized_env(config) and not is_vectorized_env(EnvConfig(name=MPE2))
    env = make_env(config)
    ref = make_env(EnvConfig(name=MPE2, kwargs={"N": 3, "max_cycles": 2}))
    assert isinstance(env, VectorParallelEnv) and env.unwrapped.max_cycles == 2
    obs, _ = env.reset(seed=4)
    ref_obs, _ = ref.reset(seed=4)
    for a in env.possible_agents:
        np.testing.assert_allclose(obs[a], ref_obs[a], atol=1e-6)
    # the world view reads and writes copy 0 like mpe2's world
    world = env.unwrapped.world
    assert [b.name for b in world.agents] == env.possible_agents and len(world.landmarks) == 3
    world.agents[0].state.p_pos = np.array([0.5, -0.5])
    assert env.step({a: 0 for a in env.agents})[0]["agent_0"][2:4].tolist() == [0.5, -0.5]
    steps = 1
    while env.agents:
        obs, rewards, terms, truncs, _ = env.step({a: 1 for a in env.agents})
        steps += 1
    assert steps == 2 and all(truncs.values()) and set(obs) == set(rewards) == set(env.possible_agents)
    with pytest.raises(ValueError, match="rejected env.kwargs"):
        make_env(EnvConfig(name=VECTOR, kwargs={"M": 3}))
    with pytest.raises(ValueError, match="local_ratio"):
        make_env(EnvConfig(name=VECTOR, kwargs={"local_ratio": 2.0}))


def test_a_short_inprocess_training_runs_on_the_vectorized_env(tmp_path):
    from marlmesh.cli import main

    sets = [
        f"env.name={VECTOR}",
        "env.obs_radius=0.8",
        "env.time_feature=true",
        "env.kwargs.max_cycles=5",
        "train.rollout_steps=5",
        "env.num_envs=2",
        "algo.ppo.epochs=1",
        "algo.ppo.minibatches=1",
        "train.total_env_steps=40",
        "train.max_wall_seconds=null",
    ]
    args = ["train", "--launcher", "inprocess", "-c", "configs/smoke.yaml", "--run-dir", str(tmp_path), "--no-eval"]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "trained" and summary["env_steps"] == 40
    assert summary["config"]["env"] == VECTOR
    assert summary["episodes"] == 8  # 20 ticks of 2 copies, episodes of 5 steps
    assert [lr["fragments_trained"] for lr in summary["learners"]] == [4, 4, 4]

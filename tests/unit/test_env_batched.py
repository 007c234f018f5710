"""The env node's batched per-step bookkeeping gives exactly what stepping copy by copy gives."""

from __future__ import annotations

import numpy as np
import pytest

from env_service.node import EnvNode
from marlmesh.config import EnvConfig
from marlmesh.envs import make_env
from marlmesh.envs.adapter import adapter_for


def _config(n: int = 3) -> EnvConfig:
    return EnvConfig(name="mpe2.simple_spread_v3", kwargs={"N": n, "max_cycles": 5}, num_envs=4)


def test_batched_collisions_and_positions_match_per_copy() -> None:
    envs = [make_env(_config()) for _ in range(5)]
    for b, env in enumerate(envs):
        env.reset(seed=b)
    adapter = adapter_for(envs[0])
    # force overlaps: agents 0 and 1 on top of each other in copies 0 and 3, all three in copy 4
    for b in (0, 3, 4):
        bodies = envs[b].unwrapped.world.agents
        bodies[1].state.p_pos = bodies[0].state.p_pos.copy()
        if b == 4:
            bodies[2].state.p_pos = bodies[0].state.p_pos + 0.01
    per_copy = np.stack([adapter.collisions(env) for env in envs])
    batched = adapter.collisions_batch(envs)
    assert batched.dtype == np.float32
    np.testing.assert_array_equal(batched, per_copy)
    assert per_copy[0].tolist() == [1, 1, 0] and per_copy[4].tolist() == [2, 2, 2]
    np.testing.assert_array_equal(adapter.positions_batch(envs), np.stack([adapter.positions(e) for e in envs]))


def _reference_run(config: EnvConfig, seed: int, actions: list[list[np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Copy-by-copy stepping with the per-copy adapter calls (the node's behaviour before batching)."""
    envs = [make_env(config) for _ in range(config.num_envs)]
    adapter = adapter_for(envs[0])
    names = list(envs[0].possible_agents)
    for b, env in enumerate(envs):
        env.reset(seed=seed + b)
    ep_coll = np.zeros(len(envs))
    out = []
    for tick_actions in actions:
        rec = {
            "reward": np.zeros((len(names), len(envs)), np.float32),
            "cost": np.zeros((len(names), len(envs)), np.float32),
        }
        rec["obs"] = np.zeros((len(names), len(envs), *envs[0].observation_space(names[0]).shape), np.float32)
        rec["pos"] = np.zeros((len(names), len(envs), 2), np.float32)
        rec["trunc"] = np.zeros((len(names), len(envs)), bool)
        rec["episode_coll"] = []
        for b, env in enumerate(envs):
            joint = {name: int(tick_actions[a][b]) for a, name in enumerate(names)}
            o, r, te, tr, _ = env.step(joint)
            rec["reward"][:, b] = [r[n] for n in names]
            coll = adapter.collisions(env)
            rec["cost"][:, b] = coll
            ep_coll[b] += float(coll.sum()) / 2.0
            ended = np.array([te[n] or tr[n] for n in names])
            rec["trunc"][:, b] = [tr[n] for n in names]
            if ended.any():
                rec["trunc"][~ended, b] = True
                rec["episode_coll"].append(ep_coll[b])
                ep_coll[b] = 0.0
                o, _ = env.reset()
            rec["obs"][:, b] = [o[n] for n in names]
            rec["pos"][:, b] = adapter.positions(env)
        out.append(rec)
    return out


@pytest.mark.parametrize("seed", [0, 7])
def test_env_node_steps_like_copy_by_copy(seed: int) -> None:
    config = _config()
    rng = np.random.default_rng(seed)
    actions = [[rng.integers(0, 5, config.num_envs) for _ in range(3)] for _ in range(12)]  # crosses 2 episode ends
    expected = _reference_run(config, seed, actions)
    node = EnvNode(config, seed)
    for a in range(3):
        node.join(a, f"p{a}")
    for tick, (tick_actions, want) in enumerate(zip(actions, expected, strict=True)):
        with node._cond:  # the barrier's last step: every agent's action is in
            node._pending.update(enumerate(tick_actions))
            node._advance(missed=set())
        assert node.tick == tick + 1
        for a in range(3):
            view = node._view(a)
            np.testing.assert_array_equal(view.obs, want["obs"][a])
            np.testing.assert_allclose(view.reward, want["reward"][a], rtol=0, atol=0)
            np.testing.assert_array_equal(view.cost, want["cost"][a])
            np.testing.assert_array_equal(view.truncated, want["trunc"][a])
            np.testing.assert_array_equal(view.positions, want["pos"])
    episodes = node.stats(0, 100).recent
    assert len(episodes) == 2 * config.num_envs
    want_coll = [c for rec in expected for c in rec["episode_coll"]]
    assert [e.collisions for e in episodes] == want_coll

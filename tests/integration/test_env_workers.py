"""``env.workers``: the env copies stepped in worker processes give the same run, and a dead worker stops the env."""

import threading

import numpy as np
import pytest

from env_service.env_workers import blocks
from env_service.node import EnvClosed, EnvNode
from marlmesh.config import ConfigError, EnvConfig, load_config

FIELDS = ("obs", "reward", "terminated", "truncated", "final_obs", "cost", "positions")


def _step_all(node: EnvNode, tick: int, actions: list[np.ndarray]) -> dict:
    """Every agent steps in its own thread (the barrier needs all of them); returns agent -> view or error."""
    out: dict = {}

    def run(a: int) -> None:
        try:
            out[a] = node.step(a, tick, actions[a])[0]
        except EnvClosed as exc:
            out[a] = exc

    threads = [threading.Thread(target=run, args=(a,)) for a in range(node.num_agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def _run(workers: int, ticks: int = 12) -> tuple[list[dict], list[tuple]]:
    # 7 copies over 3 workers: uneven blocks [0, 3), [3, 5), [5, 7); 5-step episodes end and reset copies
    config = EnvConfig(kwargs={"N": 3, "max_cycles": 5}, num_envs=7, workers=workers)
    node = EnvNode(config, seed=3)
    try:
        for a in range(node.num_agents):
            node.join(a, f"p{a}")
        rng = np.random.default_rng(0)
        views = []
        for tick in range(ticks):
            views.append(_step_all(node, tick, [rng.integers(0, 5, size=7) for _ in range(node.num_agents)]))
        episodes = [(e.env_index, e.end_tick, e.agent_returns, e.length, e.collisions) for e in node.stats().recent]
        return views, episodes
    finally:
        node.close()


def test_worker_processes_give_the_same_observations_rewards_and_episodes():
    one, episodes_one = _run(workers=1)
    three, episodes_three = _run(workers=3)
    assert len(episodes_one) == 14  # 7 copies x 2 finished 5-step episodes in 12 ticks
    assert episodes_three == episodes_one
    for tick, (a, b) in enumerate(zip(one, three, strict=True)):
        for agent in a:
            for field in FIELDS:
                assert np.array_equal(getattr(a[agent], field), getattr(b[agent], field)), (tick, agent, field)


def test_a_dead_worker_closes_the_env_and_reports_the_failure():
    failures: list[str] = []
    node = EnvNode(EnvConfig(kwargs={"N": 3}, num_envs=4, workers=2), seed=0, on_failure=failures.append)
    try:
        for a in range(node.num_agents):
            node.join(a, f"p{a}")
        first = _step_all(node, 0, [np.zeros(4, np.int64)] * 3)
        assert all(v.tick == 1 for v in first.values())
        victim = node._copies._procs[1]
        victim.kill()
        victim.join(10)
        res = _step_all(node, 1, [np.zeros(4, np.int64)] * 3)
        assert all(isinstance(v, EnvClosed) for v in res.values()), res
        assert len(failures) == 1 and "died" in failures[0] and "[2, 4)" in failures[0]
        assert node.failure == failures[0]
        with pytest.raises(EnvClosed):
            node.join(0, "again")
    finally:
        node.close()


def test_blocks_split_copies_evenly_and_reject_more_workers_than_copies():
    assert blocks(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert blocks(64, 2) == [(0, 32), (32, 64)]
    assert blocks(5, 1) == [(0, 5)]
    with pytest.raises(ValueError, match="env.workers must be in 1..env.num_envs"):
        blocks(2, 3)
    with pytest.raises(ConfigError, match="'env'.*workers \\(9\\) must not exceed num_envs \\(8\\)"):
        load_config(None, ["env.num_envs=8", "env.workers=9"])

"""EnvNode logic on real PettingZoo envs: barrier, deadline, late actions, autoreset, statistics."""

import threading

import numpy as np
import pytest

from env_service.node import EnvNode, InvalidRequest, NotJoined
from marlmesh.config import EnvConfig

SPREAD = {"N": 3, "max_cycles": 5}


def _node(b=2, seed=0, **cfg) -> EnvNode:
    cfg.setdefault("kwargs", SPREAD)
    return EnvNode(EnvConfig(**cfg), seed=seed, num_envs=b)


def _step_all(node: EnvNode, tick: int, actions: dict[int, np.ndarray]) -> dict:
    """Step the given agents concurrently (each in its own thread, like separate processes)."""
    out: dict = {}

    def run(a):
        out[a] = node.step(a, tick, actions[a])

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def _join_all(node: EnvNode) -> None:
    for a in range(node.num_agents):
        node.join(a, f"p{a}")


def test_barrier_steps_once_per_tick_and_counts_env_steps():
    node = _node(b=4)
    _join_all(node)
    for tick in range(3):
        res = _step_all(node, tick, {a: np.full(4, 1, np.int64) for a in range(3)})
        assert {view.tick for view, _ in res.values()} == {tick + 1}
        assert all(applied for _, applied in res.values())
    s = node.stats()
    assert (s.tick, s.env_steps, s.default_actions, s.late_actions) == (3, 12, {}, {})


def test_autoreset_episode_stats_final_obs_and_collisions():
    node = _node(b=2)
    _join_all(node)
    rewards = np.zeros((2, 3))
    coll = np.zeros(2)
    for tick in range(10):
        res = _step_all(node, tick, {a: np.zeros(2, np.int64) for a in range(3)})
        for a, (view, _) in res.items():
            rewards[:, a] += view.reward
            assert view.positions.shape == (3, 2, 2)
        coll += sum(view.cost for view, _ in res.values()) / 2  # per-agent counts -> pairs
        view = res[0][0]
        ends = (tick + 1) % 5 == 0
        assert view.truncated.tolist() == [ends, ends] and not view.terminated.any()
        assert bool(np.abs(view.final_obs).sum() > 0) == ends
    s = node.stats()
    assert s.episodes == 4 and [e.length for e in s.recent] == [5, 5, 5, 5]
    assert [e.env_index for e in s.recent] == [0, 1, 0, 1]
    np.testing.assert_allclose(sum(e.return_sum for e in s.recent), rewards.sum(), rtol=1e-5)
    np.testing.assert_allclose(sum(e.collisions for e in s.recent), coll.sum(), rtol=1e-6)
    assert [e.seq for e in node.stats(episodes_from=2).recent] == [2, 3]
    assert [e.seq for e in node.stats(episodes_from=1, max_episodes=2).recent] == [1, 2]


def test_deadline_default_action_then_absent_agent_is_not_waited_for():
    node = _node(b=2, step_deadline_ms=100, max_missed_deadlines=2)
    _join_all(node)
    acts = {a: np.zeros(2, np.int64) for a in (0, 1)}
    for tick in range(2):  # agent 2 never steps: two deadlines missed
        res = _step_all(node, tick, acts)
        assert res[0][0].tick == tick + 1
        assert res[0][0].live_agents == ([0, 1, 2] if tick == 0 else [0, 1])
    assert node.stats().default_actions == {2: 2}
    import time

    t0 = time.monotonic()
    _step_all(node, 2, acts)  # absent now: no waiting
    assert time.monotonic() - t0 < 0.09
    # the straggler's stale action is not applied; it gets the current tick and is waited for again
    view, applied = node.step(2, 0, np.zeros(2, np.int64))
    assert not applied and view.tick == 3 and 2 in view.live_agents
    assert node.stats().late_actions == {2: 1}


def test_leave_releases_the_barrier():
    node = _node(b=1, step_deadline_ms=60_000)
    _join_all(node)
    node.leave(2)
    res = _step_all(node, 0, {0: np.zeros(1, np.int64), 1: np.zeros(1, np.int64)})
    assert res[0][0].tick == 1 and res[0][0].live_agents == [0, 1]


def test_bad_requests_name_the_problem():
    node = _node(b=2)
    with pytest.raises(NotJoined, match="agent 0 has not joined"):
        node.step(0, 0, np.zeros(2, np.int64))
    with pytest.raises(InvalidRequest, match="agent_index 7 out of range"):
        node.join(7, "x")
    node.join(0, "p")
    with pytest.raises(InvalidRequest, match=r"shape \[2\]"):
        node.step(0, 0, np.zeros(3, np.int64))
    with pytest.raises(InvalidRequest, match=r"in \[0, 5\)"):
        node.step(0, 0, np.array([0, 5]))
    with pytest.raises(InvalidRequest, match="integers"):
        node.step(0, 0, np.zeros(2, np.float32))
    with pytest.raises(InvalidRequest, match="ahead of the env"):
        node.step(0, 4, np.zeros(2, np.int64))


def test_same_seed_same_trajectory_different_seed_differs():
    def run(seed):
        node = _node(b=2, seed=seed)
        _join_all(node)
        obs = [node._view(0).obs]
        rng = np.random.default_rng(5)
        for tick in range(7):
            acts = {a: rng.integers(0, 5, 2) for a in range(3)}
            obs.append(_step_all(node, tick, acts)[0][0].obs)
        return np.stack(obs)

    a, b, c = run(11), run(11), run(12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_heterogeneous_agents_discrete_and_clipped_box_actions():
    node = _node(b=3, name="marlmesh.testing.envs:heterogeneous_env", kwargs={"max_cycles": 4})
    assert node.agent_names == ["scout", "mover"]
    assert node.obs_spaces[0].shape == (4,) and node.obs_spaces[1].shape == (6,)
    assert node.act_spaces[0].kind == "discrete" and node.act_spaces[1].kind == "box"
    assert not node.adapter.has_positions and not node.adapter.has_collisions
    _join_all(node)
    res = _step_all(node, 0, {0: np.array([0, 1, 2]), 1: np.full((3, 2), 7.0, np.float32)})
    assert res[1][0].obs.shape == (3, 6) and res[0][0].positions is None
    np.testing.assert_allclose(res[1][0].obs[:, 2:4], 0.1)  # velocity from the clipped acceleration 1.0
    with pytest.raises(InvalidRequest, match="NaN"):
        node.step(1, 1, np.full((3, 2), np.nan, np.float32))
    for tick in range(1, 4):
        _step_all(node, tick, {0: np.zeros(3, np.int64), 1: np.zeros((3, 2), np.float32)})
    s = node.stats()
    assert s.episodes == 3 and all(np.isnan(e.collisions) for e in s.recent)
    assert all(e.length == 4 and len(e.agent_returns) == 2 for e in s.recent)


def test_continuous_mpe_and_default_actions_inside_the_box():
    node = _node(b=2, kwargs={"N": 3, "max_cycles": 5, "continuous_actions": True})
    assert node.act_spaces[0].kind == "box" and node.act_spaces[0].shape == (5,)
    default = node.act_spaces[0].default_action(2)
    assert default.shape == (2, 5) and (default == 0).all()


@pytest.mark.parametrize("name", ["simple_spread_v3", "simple_speaker_listener_v4", "simple_reference_v3"])
def test_unwrapped_mpe_factories_match_mpe2_parallel_env(name):
    import importlib

    from marlmesh.envs import mpe

    factory = getattr(mpe, name)
    ours = factory()
    defaults = {
        "simple_spread_v3": mpe.SIMPLE_SPREAD_DEFAULTS,
        "simple_speaker_listener_v4": mpe.SPEAKER_LISTENER_DEFAULTS,
        "simple_reference_v3": mpe.REFERENCE_DEFAULTS,
    }[name]
    ref = importlib.import_module(f"mpe2.{name}").parallel_env(**defaults)
    obs_a, _ = ours.reset(seed=4)
    obs_b, _ = ref.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(60):
        if not ours.agents:
            obs_a, _ = ours.reset()
            obs_b, _ = ref.reset()
        acts = {a: int(rng.integers(ref.action_space(a).n)) for a in ref.agents}
        obs_a, rew_a, term_a, trunc_a, _ = ours.step(acts)
        obs_b, rew_b, term_b, trunc_b, _ = ref.step(acts)
        assert rew_a == rew_b and term_a == term_b and trunc_a == trunc_b
        assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_b)


def test_live_agents_include_peers_that_have_not_joined_yet():
    node = _node(b=1)
    view = node.join(0, "p0")
    assert view.live_agents == [0, 1, 2]  # deterministic peer set from tick 0, whatever the start order
    node.leave(2)
    assert node.join(1, "p1").live_agents == [0, 1]


def test_an_agent_still_starting_gets_the_start_deadline_not_a_default_action():
    import time

    node = EnvNode(EnvConfig(kwargs=SPREAD, step_deadline_ms=50), seed=0, num_envs=1, start_deadline_s=5.0)
    _join_all(node)
    act = np.zeros(1, np.int64)
    others = {0: act, 1: act}
    late = threading.Timer(0.3, node.step, args=(2, 0, act))  # first action well past the step deadline
    late.start()
    assert _step_all(node, 0, others)[0][0].tick == 1 and node.stats().default_actions == {}
    late.join()
    start = time.monotonic()
    _step_all(node, 1, others)  # agent 2 has acted: a miss now gets the step deadline
    assert node.stats().default_actions == {2: 1} and time.monotonic() - start < 2.0
    node.join(2, "p2-restarted")  # starting again after a rejoin
    late = threading.Timer(0.3, node.step, args=(2, 2, act))
    late.start()
    assert _step_all(node, 2, others)[0][0].tick == 3 and node.stats().default_actions == {2: 1}
    late.join()

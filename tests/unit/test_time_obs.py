"""env.time_feature: every observation ends with t / max_cycles, on its own and after env.obs_radius."""

import numpy as np
import pytest

from marlmesh.config import EnvConfig
from marlmesh.envs import make_env
from marlmesh.envs.time_obs import TimeObservation


def test_time_entry_counts_the_episode_and_the_rest_is_unchanged():
    plain = make_env(EnvConfig(kwargs={"N": 3, "max_cycles": 4}))
    timed = make_env(EnvConfig(kwargs={"N": 3, "max_cycles": 4}, time_feature=True))
    agent = timed.possible_agents[0]
    space = timed.observation_space(agent)
    assert space.shape == (19,) and space.low[-1] == 0.0 and space.high[-1] == 1.0
    obs_p, _ = plain.reset(seed=3)
    obs_t, _ = timed.reset(seed=3)
    shares = [obs_t[agent][-1]]
    np.testing.assert_array_equal(obs_t[agent][:-1], obs_p[agent])
    while timed.agents:
        actions = {a: 1 for a in timed.agents}
        obs_p, _, terms_p, truncs_p, _ = plain.step(actions)
        obs_t, _, terms, truncs, _ = timed.step(actions)
        np.testing.assert_array_equal(obs_t[agent][:-1], obs_p[agent])
        shares.append(obs_t[agent][-1])
    assert shares == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert all(truncs_p.values()) and not any(terms_p.values())  # mpe2 cuts the episode at max_cycles ...
    assert all(terms.values()) and not any(truncs.values())  # ... which, with time observed, is its end
    obs_t, _ = timed.reset(seed=4)
    assert obs_t[agent][-1] == 0.0
    assert obs_t[agent].dtype == np.float32


def test_after_partial_observability_and_through_the_env_node():
    from env_service.node import EnvNode

    node = EnvNode(EnvConfig(kwargs={"N": 3, "max_cycles": 5}, obs_radius=0.5, time_feature=True), seed=0, num_envs=2)
    assert node.obs_spaces[0].shape == (24,)  # 18 + 5 visibility flags + time
    view = node.join(0, "p0")
    assert np.all(view.obs[:, -1] == 0.0) and set(np.unique(view.obs[:, 18:23])) <= {0.0, 1.0}
    node.close()


def test_any_env_with_a_horizon_and_a_clear_error_without_one():
    env = make_env(EnvConfig(name="marlmesh.testing.envs:heterogeneous_env", time_feature=True))
    assert env.observation_space("mover").shape == (7,)
    obs, _ = env.reset(seed=0)
    assert obs["scout"].shape == (5,) and obs["scout"][-1] == 0.0
    raw = env.unwrapped
    raw.max_cycles = None  # an env with no fixed horizon
    with pytest.raises(ValueError, match=r"env.time_feature needs an env with a fixed horizon"):
        TimeObservation(raw)

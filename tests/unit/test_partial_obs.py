"""env.obs_radius: entities beyond the radius are zeroed and flagged (hand-checked on a fixed MPE layout)."""

import numpy as np
import pytest

from marlmesh.config import ConfigError, EnvConfig, load_config
from marlmesh.envs import make_env
from marlmesh.envs.partial_obs import RadiusObservation


def _place(env, agents, landmarks):
    world = env.unwrapped.world
    for body, pos in zip(world.agents, agents, strict=True):
        body.state.p_pos = np.array(pos, np.float64)
        body.state.p_vel = np.zeros(2)
    for body, pos in zip(world.landmarks, landmarks, strict=True):
        body.state.p_pos = np.array(pos, np.float64)


def test_simple_spread_hand_checked_case():
    env = make_env(EnvConfig(name="mpe2.simple_spread_v3", kwargs={"N": 3, "max_cycles": 5}, obs_radius=1.0))
    assert isinstance(env, RadiusObservation)
    env.reset(seed=0)
    # agent_0 at the origin; agent_1 at distance 0.5 (visible), agent_2 at 2.0 (hidden);
    # landmarks at distances 0.5 (visible), sqrt(2) (hidden), 0.2 (visible)
    _place(env, [(0, 0), (0.5, 0), (2, 0)], [(0.3, 0.4), (1, 1), (-0.2, 0)])
    raw = env.unwrapped
    world = raw.world
    inner = raw.scenario.observation(world.agents[0], world)
    got = env.mask("agent_0", inner)
    expected = np.array(
        # vel    pos     lm0        lm1 (hidden) lm2      agent_1   agent_2 (hidden) comm(2+2)   flags lm0 lm1 lm2 a1 a2
        [0, 0, 0, 0, 0.3, 0.4, 0, 0, -0.2, 0, 0.5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0],
        np.float32,
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # from agent_2 at (2, 0): landmark 1 at (1, 1) is sqrt(2) away (hidden), nothing else within 1.0
    inner2 = raw.scenario.observation(world.agents[2], world)
    got2 = env.mask("agent_2", inner2)
    np.testing.assert_allclose(got2[-5:], [0, 0, 0, 0, 0])
    np.testing.assert_allclose(got2[4:18], 0.0)
    np.testing.assert_allclose(got2[2:4], [2, 0])  # own position stays


def test_observation_space_grows_and_step_masks():
    env = make_env(EnvConfig(kwargs={"N": 3, "max_cycles": 5}, obs_radius=0.3))
    assert env.observation_space("agent_0").shape == (23,)
    obs, _ = env.reset(seed=1)
    assert all(o.shape == (23,) and o.dtype == np.float32 for o in obs.values())
    obs, *_ = env.step({a: 0 for a in env.agents})
    for vec in obs.values():
        flags = vec[18:]
        assert set(np.unique(flags)) <= {0.0, 1.0}
        hidden_landmarks = np.flatnonzero(flags[:3] == 0)
        for ell in hidden_landmarks:
            assert np.all(vec[4 + 2 * ell : 6 + 2 * ell] == 0)
    # a very large radius changes nothing but the appended flags
    full = make_env(EnvConfig(kwargs={"N": 3, "max_cycles": 5}))
    big = make_env(EnvConfig(kwargs={"N": 3, "max_cycles": 5}, obs_radius=100.0))
    a, _ = full.reset(seed=2)
    b, _ = big.reset(seed=2)
    for agent in a:
        np.testing.assert_allclose(b[agent][:18], a[agent], atol=1e-6)
        np.testing.assert_allclose(b[agent][18:], 1.0)


def test_speaker_listener_listener_gets_landmark_flags_speaker_unchanged():
    env = make_env(EnvConfig(name="mpe2.simple_speaker_listener_v4", obs_radius=0.5))
    spk, lst = env.possible_agents
    inner = make_env(EnvConfig(name="mpe2.simple_speaker_listener_v4"))
    assert env.observation_space(spk).shape == inner.observation_space(spk).shape
    assert env.observation_space(lst).shape[0] == inner.observation_space(lst).shape[0] + 3
    obs, _ = env.reset(seed=0)
    assert obs[lst].shape == env.observation_space(lst).shape


def test_unsupported_env_and_bad_radius_fail_clearly():
    with pytest.raises(ValueError, match="obs_radius"):
        make_env(EnvConfig(name="marlmesh.testing.envs:heterogeneous_env", obs_radius=1.0))
    with pytest.raises(ConfigError, match="env.obs_radius"):
        load_config(None, ["env.obs_radius=0"])
    assert load_config(None, ["env.obs_radius=0.8"]).env.obs_radius == 0.8


def test_env_node_serves_masked_observations():
    from env_service.node import EnvNode

    node = EnvNode(EnvConfig(kwargs={"N": 3, "max_cycles": 5}, obs_radius=0.5), seed=0, num_envs=2)
    assert node.obs_spaces[0].shape == (23,)
    view = node.join(0, "p0")
    assert view.obs.shape == (2, 23)
    assert set(np.unique(view.obs[:, 18:])) <= {0.0, 1.0}
    assert node.adapter.has_positions  # the MPE adapter still reads the world through the wrapper
    node.close()

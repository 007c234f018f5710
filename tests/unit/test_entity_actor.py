"""The entity actor (``algo.ppo.actor_net: entity``): order invariance, hidden entities, layouts, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlmesh.config import ConfigError, load_config
from marlmesh.entity_layout import EntityLayout, entity_layout_for
from marlmesh.envs import make_env
from marlmesh.policies.entity_actor import EntityActorNet

N = 3


def make_net(layout: EntityLayout, seed: int = 0) -> EntityActorNet:
    torch.manual_seed(seed)
    net = EntityActorNet(layout, hidden=16, out_dim=5).double()
    with torch.no_grad():  # away from the near-zero output init, so that differences show
        for param in net.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return net


def random_obs(layout: EntityLayout, batch: int, rng: np.random.Generator) -> torch.Tensor:
    obs = rng.normal(size=(batch, layout.obs_dim))
    for group in (layout.targets, layout.peers):
        if group.flags is not None:
            obs[:, group.flags : group.flags + group.count] = rng.integers(0, 2, (batch, group.count))
    return torch.from_numpy(obs)


def permuted(obs: torch.Tensor, group, order: list[int]) -> torch.Tensor:
    """``obs`` with the entities of ``group`` (positions and flags) in ``order``."""
    out = obs.clone()
    pos = obs[:, group.start : group.stop].reshape(obs.shape[0], group.count, 2)
    out[:, group.start : group.stop] = pos[:, order].reshape(obs.shape[0], -1)
    if group.flags is not None:
        out[:, group.flags : group.flags + group.count] = obs[:, group.flags : group.flags + group.count][:, order]
    return out


@pytest.mark.parametrize("partial,time_feature", [(False, False), (True, True)])
def test_logits_do_not_depend_on_the_order_of_landmarks_or_of_other_agents(partial, time_feature):
    full = 6 * N + (2 * N - 1 if partial else 0) + (1 if time_feature else 0)
    layout = entity_layout_for("mpe2.simple_spread_v3", N, full, partial=partial, time_feature=time_feature)
    net, obs = make_net(layout), random_obs(layout, 64, np.random.default_rng(0))
    logits = net(obs)
    for order in ([2, 0, 1], [1, 0, 2]):
        torch.testing.assert_close(net(permuted(obs, layout.targets, order)), logits, atol=1e-10, rtol=0)
    torch.testing.assert_close(net(permuted(obs, layout.peers, [1, 0])), logits, atol=1e-10, rtol=0)
    moved = obs.clone()
    moved[:, layout.targets.start] += 0.5  # a landmark that moves does change the logits
    assert (net(moved) - logits).abs().max() > 1e-3
    if time_feature:
        later = obs.clone()
        later[:, layout.extras[0]] += 0.5
        assert (net(later) - logits).abs().max() > 1e-3


def test_hidden_entities_do_not_count_and_nothing_visible_gives_finite_logits():
    layout = entity_layout_for("mpe2.simple_spread_v3", N, 8 * N - 1, partial=True, time_feature=False)
    net, rng = make_net(layout), np.random.default_rng(1)
    obs = random_obs(layout, 32, rng)
    obs[:, layout.targets.flags] = 0.0  # landmark 0 and other agent 0 hidden in every row
    obs[:, layout.peers.flags] = 0.0
    changed = obs.clone()
    changed[:, layout.targets.start : layout.targets.start + 2] = torch.from_numpy(rng.normal(size=(32, 2)))
    changed[:, layout.peers.start : layout.peers.start + 2] = torch.from_numpy(rng.normal(size=(32, 2)))
    torch.testing.assert_close(net(changed), net(obs), atol=1e-10, rtol=0)
    blind = obs.clone()
    blind[:, layout.targets.flags : layout.targets.flags + N] = 0.0
    blind[:, layout.peers.flags : layout.peers.flags + N - 1] = 0.0
    assert torch.isfinite(net(blind)).all()


@pytest.mark.parametrize("partial,time_feature", [(False, False), (True, False), (True, True)])
def test_the_layout_matches_the_observations_of_the_real_env(partial, time_feature):
    sets = ["env.kwargs.N=3"] + (["env.obs_radius=0.8"] if partial else []) + (["env.time_feature=true"] * time_feature)
    config = load_config(None, sets)
    env = make_env(config.env)
    try:
        obs, _ = env.reset(seed=3)
        raw = env.unwrapped
        for i, name in enumerate(env.possible_agents):
            ob = obs[name]
            layout = entity_layout_for(config.env.name, N, ob.size, partial=partial, time_feature=time_feature)
            me = raw.world.agents[i]
            np.testing.assert_allclose(ob[layout.velocity : layout.velocity + 2], me.state.p_vel, atol=1e-6)
            landmarks = ob[layout.targets.start : layout.targets.stop].reshape(N, 2)
            others = ob[layout.peers.start : layout.peers.stop].reshape(N - 1, 2)
            expect_l = np.array([lm.state.p_pos - me.state.p_pos for lm in raw.world.landmarks])
            expect_o = np.array([a.state.p_pos - me.state.p_pos for a in raw.world.agents if a is not me])
            if partial:
                seen_l = ob[layout.targets.flags : layout.targets.flags + N] > 0.5
                seen_o = ob[layout.peers.flags : layout.peers.flags + N - 1] > 0.5
                np.testing.assert_array_equal(seen_l, np.linalg.norm(expect_l, axis=1) <= 0.8)
                np.testing.assert_array_equal(seen_o, np.linalg.norm(expect_o, axis=1) <= 0.8)
                expect_l, expect_o = expect_l * seen_l[:, None], expect_o * seen_o[:, None]
            np.testing.assert_allclose(landmarks, expect_l, atol=1e-5)
            np.testing.assert_allclose(others, expect_o, atol=1e-5)
            if time_feature:
                assert ob[layout.extras[0]] == 0.0  # the elapsed share of the episode after reset
    finally:
        env.close()


def test_a_layout_that_does_not_fit_names_the_problem():
    with pytest.raises(ValueError, match="no entity layout is known for env 'mpe2.simple_tag_v3'"):
        entity_layout_for("mpe2.simple_tag_v3", N, 18, partial=False, time_feature=False)
    with pytest.raises(ValueError, match="should give observations of 18 values, got 19"):
        entity_layout_for("mpe2.simple_spread_v3", N, 19, partial=False, time_feature=False)


@pytest.mark.parametrize(
    "sets,message",
    [
        (["channel.name=broadcast"], "needs channel.name=none or channel.name=dgat .* got 'broadcast'"),
        (["channel.name=dgat", "channel.dgat.actor=joint"], "got dgat with channel.dgat.actor=joint"),
        (
            ["env.name=mpe2.simple_tag_v3"],
            "needs an env with a known entity layout .* got env.name='mpe2.simple_tag_v3'",
        ),
    ],
)
def test_the_config_refuses_an_entity_actor_it_cannot_build(sets, message):
    with pytest.raises(ConfigError, match=f"algo.ppo.actor_net=entity .*{message}"):
        load_config(None, ["algo.ppo.actor_net=entity", *sets])

"""Value normalisation: running return statistics in the policy, critic loss in normalised units."""

import pytest
import torch

from learner_service.ppo import PPOLearner, ppo_loss
from marlmesh.config import PPOConfig
from marlmesh.policies.staged import IndependentPolicy
from marlmesh.policy_spec import PolicySpec
from marlmesh.spaces import SpaceSpec


def _learner(**cfg) -> PPOLearner:
    spec = PolicySpec(
        agent_index=0,
        num_agents=2,
        obs_space=SpaceSpec(kind="box", shape=(4,), low=(), high=()),
        action_space=SpaceSpec(kind="discrete", n=3),
        message_dim=2,
        hidden_sizes=(8,),
    )
    torch.manual_seed(0)
    return PPOLearner(IndependentPolicy(spec), PPOConfig(**cfg), seed=0)


def test_first_update_takes_the_batch_statistics_then_an_ema():
    learner = _learner(value_norm=True, value_norm_beta=0.9)
    policy = learner.policy
    first = torch.tensor([-10.0, -20.0, -30.0])
    learner.update_return_stats(first)
    assert float(policy.return_mean) == pytest.approx(-20.0)
    assert float(policy.return_std) == pytest.approx(first.var(unbiased=False).sqrt().item())
    second = torch.tensor([0.0, 0.0])
    learner.update_return_stats(second)
    mean = 0.9 * -20.0
    sq = 0.9 * (first.var(unbiased=False).item() + 400.0)
    assert float(policy.return_mean) == pytest.approx(mean)
    assert float(policy.return_std) == pytest.approx((sq - mean**2) ** 0.5)
    assert float(policy.return_updates) == 2
    assert learner.value_scale() == pytest.approx(1.0 / float(policy.return_std))


def test_values_are_in_return_units_and_the_loss_in_normalised_units():
    learner = _learner(value_norm=True)
    policy = learner.policy
    obs = torch.randn(5, 4)
    raw = policy.critic(obs).squeeze(-1)
    policy.return_mean.fill_(-15.0)
    policy.return_std.fill_(4.0)
    assert torch.allclose(policy.value(obs, []), raw * 4.0 - 15.0)
    zeros = torch.zeros(5)
    value, target = policy.value(obs, []), torch.full((5,), -11.0)
    loss, stats = ppo_loss(zeros, zeros, zeros, value, target, zeros, learner.cfg, learner.value_scale())
    assert stats["value_loss"] == pytest.approx(0.5 * ((raw - 1.0) ** 2).mean().item(), rel=1e-5)


def test_off_by_default_leaves_values_and_loss_unscaled():
    learner = _learner()
    assert learner.value_scale() == 1.0
    learner.policy.return_std.fill_(4.0)  # statistics are ignored by the loss when value_norm is off
    assert learner.value_scale() == 1.0

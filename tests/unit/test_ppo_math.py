"""PPO/GAE math against values computed by hand (see the comments for the arithmetic)."""

import math

import pytest
import torch

from learner_service.ppo import compute_gae, ppo_loss
from marlmesh.config import PPOConfig

# T=3, B=1, gamma=0.9, lambda=0.8; rewards [1, 0, 2]; V [0.5, 0.4, 0.3]; next V [0.4, 0.3, 0.2 (bootstrap)]
R = torch.tensor([[1.0], [0.0], [2.0]])
V = torch.tensor([[0.5], [0.4], [0.3]])
NV = torch.tensor([[0.4], [0.3], [0.2]])
F = torch.zeros(3, 1, dtype=torch.bool)


def _flags(t: int) -> torch.Tensor:
    f = F.clone()
    f[t] = True
    return f


def test_gae_without_episode_end():
    # delta2 = 2 + .9*.2 - .3 = 1.88; delta1 = .9*.3 - .4 = -.13; delta0 = 1 + .9*.4 - .5 = .86
    # adv2 = 1.88; adv1 = -.13 + .72*1.88 = 1.2236; adv0 = .86 + .72*1.2236 = 1.740992
    adv, ret = compute_gae(R, V, NV, F, F, 0.9, 0.8)
    assert adv.squeeze(1).tolist() == pytest.approx([1.740992, 1.2236, 1.88], abs=1e-6)
    assert ret.squeeze(1).tolist() == pytest.approx([2.240992, 1.6236, 2.18], abs=1e-6)


def test_gae_bootstraps_on_truncation_and_stops_carry():
    # truncated at t=1 with V(final obs) = 1.0: delta1 = .9*1 - .4 = .5, no carry from t=2; adv0 = .86 + .72*.5
    nv = NV.clone()
    nv[1] = 1.0
    adv, _ = compute_gae(R, V, nv, F, _flags(1), 0.9, 0.8)
    assert adv.squeeze(1).tolist() == pytest.approx([1.22, 0.5, 1.88], abs=1e-6)


def test_gae_no_bootstrap_on_termination():
    # terminated at t=1: delta1 = 0 - .4 = -.4; adv0 = .86 + .72*(-.4) = .572
    adv, _ = compute_gae(R, V, NV, _flags(1), F, 0.9, 0.8)
    assert adv.squeeze(1).tolist() == pytest.approx([0.572, -0.4, 1.88], abs=1e-6)


def test_ppo_loss_clipping_value_entropy():
    # ratios [1.25, .75], advantages [1, -1]: clipped surrogate terms max(-1.25, -1.2) = -1.2, max(.75, .8) = .8
    # policy loss -0.2; value loss .5*mean([1, 4]) = 1.25; entropy 1.0; total -0.2 - .01*1 + .5*1.25 = 0.415
    cfg = PPOConfig()
    new = torch.tensor([math.log(0.5), math.log(0.3)])
    old = torch.tensor([math.log(0.4), math.log(0.4)])
    loss, stats = ppo_loss(
        new, old, torch.tensor([1.0, -1.0]), torch.tensor([1.0, 2.0]), torch.zeros(2), torch.tensor([0.5, 1.5]), cfg
    )
    assert float(loss) == pytest.approx(0.415, abs=1e-6)
    assert stats["policy_loss"] == pytest.approx(-0.2, abs=1e-6)
    assert stats["value_loss"] == pytest.approx(1.25, abs=1e-6)
    assert stats["entropy"] == pytest.approx(1.0)
    assert stats["clip_fraction"] == pytest.approx(1.0)


def test_ppo_loss_gradient_is_zero_outside_the_clip_region():
    cfg = PPOConfig()
    new = torch.tensor([math.log(0.6)], requires_grad=True)  # ratio 1.5 > 1.2 with a positive advantage
    loss, _ = ppo_loss(
        new, torch.tensor([math.log(0.4)]), torch.tensor([1.0]), torch.zeros(1), torch.zeros(1), torch.zeros(1), cfg
    )
    loss.backward()
    assert new.grad is not None and float(new.grad) == 0.0

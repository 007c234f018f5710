"""The learner clips the critics' gradient apart from the actor's (a large value loss must not shrink policy steps),
unless ``algo.ppo.grad_clip=joint`` asks for one clip over all parameters."""

import torch

from learner_service.algos import CO2PO, IPPO
from marlmesh import plugins
from marlmesh.config import load_config
from marlmesh.policy_spec import PolicySpec
from marlmesh.spaces import SpaceSpec

N, OBS, M = 3, 6, 4


def _learner(algo, channel: str, grad_clip: str = "per_group"):
    overrides = [f"channel.name={channel}", f"channel.message_dim={M}", "algo.ppo.max_grad_norm=0.5"]
    config = load_config(None, [*overrides, f"algo.ppo.grad_clip={grad_clip}"])
    spec = PolicySpec(
        agent_index=0,
        num_agents=N,
        obs_space=SpaceSpec(kind="box", shape=(OBS,), low=(), high=()),
        action_space=SpaceSpec(kind="discrete", n=3),
        message_dim=M,
        hidden_sizes=(16, 16),
    )
    return algo().build_learner(config, spec, plugins.load("channels", channel)(config.channel))


def _norm(params) -> float:
    return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None)))


def _backward_small_policy_loss_large_value_loss(policy) -> None:
    obs = torch.randn(64, OBS)
    inboxes = [(torch.randn(64, N, M), torch.ones(64, N))]
    dist, value = policy.forward_all(obs, inboxes)
    actions = torch.zeros(64, dtype=torch.long)
    policy_loss = -(policy.actor.log_prob(dist, actions)).mean() * 1e-3  # a small policy gradient
    value_loss = 0.5 * (value - 1000.0).pow(2).mean()  # returns far from the initial values
    (policy_loss + value_loss).backward()


def test_value_loss_gradient_does_not_shrink_the_actor_step():
    learner = _learner(IPPO, "broadcast")
    policy = learner.policy
    _backward_small_policy_loss_large_value_loss(policy)
    head = list(policy.actor.parameters())
    before = [p.grad.clone() for p in head]
    assert _norm(head) < 0.5
    norms = learner.clip_gradients()
    assert norms["grad_norm_critic"] > 100.0
    assert _norm(policy.critic.parameters()) <= 0.5 + 1e-4
    assert norms["grad_norm_shared"] > 0.5  # the encoder also gets the value loss: clipped on its own
    for p, g in zip(head, before, strict=True):  # a joint clip would scale these by ~0.5 / norm_critic
        assert torch.equal(p.grad, g)


def test_joint_clip_scales_every_gradient_by_one_factor():
    learner = _learner(IPPO, "broadcast", grad_clip="joint")
    policy = learner.policy
    _backward_small_policy_loss_large_value_loss(policy)
    params = list(policy.parameters())
    before = [p.grad.clone() for p in params]
    total = _norm(params)
    assert total > 100.0
    norms = learner.clip_gradients()
    assert set(norms) == {"grad_norm_all"}
    assert abs(norms["grad_norm_all"] - total) < 1e-3 * total
    assert abs(_norm(params) - 0.5) < 1e-4
    for p, g in zip(params, before, strict=True):  # the actor head shrinks by the critic's ratio too
        torch.testing.assert_close(p.grad, g * (0.5 / total), rtol=1e-4, atol=1e-9)


def test_every_parameter_is_in_exactly_one_clip_group():
    for algo, channel in ((IPPO, "none"), (IPPO, "broadcast"), (IPPO, "dgat"), (CO2PO, "blackboard")):
        learner = _learner(algo, channel)
        grouped = [id(p) for params in learner.clip_groups.values() for p in params]
        assert sorted(grouped) == sorted(id(p) for p in learner.policy.parameters()), channel
    co2po = _learner(CO2PO, "blackboard")
    critic_ids = {id(p) for p in co2po.clip_groups["critic"]}
    assert all(id(p) in critic_ids for p in co2po.policy.cost_critic.parameters())

"""The learner's PPO update on real policies: it learns, it stays consistent with the actor, it guards its data."""

import dataclasses

import numpy as np
import pytest
import torch

from learner_service.metrics import UPDATE_REJECT_CAUSES
from learner_service.node import LearnerNode
from marlmesh import plugins
from marlmesh.config import load_config
from marlmesh.policy_spec import PolicySpec
from marlmesh.rollout import RolloutRecorder
from marlmesh.spaces import SpaceSpec

T, B, N, OBS, M = 8, 16, 3, 6, 4


def _spec(kind: str, agent: int = 0) -> PolicySpec:
    act = (
        SpaceSpec(kind="discrete", n=3)
        if kind == "discrete"
        else SpaceSpec(kind="box", shape=(2,), low=(-1, -1), high=(1, 1))
    )
    return PolicySpec(
        agent_index=agent,
        num_agents=N,
        obs_space=SpaceSpec(kind="box", shape=(OBS,), low=(), high=()),
        action_space=act,
        message_dim=M,
        hidden_sizes=(32, 32),
    )


def _config(channel: str):
    return load_config(
        None,
        [
            f"channel.name={channel}",
            f"channel.message_dim={M}",
            "algo.ppo.epochs=4",
            "algo.ppo.minibatches=2",
            "algo.ppo.lr=0.01",
            "train.rollout_steps=8",
        ],
    )


def _bandit_fragment(node: LearnerNode, rng: np.random.Generator, kind: str) -> dict:
    """Act with the node's own policy on random observations; reward 1 for action 0 (or for a[0] > 0)."""
    policy, channel = node.policy, node.channel
    rec = RolloutRecorder(T, B, (OBS,), node.spec.action_space, channel.rounds, N, M)
    for _ in range(T):
        obs = rng.normal(size=(B, OBS)).astype(np.float32)
        inboxes = [
            (rng.normal(size=(B, N, M)).astype(np.float32), (rng.random((B, N)) < 0.7).astype(np.float32))
            for _ in range(channel.rounds)
        ]
        with torch.no_grad():
            boxes = [(torch.from_numpy(m), torch.from_numpy(k)) for m, k in inboxes]
            state, _ = policy.encode(torch.from_numpy(obs))
            for k in range(1, channel.rounds):  # the agent's stage-by-stage path
                state, _ = policy.round(k, state, boxes[k - 1])
            dist, value = policy.act(state, boxes)
            action = policy.actor.sample(dist, False)
            logp = policy.actor.log_prob(dist, action)
        a = action.numpy()
        reward = (a == 0).astype(np.float32) if kind == "discrete" else (a[:, 0] > 0).astype(np.float32)
        rec.add_decision(obs, inboxes, a, logp.numpy(), value.numpy(), node.version)
        rec.add_outcome(reward, np.zeros(B, bool), np.zeros(B, bool), np.zeros((B, OBS), np.float32))
    return rec.finish(rng.normal(size=(B, OBS)).astype(np.float32), inboxes)


def _mean_reward_prob(node: LearnerNode, kind: str) -> float:
    torch.manual_seed(0)
    obs = torch.randn(256, OBS)
    inboxes = [(torch.randn(256, N, M), torch.ones(256, N)) for _ in range(node.channel.rounds)]
    with torch.no_grad():
        dist, _ = node.policy.forward_all(obs, inboxes)
        if kind == "discrete":
            return float(dist.probs[:, 0].mean())
        return float((dist.sample((64,))[..., 0] > 0).float().mean())


@pytest.mark.parametrize("channel", ["none", "broadcast", "dgat", "meanfield"])
@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_ppo_update_raises_the_probability_of_rewarded_actions(kind, channel):
    torch.manual_seed(1)
    node = LearnerNode(_config(channel), _spec(kind), checkpoint_dir=None)
    rng = np.random.default_rng(0)
    before = _mean_reward_prob(node, kind)
    for _ in range(6):
        assert node.submit(0, _bandit_fragment(node, rng, kind)) == (True, "")
        assert node.train_next(timeout=1.0)
    after = _mean_reward_prob(node, kind)
    assert node.version == 6 and node.samples_trained == 6 * T * B
    assert after > before + 0.15, (before, after)
    assert node.last_stats["approx_kl"] > 0


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_actor_logp_equals_learner_evaluate_on_recorded_inputs(kind):
    """What the agent records as behaviour log-prob is what the learner recomputes (ratio exactly 1)."""
    torch.manual_seed(2)
    node = LearnerNode(_config("broadcast"), _spec(kind), checkpoint_dir=None)
    cols = _bandit_fragment(node, np.random.default_rng(3), kind)
    flat = lambda x: torch.from_numpy(np.array(x)).reshape(T * B, *x.shape[2:])  # noqa: E731
    inbox = [(flat(cols["inbox.0.msg"]), flat(cols["inbox.0.mask"]))]
    with torch.no_grad():
        logp, _, value = node.policy.evaluate(flat(cols["obs"]), inbox, flat(cols["action"]))
    np.testing.assert_allclose(logp.numpy(), flat(cols["logp"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(value.numpy(), flat(cols["value"]).numpy(), atol=1e-5)


def test_learner_rejects_another_agents_fragment_and_bad_columns():
    node = LearnerNode(_config("broadcast"), _spec("discrete", agent=1), checkpoint_dir=None)
    cols = _bandit_fragment(node, np.random.default_rng(4), "discrete")
    accepted, reason = node.submit(2, cols)
    assert not accepted and "agent 2" in reason
    bad = dict(cols)
    bad["obs"] = bad["obs"][:, :, :3]
    accepted, reason = node.submit(1, bad)
    assert not accepted and "obs" in reason
    assert node.dropped == {"wrong_agent": 1, "bad_shape": 1}
    assert node.submit(1, cols) == (True, "")
    assert node.train_next(timeout=1.0) and node.version == 1


def test_channel_plugins_build_policies_for_heterogeneous_specs():
    for name in ("none", "broadcast", "dgat", "meanfield", "blackboard"):
        channel = plugins.load("channels", name)(_config(name).channel)
        for kind in ("discrete", "box"):
            policy = channel.build_policy(_spec(kind))
            assert policy.rounds == channel.rounds


def test_update_with_non_finite_loss_is_rolled_back_and_the_next_one_trains():
    """Huge but finite rewards overflow the advantages: the learner keeps its version, parameters and Adam state."""
    node = LearnerNode(_config("broadcast"), _spec("discrete"), checkpoint_dir=None)
    rng = np.random.default_rng(5)
    assert node.submit(0, _bandit_fragment(node, rng, "discrete")) == (True, "")
    assert node.train_next(timeout=1.0) and node.version == 1
    params = {k: v.clone() for k, v in node.policy.state_dict().items()}
    adam = {k: s["exp_avg"].clone() for k, s in node.learner.optimizer.state_dict()["state"].items()}
    huge = _bandit_fragment(node, rng, "discrete")
    huge["reward"] = np.full_like(huge["reward"], 3e38)
    assert node.submit(0, huge) == (True, "")
    assert not node.train_next(timeout=1.0)
    assert node.version == 1 and node.updates == 1 and node.wait_newer(0, 0.0).version == 1
    for k, v in node.policy.state_dict().items():
        assert torch.equal(v, params[k]), k
    for k, s in node.learner.optimizer.state_dict()["state"].items():
        assert torch.equal(s["exp_avg"], adam[k])
    status = node.status()
    assert set(status["updates_rejected"]) == set(UPDATE_REJECT_CAUSES)
    assert sum(status["updates_rejected"].values()) == 1
    assert status["fragments_dropped"] == {"non_finite_update": 1}
    assert node.submit(0, _bandit_fragment(node, rng, "discrete")) == (True, "")
    assert node.train_next(timeout=1.0) and node.version == 2


def test_an_agent_with_a_single_action_trains_its_critic():
    """speaker_listener_nocomm's speaker has Discrete(1): no policy gradient, but the update runs and learns values."""
    torch.manual_seed(3)
    spec = dataclasses.replace(_spec("discrete"), action_space=SpaceSpec(kind="discrete", n=1))
    node = LearnerNode(_config("broadcast"), spec, checkpoint_dir=None)
    rng = np.random.default_rng(6)
    obs = torch.randn(64, OBS)
    inboxes = [(torch.randn(64, N, M), torch.ones(64, N)) for _ in range(node.channel.rounds)]
    with torch.no_grad():
        before = node.policy.forward_all(obs, inboxes)[1]
    for _ in range(2):
        assert node.submit(0, _bandit_fragment(node, rng, "discrete")) == (True, "")  # reward 1 every step
        assert node.train_next(timeout=1.0)
    with torch.no_grad():
        dist, after = node.policy.forward_all(obs, inboxes)
    assert node.version == 2 and node.last_stats["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert torch.all(dist.probs == 1.0) and torch.isfinite(after).all()
    assert (after - before).mean() > 0.05  # the value moves towards the (positive) returns

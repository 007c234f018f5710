"""Co2PO: hazard gating (no message below threshold), hazard labels, dual ascent, threshold adaptation."""

import numpy as np
import pytest
import torch

from learner_service.co2po import hazard_labels
from marlmesh import plugins
from marlmesh.config import load_config
from marlmesh.rollout import RolloutRecorder
from marlmesh.testing.channels import build_team, full_links, make_spec, run_stages

B, N, M = 6, 3, 6


def _config(*extra):
    return load_config(
        None,
        ["algo.name=co2po", "channel.name=blackboard", f"channel.message_dim={M}", "algo.ppo.epochs=2", *extra],
    )


def _set_hazard_bias(policy, bias: float) -> None:
    last = [m for m in policy.hazard_head if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)


def test_no_message_is_sent_while_hazard_is_below_threshold():
    channel = plugins.load("channels", "blackboard")(_config().channel)
    team = build_team(channel, N)
    obs = [np.random.default_rng(i).normal(size=(B, 6)).astype(np.float32) for i in range(N)]
    for policy in team:
        _set_hazard_bias(policy, -3.0)  # p = 0.047 < 0.5
    step = run_stages(channel, team, obs)
    for i in range(N):
        assert not channel.send_rows(step.outboxes[i][0]).any()
        assert not step.sent_rows[i][0].any() and not step.inboxes[i][0][1].any()
    # receivers ignore unflagged rows even if a bus delivered them: no writer seen
    from marlmesh.policies.blackboard import written_mask

    msgs, mask = step.inboxes[0][0]
    assert not written_mask((torch.from_numpy(msgs), torch.from_numpy(mask))).any()
    # mixed hazards: exactly the rows above the threshold are sent
    policy = team[1]
    last = [m for m in policy.hazard_head if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.weight[0, 0] = 5.0
        last.bias.zero_()
    step = run_stages(channel, team, obs)
    with torch.no_grad():
        p = torch.sigmoid(policy.hazard_logit(torch.from_numpy(obs[1]))).numpy()
    np.testing.assert_array_equal(channel.send_rows(step.outboxes[1][0]), p > 0.5)
    # ... and, on a bus that sends only those rows (run_stages passes them as .rows), only they are heard
    np.testing.assert_array_equal(step.inboxes[0][0][1][:, 1], (p > 0.5).astype(np.float32))
    np.testing.assert_array_equal(step.inboxes[2][0][1][:, 1], (p > 0.5).astype(np.float32))
    assert 0 < (p > 0.5).sum() < B


def test_hazard_labels_by_hand():
    cost = torch.tensor([[0.0], [0.0], [1.0], [0.0], [0.0], [0.0], [2.0]])
    done = torch.tensor([[False], [False], [False], [False], [True], [False], [False]])
    # H = 2: steps 1, 2 see the cost at 2; steps 5, 6 see the one at 6; step 4 ends the episode
    got = hazard_labels(cost, done, 2)[:, 0].tolist()
    assert got == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    got3 = hazard_labels(cost, done, 3)[:, 0].tolist()
    assert got3 == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def _fragment(learner, cost_value: float, steps: int = 8):
    policy = learner.policy
    channel = plugins.load("channels", "blackboard")(_config().channel)
    team = build_team(channel, N)
    team[0].load_state_dict(policy.state_dict())
    rec = RolloutRecorder(steps, B, (6,), policy.spec.action_space, 1, N, M)
    rng = np.random.default_rng(0)
    for t in range(steps + 1):
        obs = [rng.normal(size=(B, 6)).astype(np.float32) for _ in range(N)]
        step = run_stages(channel, team, obs, full_links(B, N))
        if t == steps:
            return rec.finish(obs[0], step.inboxes[0])
        action = team[0].actor.sample(step.dists[0], False)
        logp = team[0].actor.log_prob(step.dists[0], action)
        rec.add_decision(obs[0], step.inboxes[0], action.numpy(), logp.numpy(), step.values[0].numpy(), 0)
        cost = (rng.random(B) < cost_value).astype(np.float32)
        rec.add_outcome(
            np.zeros(B, np.float32), np.zeros(B, bool), np.zeros(B, bool), np.zeros((B, 6), np.float32), cost
        )


@pytest.mark.parametrize(("cost_rate", "direction"), [(0.5, 1), (0.0, 0)])
def test_dual_ascent_and_threshold_adaptation(cost_rate, direction):
    config = _config("algo.co2po.lagrange_init=0.2", "channel.blackboard.target_rate=0.25")
    learner = plugins.load("algos", "co2po")().build_learner(config, make_spec(0, N, M), _channel(config))
    before_thr = float(learner.policy.hazard_threshold)
    stats = learner.update(_fragment(learner, cost_rate))
    assert all(np.isfinite(v) for v in stats.values()), stats
    if direction > 0:
        assert stats["lagrange"] > 0.2
    else:
        assert stats["lagrange"] < 0.2
    # the threshold moved toward the quantile that gives the target rate
    assert stats["threshold"] != before_thr
    assert float(learner.policy.hazard_threshold) == pytest.approx(stats["threshold"])
    assert float(learner.policy.lagrange) == pytest.approx(stats["lagrange"])


def _channel(config):
    return plugins.load("channels", "blackboard")(config.channel)

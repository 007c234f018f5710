"""dgmappo / mfppo wiring, an agent removed mid-episode, mean-field message size independent of N."""

import time

import numpy as np
import pytest
import torch

from comm_bus.envelope import Envelope, serialize
from learner_service.algos import DGMAPPO, MFPPO
from marlmesh import plugins
from marlmesh.config import ConfigError, load_config
from marlmesh.launch.train import check_plugins
from marlmesh.rollout import RolloutRecorder
from marlmesh.testing.channels import build_team, full_links, make_spec, run_stages


@pytest.mark.parametrize(
    ("algo", "channel", "ok"),
    [
        ("dgmappo", "dgat", True),
        ("dgmappo", "broadcast", False),
        ("mfppo", "meanfield", True),
        ("mfppo", "none", False),
        ("ippo", "dgat", True),
        ("ippo", "meanfield", True),
        ("co2po", "blackboard", True),
        ("co2po", "dgat", False),
    ],
)
def test_algo_channel_pairing_is_checked_at_start(algo, channel, ok):
    config = load_config(None, [f"algo.name={algo}", f"channel.name={channel}"])
    if ok:
        check_plugins(config)
        return
    with pytest.raises(ConfigError) as exc:
        check_plugins(config)
    msg = str(exc.value)
    assert f"algo.name={algo} needs channel.name=" in msg and "--set channel.name=" in msg and "\n" not in msg


def test_algos_build_learners_on_their_channels():
    for algo_cls, channel_name in ((DGMAPPO, "dgat"), (MFPPO, "meanfield")):
        config = load_config(None, [f"algo.name={algo_cls.name}", f"channel.name={channel_name}"])
        channel = plugins.load("channels", channel_name)(config.channel)
        learner = algo_cls().build_learner(config, make_spec(0, 3, config.channel.message_dim), channel)
        assert learner.policy.rounds == channel.rounds
        wrong = plugins.load("channels", "broadcast")(config.channel)
        with pytest.raises(ConfigError):
            algo_cls().build_learner(config, make_spec(0, 3, config.channel.message_dim), wrong)


@pytest.mark.parametrize("channel_name", ["dgat", "meanfield", "broadcast"])
def test_agent_removed_mid_episode_no_nan_and_learner_trains(channel_name):
    """Agent 2 dies at step 3 (silent and deaf from then on): every output and the PPO update stay finite."""
    steps, batch, n = 6, 4, 3
    config = load_config(
        None,
        [f"channel.name={channel_name}", "channel.message_dim=8", "algo.ppo.epochs=2", "algo.ppo.minibatches=2"],
    )
    channel = plugins.load("channels", channel_name)(config.channel)
    team = build_team(channel, n)
    learner_algo = plugins.load("algos", "ippo")()
    learner = learner_algo.build_learner(config, make_spec(0, n, 8), channel)
    learner.policy.load_state_dict(team[0].state_dict())
    rec = RolloutRecorder(steps, batch, (6,), team[0].spec.action_space, channel.rounds, n, 8)
    rng = np.random.default_rng(0)
    links = full_links(batch, n)
    for t in range(steps + 1):
        if t == 3:
            links[:, 2, :] = False
            links[:, :, 2] = False
        obs = [rng.normal(size=(batch, 6)).astype(np.float32) for _ in range(n)]
        step = run_stages(channel, team, obs, links)
        for i in range(n):
            assert torch.isfinite(step.values[i]).all()
            assert torch.isfinite(step.dists[i].logits).all()
        if t >= 3:
            for msgs, mask in step.inboxes[0]:
                assert not mask[:, 2].any() and not msgs[:, 2].any()
        if t == steps:
            fragment = rec.finish(obs[0], step.inboxes[0])
            break
        action = team[0].actor.sample(step.dists[0], False)
        rec.add_decision(
            obs[0],
            step.inboxes[0],
            action.numpy(),
            team[0].actor.log_prob(step.dists[0], action).numpy(),
            step.values[0].numpy(),
            0,
        )
        rec.add_outcome(
            rng.normal(size=batch).astype(np.float32),
            np.zeros(batch, bool),
            np.zeros(batch, bool),
            np.zeros((batch, 6), np.float32),
        )
    stats = learner.update(fragment)
    assert all(np.isfinite(v) for v in stats.values()), stats
    assert all(torch.isfinite(p).all() for p in learner.policy.parameters())


def _sent_bytes_per_agent_step(channel_name: str, n: int, batch: int = 32) -> tuple[int, int]:
    """(payload bytes of one message, serialized frame bytes one agent emits per env step, i.e. over all rounds).

    The bus copies each frame to every live peer (unicast PUSH); on a shared medium one copy is sent.
    """
    config = load_config(None, [f"channel.name={channel_name}", "channel.message_dim=16"])
    channel = plugins.load("channels", channel_name)(config.channel)
    team = build_team(channel, n)
    rng = np.random.default_rng(n)
    obs = [rng.normal(size=(batch, 6)).astype(np.float32) for _ in range(n)]
    step = run_stages(channel, team, obs)
    payload_bytes = 0
    frame_bytes = 0
    for k, out in enumerate(step.outboxes[0]):
        payload = channel.payload(out)
        payload_bytes = sum(v.nbytes for v in payload.values())
        env = Envelope(
            src=0, dst=-1, channel=channel.name, tick=123, round=k, seq=7, sent_at=time.time(), payload=payload
        )
        frame_bytes += len(serialize(env))
    return payload_bytes, frame_bytes


def test_meanfield_message_size_does_not_grow_with_n():
    p4, f4 = _sent_bytes_per_agent_step("meanfield", 4)
    p8, f8 = _sent_bytes_per_agent_step("meanfield", 8)
    assert p4 == p8 == 32 * 16 * 4
    assert f4 == f8


def test_meanfield_action_summary_is_the_own_action_distribution():
    config = load_config(None, ["channel.name=meanfield", "channel.meanfield.summary=action", "channel.message_dim=8"])
    channel = plugins.load("channels", "meanfield")(config.channel)
    team = build_team(channel, 3)
    obs = [np.random.default_rng(i).normal(size=(5, 6)).astype(np.float32) for i in range(3)]
    step = run_stages(channel, team, obs)
    sent = step.outboxes[1][0]
    np.testing.assert_allclose(sent[:, :5].sum(-1), 1.0, rtol=1e-5)  # Discrete(5) probabilities
    np.testing.assert_array_equal(sent[:, 5:], 0.0)
    too_small = load_config(
        None, ["channel.name=meanfield", "channel.meanfield.summary=action", "channel.message_dim=3"]
    )
    with pytest.raises(ValueError, match="message_dim >= 5"):
        plugins.load("channels", "meanfield")(too_small.channel).build_policy(make_spec(0, 3, 3))


@pytest.mark.parametrize("name", ["dgmappo", "mfppo", "ippo", "co2po"])
def test_shipped_algorithm_configs_pass_the_start_checks(name):
    config = load_config(f"configs/{name}.yaml")
    check_plugins(config)
    assert config.algo.name == name and config.env.kwargs["N"] == 3

"""The in-process learning harness: ideal inboxes, fragments like the agent's, lagged actor parameters."""

import json

import numpy as np

from learner_service.inprocess import InProcessTrainer, ideal_inboxes
from learner_service.node import policy_params
from marlmesh.checkpoint import checkpoint_path, load_latest
from marlmesh.config import load_config


def test_ideal_inboxes_hear_every_peer_but_not_self():
    outs = [np.full((2, 3), float(i), np.float32) for i in range(3)]
    boxes = ideal_inboxes(outs)
    for i, (msgs, mask) in enumerate(boxes):
        assert msgs.shape == (2, 3, 3) and mask.shape == (2, 3)
        assert mask[:, i].sum() == 0 and mask.sum() == 2 * 2
        for j in range(3):
            assert np.all(msgs[:, j] == (0.0 if j == i else float(j)))


def _trainer(lag: int) -> InProcessTrainer:
    config = load_config(
        "configs/smoke.yaml", ["train.rollout_steps=5", "env.num_envs=2", "algo.ppo.epochs=1", "algo.ppo.minibatches=1"]
    )
    return InProcessTrainer(config, policy_lag=lag)


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_fragments_train_the_learners_and_lag_delays_the_actors():
    for lag in (0, 1):
        trainer = _trainer(lag)
        try:
            initial = policy_params(trainer.learners[0].policy)
            fragments = []
            while not fragments:
                fragments = trainer.step()
            assert fragments[0]["obs"].shape[:2] == (5, 2) and "boot.inbox.0.msg" in fragments[0]
            assert np.all(fragments[0]["policy_version"] == 0)
            trainer.train(fragments)
            learned = policy_params(trainer.learners[0].policy)
            acting = {k: v.numpy() for k, v in trainer.actors[0].policy.state_dict().items()}
            assert not _same(learned, initial)
            assert _same(acting, learned if lag == 0 else initial)
        finally:
            trainer.close()


def test_greedy_evaluation_is_repeatable_and_leaves_training_alone():
    trainer = _trainer(0)
    try:
        steps = trainer.env.env_steps
        first = trainer.evaluate(episodes=4, num_envs=2, seed=99)
        assert first == trainer.evaluate(episodes=4, num_envs=2, seed=99)  # greedy actions, same env seeds
        assert np.isfinite(first[0]) and first[0] < 0 and first[1] >= 0
        assert trainer.env.env_steps == steps  # its own env copies
    finally:
        trainer.close()


def _gossip_trainer() -> InProcessTrainer:
    config = load_config(
        "configs/smoke.yaml",
        [
            "algo.name=dgmappo",
            "channel.name=dgat",
            "algo.dgmappo.gossip.enabled=true",
            "train.rollout_steps=5",
            "env.num_envs=2",
            "algo.ppo.epochs=1",
            "algo.ppo.minibatches=1",
        ],
    )
    return InProcessTrainer(config)


def test_gossip_on_the_complete_graph_mixes_to_the_average_of_the_updated_learners():
    trainer = _gossip_trainer()
    try:
        fragments = []
        while not fragments:
            fragments = trainer.step()
        for learner, frag in zip(trainer.learners, fragments, strict=True):
            learner.update(frag)
        updated = [policy_params(learner.policy) for learner in trainer.learners]
        assert not _same(updated[0], updated[1])
        trainer._mix(rounds=1)  # N=3, complete graph: every Metropolis-Hastings weight is 1/3
        for learner in trainer.learners:
            mixed = policy_params(learner.policy)
            for key, value in mixed.items():
                assert np.allclose(value, sum(u[key] for u in updated) / 3, atol=1e-6), key
        trainer.train(fragments)  # train() mixes after the updates: the learners end equal (to float rounding)
        after = [policy_params(learner.policy) for learner in trainer.learners]
        for a in after[1:]:
            assert all(np.allclose(after[0][k], a[k], rtol=0, atol=1e-6) for k in a)
    finally:
        trainer.close()


def test_save_dir_writes_policies_that_spread_diagnostics_plays(tmp_path, capsys):
    from learner_service.inprocess import main
    from marlmesh.experiments.spread_diagnostics import main as diagnostics

    sets = ["train.rollout_steps=5", "env.num_envs=2", "algo.ppo.epochs=1", "algo.ppo.minibatches=1"]
    argv = ["-c", "configs/dgmappo.yaml", "--env-steps", "40", "--log-every", "20", "--save-dir", str(tmp_path)]
    assert main([*argv, *[x for s in sets for x in ("--set", s)]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[-1]["updates"] >= 1
    assert load_config(tmp_path / "config.yaml", []).train.rollout_steps == 5  # the config it trained with
    for i in range(3):
        found = load_latest(tmp_path / "checkpoints" / f"agent-{i}")
        assert found is not None and found[1] == checkpoint_path(found[1].parent, lines[-1]["updates"])
    assert diagnostics([str(tmp_path), "--episodes", "2"]) == 0
    assert "greedy episodes: return" in capsys.readouterr().out

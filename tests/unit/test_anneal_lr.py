"""``algo.ppo.anneal_lr``: the learning rate decays linearly over the run's budget (samples or wall clock)."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from learner_service.node import LearnerNode
from marlmesh.config import load_config
from tests.unit.test_learner_update import B, T, _bandit_fragment, _spec

LR = 0.01


def _node(*extra: str, checkpoint_dir: Path | None = None) -> LearnerNode:
    config = load_config(
        None,
        [
            "channel.name=none",
            "algo.ppo.epochs=1",
            "algo.ppo.minibatches=1",
            f"algo.ppo.lr={LR}",
            "train.rollout_steps=8",
            f"train.total_env_steps={4 * T * B}",
            *extra,
        ],
    )
    torch.manual_seed(0)
    return LearnerNode(config, _spec("discrete"), checkpoint_dir=checkpoint_dir)


def _optimizer_lrs(node: LearnerNode) -> set[float]:
    return {group["lr"] for group in node.learner.optimizer.param_groups}


def test_annealed_lr_falls_linearly_with_the_samples_trained():
    node = _node("algo.ppo.anneal_lr=true")
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(4):
        assert node.submit(0, _bandit_fragment(node, rng, "discrete")) == (True, "")
        assert node.train_next(timeout=1.0)
        seen.append(node.last_stats["lr"])
        assert _optimizer_lrs(node) == {node.last_stats["lr"]}
    # each update uses the rate for the samples trained before it: 0, 1/4, 2/4, 3/4 of the budget
    assert seen == pytest.approx([LR, 0.75 * LR, 0.5 * LR, 0.25 * LR])
    assert node.learner.set_progress(node.budget_fraction()) == 0.0  # the budget is spent
    assert node.learner.set_progress(1.7) == 0.0  # never negative


def test_lr_stays_constant_without_annealing():
    node = _node()
    rng = np.random.default_rng(0)
    for _ in range(3):
        assert node.submit(0, _bandit_fragment(node, rng, "discrete")) == (True, "")
        assert node.train_next(timeout=1.0)
        assert node.last_stats["lr"] == LR and _optimizer_lrs(node) == {LR}


def test_the_wall_clock_budget_counts_when_it_is_further_along():
    node = _node("algo.ppo.anneal_lr=true", "train.max_wall_seconds=0.5")
    time.sleep(0.26)
    fraction = node.budget_fraction()
    assert 0.5 <= fraction < 1.0  # no sample trained yet: the clock decides
    assert node.learner.set_progress(fraction) == pytest.approx(LR * (1 - fraction))


def test_a_resumed_learner_keeps_the_running_time_of_its_checkpoint(tmp_path: Path):
    # A learner that restarts (its pod was rescheduled) must not restart the wall-clock part of the annealing:
    # it would train the rest of the run at a higher rate than the budget left allows.
    sets = ("algo.ppo.anneal_lr=true", "train.max_wall_seconds=10", "train.total_env_steps=100000000")
    first = _node(*sets, checkpoint_dir=tmp_path)
    time.sleep(0.6)
    assert first.submit(0, _bandit_fragment(first, np.random.default_rng(0), "discrete")) == (True, "")
    assert first.train_next(timeout=1.0)  # writes a checkpoint
    resumed = _node(*sets, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_version == 1
    assert resumed.train_seconds() >= 0.6
    assert resumed.budget_fraction() >= 0.06  # samples alone: 800 / 1e8

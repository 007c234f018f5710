"""``algo.ppo.anneal_lr``: the learning rate decays linearly over the run's budget (samples or wall clock)."""

import time

import numpy as np
import pytest
import torch

from learner_service.node import LearnerNode
from marlmesh.config import load_config
from tests.unit.test_learner_update import B, T, _bandit_fragment, _spec

LR = 0.01


def _node(*extra: str) -> LearnerNode:
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
    return LearnerNode(config, _spec("discrete"), checkpoint_dir=None)


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

"""A learner's Prometheus series follow its updates and fragment accounting (own registry, real PPO updates)."""

import numpy as np
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from learner_service.metrics import LearnerMetrics
from learner_service.node import LearnerNode
from tests.unit.test_learner_update import B, T, _bandit_fragment, _config, _spec


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_updates_and_fragments_set_the_agents_series() -> None:
    torch.manual_seed(0)
    registry = CollectorRegistry()
    node = LearnerNode(_config("broadcast"), _spec("discrete", agent=1), None, metrics=LearnerMetrics(registry))
    rng = np.random.default_rng(0)
    cols = _bandit_fragment(node, rng, "discrete")
    assert not node.submit(2, cols)[0]
    for _ in range(3):
        assert node.submit(1, _bandit_fragment(node, rng, "discrete"))[0]
    assert node.train_next(timeout=1.0) and node.train_next(timeout=1.0)
    node.close()  # the queue limit (2) dropped one as superseded; close drops none (both trained)
    got = _samples(registry)
    a = (("agent", "1"),)
    assert got[("marlmesh_learner_policy_version", a)] == 2
    assert got[("marlmesh_learner_updates_total", a)] == 2
    assert got[("marlmesh_learner_samples_total", a)] == 2 * T * B
    assert got[("marlmesh_learner_fragments_accepted_total", a)] == 3
    assert got[("marlmesh_learner_fragments_rejected_total", (("agent", "1"), ("cause", "wrong_agent")))] == 1
    assert got[("marlmesh_learner_fragments_dropped_total", (("agent", "1"), ("cause", "superseded")))] == 1
    assert got[("marlmesh_learner_update_duration_seconds_count", a)] == 2
    assert got[("marlmesh_learner_update_duration_seconds_sum", a)] > 0
    for key, name in (
        ("policy_loss", "marlmesh_learner_policy_loss"),
        ("value_loss", "marlmesh_learner_value_loss"),
        ("entropy", "marlmesh_learner_entropy"),
        ("approx_kl", "marlmesh_learner_approx_kl"),
        ("clip_fraction", "marlmesh_learner_clip_fraction"),
        ("lr", "marlmesh_learner_learning_rate"),
    ):
        assert got[(name, a)] == node.last_stats[key], name
    groups = {dict(labels)["group"] for name, labels in got if name == "marlmesh_learner_grad_norm"}
    assert groups == {k.removeprefix("grad_norm_") for k in node.last_stats if k.startswith("grad_norm_")} != set()
    # series of features this run does not use stay absent
    assert not any(name.startswith(("marlmesh_learner_gossip", "marlmesh_learner_lagrange")) for name, _ in got)

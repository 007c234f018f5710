"""A learner's Prometheus series follow its updates and fragment accounting (own registry, real PPO updates)."""

import threading

import numpy as np
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from learner_service.metrics import DROP_CAUSES, REJECT_CAUSES, UPDATE_REJECT_CAUSES, LearnerMetrics
from learner_service.node import LearnerNode
from marlmesh import plugins
from marlmesh.testing.channels import make_spec
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


def test_every_cause_is_exported_at_zero_from_the_start() -> None:
    registry = CollectorRegistry()
    LearnerNode(_config("broadcast"), _spec("discrete", agent=0), None, metrics=LearnerMetrics(registry))
    got = _samples(registry)
    for name, causes in (
        ("marlmesh_learner_fragments_rejected_total", REJECT_CAUSES),
        ("marlmesh_learner_fragments_dropped_total", DROP_CAUSES),
        ("marlmesh_learner_updates_rejected_total", UPDATE_REJECT_CAUSES),
    ):
        for cause in causes:
            assert got[(name, (("agent", "0"), ("cause", cause)))] == 0, (name, cause)
    assert "invalid" not in REJECT_CAUSES and {"non_finite", "bad_shape", "bad_dtype"} <= set(REJECT_CAUSES)


def test_co2po_reports_its_multiplier_and_hazard_loss() -> None:
    from tests.unit.test_co2po import M as CO2PO_M
    from tests.unit.test_co2po import N as CO2PO_N
    from tests.unit.test_co2po import _channel as co2po_channel
    from tests.unit.test_co2po import _config as co2po_config
    from tests.unit.test_co2po import _fragment as co2po_fragment

    config = co2po_config()
    learner = plugins.load("algos", "co2po")().build_learner(
        config, make_spec(0, CO2PO_N, CO2PO_M), co2po_channel(config)
    )
    stats = learner.update(co2po_fragment(learner, 0.5))
    registry = CollectorRegistry()
    LearnerMetrics(registry).for_agent(0).updated(stats, version=1, seconds=0.1)
    got = _samples(registry)
    a = (("agent", "0"),)
    assert got[("marlmesh_learner_lagrange_multiplier", a)] == stats["lagrange"]
    assert got[("marlmesh_learner_hazard_loss", a)] == stats["hazard_bce"] > 0
    assert got[("marlmesh_learner_cost_value_loss", a)] == stats["cost_value_loss"]


def test_gossip_rounds_and_bytes_are_counted_per_learner() -> None:
    from tests.unit.test_gossip import _gossips

    torch.manual_seed(0)
    config, gossips = _gossips(
        3,
        "algo.dgmappo.gossip.enabled=true",
        "algo.dgmappo.gossip.rounds=2",
        "channel.message_dim=4",
        "algo.ppo.epochs=1",
        "train.rollout_steps=8",
    )
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry)
    nodes = [
        LearnerNode(config, _spec("discrete", agent=i), None, gossip=g, metrics=metrics) for i, g in enumerate(gossips)
    ]
    try:
        for i, node in enumerate(nodes):
            assert node.submit(i, _bandit_fragment(node, np.random.default_rng(i), "discrete"))[0]
        trained = [False] * 3

        def train(i: int) -> None:
            trained[i] = nodes[i].train_next(timeout=1.0)

        threads = [threading.Thread(target=train, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert all(trained)
    finally:
        for g in gossips:
            g.close()
    got = _samples(registry)
    for i, g in enumerate(gossips):
        a = (("agent", str(i)),)
        assert got[("marlmesh_learner_gossip_rounds_total", a)] == g.counters["rounds"] == 2
        assert got[("marlmesh_learner_gossip_sent_bytes_total", a)] == g.bus.totals.bytes_sent > 0
        assert got[("marlmesh_learner_gossip_received_bytes_total", a)] == g.bus.totals.bytes_received

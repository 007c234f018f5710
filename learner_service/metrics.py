"""Prometheus instruments of a learner, labelled by ``agent`` (fed by :class:`learner_service.node.LearnerNode`).

The hot path stays cheap: one update sets a dozen gauges and bumps two counters and a histogram. Gauges hold
the statistics of the last update (means over its minibatches). Label cardinality is bounded: ``agent`` (one
value per learner process), ``cause`` (the fixed fragment drop causes) and ``group`` (gradient-clip groups).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from marlmesh.rollout import FRAGMENT_REJECT_CAUSES

_UPDATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LAST_UPDATE_GAUGES: dict[str, tuple[str, str]] = {
    # stats key -> (metric name, help)
    "policy_loss": ("marlmesh_learner_policy_loss", "Clipped-surrogate policy loss of the last update"),
    "value_loss": ("marlmesh_learner_value_loss", "Critic loss of the last update"),
    "entropy": ("marlmesh_learner_entropy", "Mean policy entropy (nats) of the last update"),
    "approx_kl": ("marlmesh_learner_approx_kl", "Approximate KL(old || new) of the last update"),
    "clip_fraction": ("marlmesh_learner_clip_fraction", "Share of samples whose ratio was clipped, last update"),
    "lr": ("marlmesh_learner_learning_rate", "Learning rate of the last update"),
    "policy_lag": ("marlmesh_learner_policy_lag_versions", "Versions between the fragment's oldest policy and now"),
    "mean_reward": ("marlmesh_learner_fragment_mean_reward", "Mean per-step reward of the last trained fragment"),
    # Co2PO (algo co2po) only
    "lagrange": ("marlmesh_learner_lagrange_multiplier", "Co2PO Lagrange multiplier of the cost constraint"),
    "hazard_bce": ("marlmesh_learner_hazard_loss", "Co2PO hazard-predictor BCE loss of the last update"),
    "cost_value_loss": ("marlmesh_learner_cost_value_loss", "Co2PO cost-critic loss of the last update"),
}
"""Update statistics exported as gauges; a key the algorithm does not report leaves its gauge absent."""

REJECT_CAUSES = ("wrong_agent", "bad_tensor", "closed", *FRAGMENT_REJECT_CAUSES)
"""Causes of ``marlmesh_learner_fragments_rejected_total`` (exported at 0 from the start): ``wrong_agent`` (the
fragment claims another agent), ``bad_tensor`` (undecodable tensors), ``closed`` (the learner is stopping), and
the column checks of :data:`marlmesh.rollout.FRAGMENT_REJECT_CAUSES`."""

DROP_CAUSES = ("superseded", "shutdown", "non_finite_update")
"""Causes of ``marlmesh_learner_fragments_dropped_total`` (exported at 0 from the start): ``superseded`` (the
queue was full), ``shutdown`` (still queued at close), ``non_finite_update`` (its update was rolled back)."""

UPDATE_REJECT_CAUSES = ("non_finite_loss", "non_finite_grad", "non_finite_params")
"""Causes of ``marlmesh_learner_updates_rejected_total`` (exported at 0 from the start): an update whose loss
(or a loss statistic) was non-finite, whose gradient norm was, or that left non-finite parameters (also after
gossip mixing); the learner restored its last good parameters and optimizer state and published nothing."""

GRAD_NORM_PREFIX = "grad_norm_"
"""Stats keys ``grad_norm_<group>`` become ``marlmesh_learner_grad_norm{group=...}`` (norm before clipping)."""


class LearnerMetrics:
    """The learner instruments of one registry (one set per process; :meth:`default` is on the global registry).

    Args:
        registry: Where the instruments are registered.
    """

    _default: LearnerMetrics | None = None
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge(
            "marlmesh_learner_policy_version", "Newest published weights version", ["agent"], registry=registry
        )
        self.updates = Counter("marlmesh_learner_updates", "PPO updates run", ["agent"], registry=registry)
        self.samples = Counter(
            "marlmesh_learner_samples", "Samples (steps x env copies) trained on", ["agent"], registry=registry
        )
        self.accepted = Counter(
            "marlmesh_learner_fragments_accepted",
            "Rollout fragments accepted for training",
            ["agent"],
            registry=registry,
        )
        self.rejected = Counter(
            "marlmesh_learner_fragments_rejected",
            "Rollout fragments refused, by cause",
            ["agent", "cause"],
            registry=registry,
        )
        self.dropped = Counter(
            "marlmesh_learner_fragments_dropped",
            "Accepted fragments dropped untrained, by cause",
            ["agent", "cause"],
            registry=registry,
        )
        self.updates_rejected = Counter(
            "marlmesh_learner_updates_rejected",
            "Updates rolled back (last good parameters and optimizer state kept, nothing published), by cause",
            ["agent", "cause"],
            registry=registry,
        )
        self.duration = Histogram(
            "marlmesh_learner_update_duration_seconds",
            "Wall time of one update (epochs, gossip mixing, publishing)",
            ["agent"],
            buckets=_UPDATE_BUCKETS,
            registry=registry,
        )
        self.grad_norm = Gauge(
            "marlmesh_learner_grad_norm",
            "Gradient norm before clipping, by clip group, mean over the last update's minibatches",
            ["agent", "group"],
            registry=registry,
        )
        self.last = {
            key: Gauge(name, doc, ["agent"], registry=registry) for key, (name, doc) in LAST_UPDATE_GAUGES.items()
        }
        self.gossip_rounds = Counter(
            "marlmesh_learner_gossip_rounds", "Gossip (D-SGD) parameter rounds run", ["agent"], registry=registry
        )
        self.gossip_sent_bytes = Counter(
            "marlmesh_learner_gossip_sent_bytes", "Bytes the gossip bus offered to links", ["agent"], registry=registry
        )
        self.gossip_received_bytes = Counter(
            "marlmesh_learner_gossip_received_bytes", "Bytes the gossip bus received", ["agent"], registry=registry
        )

    @classmethod
    def default(cls) -> LearnerMetrics:
        """The process-wide instruments on the default Prometheus registry."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls(REGISTRY)
            return cls._default

    def for_agent(self, agent: int) -> AgentLearnerMetrics:
        """The instruments bound to one agent's label."""
        return AgentLearnerMetrics(self, str(agent))


class AgentLearnerMetrics:
    """One agent's learner series (label values bound once; the calls below are what the learner makes).

    Args:
        metrics: The instruments.
        agent: The ``agent`` label value.
    """

    def __init__(self, metrics: LearnerMetrics, agent: str) -> None:
        self._m = metrics
        self._agent = agent
        self._version = metrics.version.labels(agent=agent)
        self._updates = metrics.updates.labels(agent=agent)
        self._samples = metrics.samples.labels(agent=agent)
        self._accepted = metrics.accepted.labels(agent=agent)
        self._duration = metrics.duration.labels(agent=agent)
        self._gossip: tuple[Counter, Counter, Counter] | None = None  # labelled on first use: only where gossip runs
        self._last: dict[str, Gauge] = {}
        self._grad: dict[str, Gauge] = {}
        for cause in REJECT_CAUSES:  # known label values start at 0, so rate() sees the first one
            metrics.rejected.labels(agent=agent, cause=cause)
        for cause in DROP_CAUSES:
            metrics.dropped.labels(agent=agent, cause=cause)
        for cause in UPDATE_REJECT_CAUSES:
            metrics.updates_rejected.labels(agent=agent, cause=cause)

    def published(self, version: int) -> None:
        """A weights version is published (also called at start, with the resumed version)."""
        self._version.set(version)

    def accepted(self) -> None:
        """A fragment was queued for training."""
        self._accepted.inc()

    def rejected(self, cause: str) -> None:
        """A fragment was refused."""
        self._m.rejected.labels(agent=self._agent, cause=cause).inc()

    def dropped(self, cause: str, count: int = 1) -> None:
        """Accepted fragments were dropped without training."""
        self._m.dropped.labels(agent=self._agent, cause=cause).inc(count)

    def update_rejected(self, cause: str) -> None:
        """An update was rolled back (cause from :data:`UPDATE_REJECT_CAUSES`)."""
        self._m.updates_rejected.labels(agent=self._agent, cause=cause).inc()

    def updated(self, stats: Mapping[str, float], version: int, seconds: float) -> None:
        """An update ran: its statistics (keys as :meth:`LearnerNode.train_next` fills them) and duration."""
        self._version.set(version)
        self._updates.inc()
        self._samples.inc(stats.get("samples", 0.0))
        self._duration.observe(seconds)
        for key, value in stats.items():
            if key.startswith(GRAD_NORM_PREFIX):
                gauge = self._grad.get(key)
                if gauge is None:
                    gauge = self._grad[key] = self._m.grad_norm.labels(
                        agent=self._agent, group=key[len(GRAD_NORM_PREFIX) :]
                    )
                gauge.set(value)
            elif key in self._m.last:
                gauge = self._last.get(key)
                if gauge is None:
                    gauge = self._last[key] = self._m.last[key].labels(agent=self._agent)
                gauge.set(value)

    def gossiped(self, rounds: int, sent_bytes: int, received_bytes: int) -> None:
        """A gossip mixing ran ``rounds`` parameter rounds and moved these bytes."""
        if self._gossip is None:
            m, agent = self._m, self._agent
            self._gossip = (
                m.gossip_rounds.labels(agent=agent),
                m.gossip_sent_bytes.labels(agent=agent),
                m.gossip_received_bytes.labels(agent=agent),
            )
        rounds_c, sent_c, received_c = self._gossip
        rounds_c.inc(rounds)
        sent_c.inc(sent_bytes)
        received_c.inc(received_bytes)

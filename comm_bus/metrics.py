"""Bus counters: Prometheus metrics plus plain totals for ``summary.json``.

Label cardinality is bounded: ``channel`` (plugin names), ``cause`` (a fixed set of drop causes) and
``peer`` (agent indices, at most N). A sender's ``peer`` label is the receiver, a receiver's is the sender,
so together they give every directed link.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

_LATENCY_BUCKETS = (
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip

#: Drop causes (label values of ``marlmesh_bus_dropped_total``).
DROP_CAUSES = (
    "partition",  # link: cut by the fault schedule
    "out_of_range",  # link: receiver beyond radio range
    "loss",  # link: random loss (Bernoulli or Gilbert-Elliott)
    "queue_full",  # link: drop-tail queue limit
    "expired",  # link: first read only after the lifespan (never queued); receiver: aged out unread
    "superseded",  # receiver: replaced by a newer value before it was read
    "round_timeout",  # receiver: a live peer's frame did not arrive in time (sim) / by the deadline (wall)
    "transport_full",  # sender: the transport would not take the frame in time
    "overflow",  # receiver: too many frames held for one slot
    "impersonation",  # receiver (CURVE): envelope src differs from the authenticated key
    "unauthenticated",  # receiver (CURVE): handshake from a key not on the allow-list
    "oversize",
    "undecodable",
    "bad_version",
    "unknown_sender",
    "bad_field",
    "bad_tensor",
)


class BusMetrics:
    """Prometheus instruments of one bus (one per process, registered once)."""

    _default: BusMetrics | None = None
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_sent = PromCounter(
            "marlmesh_bus_messages_sent",
            "Messages offered to links (one per env copy and receiver)",
            ["channel", "peer"],
            registry=registry,
        )
        self.bytes_sent = PromCounter(
            "marlmesh_bus_sent_bytes",
            "Bytes offered to links (serialized payload + header overhead)",
            ["channel", "peer"],
            registry=registry,
        )
        self.messages_received = PromCounter(
            "marlmesh_bus_messages_received",
            "Messages that became visible to this receiver",
            ["channel", "peer"],
            registry=registry,
        )
        self.bytes_received = PromCounter(
            "marlmesh_bus_received_bytes", "Bytes of the visible messages", ["channel", "peer"], registry=registry
        )
        self.dropped = PromCounter("marlmesh_bus_dropped", "Messages dropped, by cause", ["cause"], registry=registry)
        self.latency = PromHistogram(
            "marlmesh_bus_delivery_latency_seconds",
            "Bus-clock delay from send to visibility (emulated under the sim clock)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.transport_latency = PromHistogram(
            "marlmesh_bus_transport_latency_seconds",
            "Wall-clock delay from send to arrival of the frame",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.age = PromHistogram(
            "marlmesh_bus_age_of_information_seconds",
            "Mean age (bus clock) of the values a receiver used in one round, per sender",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    @classmethod
    def default(cls) -> BusMetrics:
        """The process-wide instruments on the default Prometheus registry."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls(REGISTRY)
            return cls._default


def _p50(values: deque[float]) -> float | None:
    return float(np.median(np.fromiter(values, float))) if values else None


@dataclass
class BusTotals:
    """Plain totals kept next to the Prometheus metrics, for summaries and tests."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    transport_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    ages: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    received_from: Counter[int] = field(default_factory=Counter)

    def latency_p50(self) -> float | None:
        """Median bus-clock delivery latency of recent messages (seconds), None before any delivery."""
        return _p50(self.latencies)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready totals (the ``bus.*`` fields of ``summary.json`` for one agent)."""
        return {
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "messages_received": self.messages_received,
            "bytes_received": self.bytes_received,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "dropped": dict(self.dropped),
            "delivery_latency_p50_seconds": self.latency_p50(),
            "transport_latency_p50_seconds": _p50(self.transport_latencies),
            "age_of_information_p50_seconds": _p50(self.ages),
            "received_from": {str(k): v for k, v in sorted(self.received_from.items())},
        }

"""Bus counters: Prometheus metrics plus plain totals for ``summary.json``.

Label cardinality is bounded: ``channel`` (plugin names), ``cause`` (a fixed set of drop causes) and
``peer`` (agent indices, at most N).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

_LATENCY_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5)


class BusMetrics:
    """Prometheus instruments of one bus (one per process, registered once)."""

    _default: BusMetrics | None = None
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages_sent = PromCounter(
            "marlmesh_bus_messages_sent", "Bus messages sent", ["channel", "peer"], registry=registry
        )
        self.bytes_sent = PromCounter(
            "marlmesh_bus_sent_bytes",
            "Bus bytes sent (payload + header overhead)",
            ["channel", "peer"],
            registry=registry,
        )
        self.messages_received = PromCounter(
            "marlmesh_bus_messages_received", "Bus messages accepted", ["channel", "peer"], registry=registry
        )
        self.bytes_received = PromCounter(
            "marlmesh_bus_received_bytes", "Bus bytes received", ["channel", "peer"], registry=registry
        )
        self.dropped = PromCounter(
            "marlmesh_bus_dropped", "Bus messages dropped, by cause", ["cause"], registry=registry
        )
        self.latency = PromHistogram(
            "marlmesh_bus_delivery_latency_seconds",
            "Send-to-receive latency",
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


@dataclass
class BusTotals:
    """Plain totals kept next to the Prometheus metrics, for summaries and tests."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    received_from: Counter[int] = field(default_factory=Counter)

    def latency_p50(self) -> float | None:
        """Median delivery latency of the recent messages (seconds), None before any delivery."""
        return float(np.median(np.fromiter(self.latencies, float))) if self.latencies else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready totals (the ``bus.*`` fields of ``summary.json`` for one agent)."""
        return {
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "messages_received": self.messages_received,
            "bytes_received": self.bytes_received,
            "dropped": dict(self.dropped),
            "delivery_latency_p50_seconds": self.latency_p50(),
            "received_from": {str(k): v for k, v in sorted(self.received_from.items())},
        }

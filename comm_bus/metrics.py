"""Bus counters: Prometheus metrics plus plain totals for ``summary.json``.

Label cardinality is bounded: ``channel`` (plugin names), ``cause`` (a fixed set of drop causes) and
``peer`` (agent indices, at most N). A sender's ``peer`` label is the receiver, a receiver's is the sender,
so together they give every directed link.

The instruments are plain numbers under one lock each, exported as Prometheus families when the registry is
collected (:class:`BusMetrics` is a custom collector): every bus round counts and observes several times per
peer, and ``prometheus_client``'s own instruments cost several Python calls and a lock per increment (about a
third of the bus's per-message work). The exported series are the same (``_total``, ``_bucket``, ``_sum``,
``_count``) without the ``_created`` timestamps.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

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


class CounterChild:
    """One label set of a :class:`LabelledCounter`."""

    __slots__ = ("_lock", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        with self._lock:
            self.value += amount


class LabelledCounter:
    """A Prometheus counter family with labels, kept as plain numbers (exported by :class:`BusMetrics`)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        """The child of one label set (created at its first use, as ``prometheus_client`` does)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames} expected, got {values}")
            with self._lock:
                child = self._children.setdefault(values, CounterChild(self._lock))
        return child

    def family(self) -> CounterMetricFamily:
        """The exported family (``NAME_total`` per label set)."""
        out = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            for values, child in self._children.items():
                out.add_metric(list(values), child.value)
        return out


class LatencyHistogram:
    """A Prometheus histogram without labels, kept as plain bucket counts (exported by :class:`BusMetrics`)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = (*sorted(buckets), float("inf"))
        self._lock = threading.Lock()
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one sample in the first bucket whose bound is at least ``value``."""
        i = bisect_left(self._bounds, value)
        with self._lock:
            if i < len(self._counts):  # NaN lands nowhere, as in prometheus_client
                self._counts[i] += 1
            self._sum += value

    def family(self) -> HistogramMetricFamily:
        """The exported family (cumulative ``_bucket``, ``_count`` and ``_sum``)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip(self._bounds, counts, strict=True):
            running += count
            cumulative.append((floatToGoString(bound), running))
        return HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=total)


class BusMetrics:
    """Prometheus instruments of the buses of a process (one per process, registered once as a collector)."""

    _default: BusMetrics | None = None
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_sent = LabelledCounter(
            "marlmesh_bus_messages_sent",
            "Messages offered to links (one per env copy and receiver)",
            ("channel", "peer"),
        )
        self.bytes_sent = LabelledCounter(
            "marlmesh_bus_sent_bytes",
            "Bytes offered to links (serialized payload + header overhead)",
            ("channel", "peer"),
        )
        self.messages_received = LabelledCounter(
            "marlmesh_bus_messages_received", "Messages that became visible to this receiver", ("channel", "peer")
        )
        self.bytes_received = LabelledCounter(
            "marlmesh_bus_received_bytes", "Bytes of the visible messages", ("channel", "peer")
        )
        self.dropped = LabelledCounter("marlmesh_bus_dropped", "Messages dropped, by cause", ("cause",))
        self.latency = LatencyHistogram(
            "marlmesh_bus_delivery_latency_seconds",
            "Bus-clock delay from send to visibility (emulated under the sim clock)",
            _LATENCY_BUCKETS,
        )
        self.transport_latency = LatencyHistogram(
            "marlmesh_bus_transport_latency_seconds",
            "Wall-clock delay from send to arrival of the frame",
            _LATENCY_BUCKETS,
        )
        self.age = LatencyHistogram(
            "marlmesh_bus_age_of_information_seconds",
            "Mean age (bus clock) of the values a receiver used in one round, per sender",
            _LATENCY_BUCKETS,
        )
        self._instruments = (
            self.messages_sent,
            self.bytes_sent,
            self.messages_received,
            self.bytes_received,
            self.dropped,
            self.latency,
            self.transport_latency,
            self.age,
        )
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """Every family with its current values (called by the registry at each scrape)."""
        for instrument in self._instruments:
            yield instrument.family()

    def describe(self) -> Iterator[Metric]:
        """The families (names only matter: the registry refuses a second collector with the same names)."""
        return self.collect()

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

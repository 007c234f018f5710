"""The bus's Prometheus instruments: plain numbers exported as standard families at scrape time."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from comm_bus.metrics import BusMetrics


def test_counters_and_histograms_export_what_was_counted():
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    metrics.messages_sent.labels("dgat", "1").inc(3)
    metrics.messages_sent.labels("dgat", "1").inc(2)
    metrics.dropped.labels("loss").inc(4)
    for value in (0.0, 2e-4, 2e-4, 7.0, 100.0):
        metrics.latency.observe(value)
    sample = registry.get_sample_value
    assert sample("marlmesh_bus_messages_sent_total", {"channel": "dgat", "peer": "1"}) == 5
    assert sample("marlmesh_bus_dropped_total", {"cause": "loss"}) == 4
    assert sample("marlmesh_bus_messages_received_total", {"channel": "dgat", "peer": "1"}) is None
    name = "marlmesh_bus_delivery_latency_seconds"
    assert sample(f"{name}_bucket", {"le": "1e-05"}) == 1  # cumulative, bounds inclusive
    assert sample(f"{name}_bucket", {"le": "0.00025"}) == 3
    assert sample(f"{name}_bucket", {"le": "10.0"}) == 4
    assert sample(f"{name}_bucket", {"le": "+Inf"}) == sample(f"{name}_count") == 5
    assert sample(f"{name}_sum") == pytest.approx(107.0004)
    assert sample("marlmesh_bus_age_of_information_seconds_count") == 0
    text = generate_latest(registry).decode()
    assert "# TYPE marlmesh_bus_received_bytes_total counter" in text  # a family before its first event


def test_a_second_set_of_instruments_on_one_registry_is_refused():
    registry = CollectorRegistry()
    BusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        BusMetrics(registry)


def test_a_label_set_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="labels"):
        BusMetrics(CollectorRegistry()).messages_sent.labels("dgat")

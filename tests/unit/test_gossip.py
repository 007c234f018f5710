"""Gossip (D-SGD) parameter mixing: Metropolis-Hastings weights, convergence over real ZeroMQ sockets, bytes
through the link emulation."""

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from comm_bus.addressing import PeerAddressing
from comm_bus.bus import dial_each_other
from comm_bus.metrics import BusMetrics
from learner_service.gossip import (
    Gossip,
    flatten,
    heard_neighbours,
    metropolis_weights,
    mutual_neighbours,
    unflatten,
)
from marlmesh.config import load_config


def _random_connected_graph(rng, n):
    adj = np.zeros((n, n), bool)
    order = rng.permutation(n)
    for k in range(1, n):  # random spanning tree, then random extra edges
        a, b = order[k], order[rng.integers(0, k)]
        adj[a, b] = adj[b, a] = True
    extra = np.triu(rng.random((n, n)) < rng.random(), 1)
    return adj | extra | extra.T


def test_metropolis_weights_are_doubly_stochastic_on_random_connected_graphs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        adj = _random_connected_graph(rng, n)
        w = metropolis_weights(adj)
        assert (w >= 0).all() and np.allclose(w, w.T)
        assert np.allclose(w.sum(0), 1.0) and np.allclose(w.sum(1), 1.0)
        assert ((w > 0) == (adj | np.eye(n, dtype=bool))).all()  # weight only on edges and self
        second = np.sort(np.abs(np.linalg.eigvalsh(w)))[-2]
        assert second < 1 - 1e-9  # connected: repeated mixing converges to the average


def test_metropolis_weights_reject_an_asymmetric_graph():
    with pytest.raises(ValueError, match="symmetric"):
        metropolis_weights(np.array([[0, 1], [0, 0]]))


def test_neighbours_are_mutual_and_come_from_what_the_agent_heard():
    assert mutual_neighbours(0, [1, 2, 3], {1: [0, 2], 2: [1], 3: [0]}) == [1, 3]
    mask = np.zeros((5, 2, 4), np.float32)  # [T, B, N]
    mask[-1, 1, 2] = 1.0
    mask[0, 0, 3] = 1.0  # heard only at an earlier step: not a current neighbour
    assert heard_neighbours({"inbox.0.mask": mask}, 0, 4) == [2]
    assert heard_neighbours({}, 1, 3) == [0, 2]
    params = {"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), np.float32)}
    back = unflatten(flatten(params), params)
    assert all(np.array_equal(back[k], params[k]) for k in params)


def _gossips(n, *overrides, registry=None):
    cfg = load_config(None, ["algo.name=dgmappo", "channel.name=dgat", *overrides])
    addressing = PeerAddressing.os_assigned()
    metrics = BusMetrics(registry or CollectorRegistry())
    gossips = [
        Gossip(cfg.algo.dgmappo.gossip, cfg.bus, i, n, addressing, seed=cfg.seed, metrics=metrics) for i in range(n)
    ]
    dial_each_other([g.bus for g in gossips])
    return cfg, gossips


def _run(gossips, params, candidates, mixings):
    out = list(params)

    def loop(i):
        for _ in range(mixings):
            out[i] = gossips[i].mix(out[i], candidates[i])

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(gossips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return out


def test_gossip_converges_to_the_parameter_average_over_zeromq():
    n = 4
    _, gossips = _gossips(n, "algo.dgmappo.gossip.enabled=true", "algo.dgmappo.gossip.rounds=5")
    try:
        rng = np.random.default_rng(1)
        params = [
            {"w": rng.normal(size=(3, 5)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
            for _ in range(n)
        ]
        mean = {k: np.mean([p[k] for p in params], axis=0) for k in params[0]}
        path = [[1], [0, 2], [1, 3], [2]]  # connected, not complete: 0 - 1 - 2 - 3
        out = _run(gossips, params, path, mixings=12)  # 60 rounds
        spread0 = max(np.abs(p[k] - mean[k]).max() for p in params for k in mean)
        spread = max(np.abs(p[k] - mean[k]).max() for p in out for k in mean)
        assert spread < 1e-3 * spread0
        new_mean = {k: np.mean([p[k] for p in out], axis=0) for k in mean}
        assert all(np.allclose(new_mean[k], mean[k], atol=1e-5) for k in mean)  # doubly stochastic: average kept
        assert all(g.counters["params_mixed"] == 60 * len(path[i]) for i, g in enumerate(gossips))
        assert all(g.counters["params_missing"] == 0 for g in gossips)
    finally:
        for g in gossips:
            g.close()


def _param_bytes(params, header=32):
    return (flatten(params).size + 1) * 4 + header  # theta + degree floats + header


def test_gossip_bytes_go_through_the_link_emulation_and_are_counted():
    params = [{"w": np.full(100, float(i), np.float32)} for i in range(2)]
    hello_bytes, param_bytes = 2 * 4 + 32, _param_bytes(params[0])
    # 1) 64 kbit/s, 20 ms: a 436-byte parameter message is visible after ~75 ms < slot (1 s): mixed
    _, gossips = _gossips(
        2, "algo.dgmappo.gossip.enabled=true", "bus.links.default.rate_bps=64000", "bus.links.default.latency_ms=20"
    )
    try:
        out = _run(gossips, params, [[1], [0]], mixings=3)
        for g in gossips:
            bus = g.bus.totals
            assert bus.messages_sent == 3 * 2 and bus.bytes_sent == 3 * (hello_bytes + param_bytes)
            assert bus.bytes_received == 3 * (hello_bytes + param_bytes)
            assert g.counters["params_mixed"] == 3
        assert np.allclose(out[0]["w"], 0.5) and np.allclose(out[1]["w"], 0.5)
    finally:
        for g in gossips:
            g.close()
    # 2) 1 kbit/s: the parameters need ~3.5 s on the link, more than the 1 s slot: sent and counted, dropped by the
    # link as expired (so they do not hold up the link: the next mixing's hello still arrives), never mixed
    _, gossips = _gossips(2, "algo.dgmappo.gossip.enabled=true", "bus.links.default.rate_bps=1000")
    try:
        out = _run(gossips, params, [[1], [0]], mixings=2)
        for i, g in enumerate(gossips):
            assert g.bus.totals.bytes_sent == 2 * (hello_bytes + param_bytes)
            assert dict(g.bus.totals.dropped) == {"expired": 2}
            assert g.counters["params_mixed"] == 0 and g.counters["params_missing"] == 2
            assert np.array_equal(out[i]["w"], params[i]["w"])
    finally:
        for g in gossips:
            g.close()
    # 3) loss 1.0: every gossip message is dropped by the emulation (counted as loss), nobody becomes a neighbour
    _, gossips = _gossips(2, "algo.dgmappo.gossip.enabled=true", "bus.links.default.loss=1.0")
    try:
        out = _run(gossips, params, [[1], [0]], mixings=2)
        for i, g in enumerate(gossips):
            assert g.bus.totals.dropped["loss"] == 2  # the hellos; without a mutual edge no parameters are sent
            assert g.bus.totals.bytes_sent == 2 * hello_bytes
            assert np.array_equal(out[i]["w"], params[i]["w"])
    finally:
        for g in gossips:
            g.close()

"""DG-MAPPO reward sharing: the mixing rule, and rewards exchanged over real ZeroMQ buses with link emulation."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from agent_service.reward_sharing import RewardSharing, mix_rewards
from comm_bus.bus import Bus, local_buses
from comm_bus.mailbox import Delivery
from comm_bus.metrics import BusMetrics
from marlmesh.config import RewardSharingConfig, load_config
from marlmesh.observation import AgentObservation


def _delivery(rewards, rows=None):
    r = np.asarray(rewards, np.float32).reshape(-1, 1)
    return Delivery({"reward": r}, None if rows is None else np.asarray(rows, bool), np.zeros(len(r)), np.zeros(0))


def test_mix_rewards_uses_only_the_fresh_rows_of_the_neighbours_heard():
    own = np.array([1.0, 2.0, 3.0], np.float32)
    got = {1: _delivery([3.0, 6.0, 9.0]), 2: _delivery([5.0, 8.0, -1.0], rows=[True, False, False])}
    mixed = mix_rewards(own, got, weight=0.5)
    # copy 0: both heard, mean 4 -> 2.5; copy 1: only agent 1 (6) -> 4; copy 2: only agent 1 (9) -> 6
    assert mixed.tolist() == pytest.approx([2.5, 4.0, 6.0])
    assert mix_rewards(own, {}, 0.5).tolist() == own.tolist()  # nobody heard: own reward
    assert mix_rewards(own, got, 0.0).tolist() == own.tolist()
    bad = {1: Delivery({"reward": np.full((3, 1), np.nan, np.float32)}, None, np.zeros(3), np.zeros(0))}
    assert mix_rewards(own, bad, 0.5).tolist() == own.tolist()  # a malformed payload is ignored


def _ob(tick, rewards, positions):
    b = len(rewards)
    return AgentObservation(
        tick=tick,
        obs=np.zeros((b, 2), np.float32),
        reward=np.asarray(rewards, np.float32),
        terminated=np.zeros(b, bool),
        truncated=np.zeros(b, bool),
        final_obs=np.zeros((b, 2), np.float32),
        cost=np.zeros(b, np.float32),
        positions=positions,
        live_agents=[0, 1, 2],
    )


def test_rewards_are_shared_over_the_bus_within_range_and_their_bytes_counted():
    cfg = load_config(None, ["bus.links.default.range=1.0"]).bus
    ctx, metrics = zmq.Context(), BusMetrics(CollectorRegistry())
    buses = local_buses(3, lambda i, addressing: Bus(i, 3, addressing, config=cfg, metrics=metrics, context=ctx))
    try:
        sharing = [RewardSharing(RewardSharingConfig(enabled=True, weight=0.5), b, i) for i, b in enumerate(buses)]
        # env copy 0: all three together; env copy 1: agent 2 is 5 units away from the others
        positions = np.array([[[0, 0], [0, 0]], [[0.5, 0], [0.5, 0]], [[0, 0.5], [5, 5]]], np.float32)  # [N, B, D]
        rewards = [[-1.0, -1.0], [-3.0, -3.0], [-5.0, -5.0]]
        with ThreadPoolExecutor(3) as pool:  # each agent sends, then waits for its peers' rewards
            mixed = list(pool.map(lambda i: sharing[i].share(_ob(4, rewards[i], positions)), range(3)))
        assert mixed[0].tolist() == pytest.approx([0.5 * -1 + 0.5 * -4, 0.5 * -1 + 0.5 * -3])
        assert mixed[1].tolist() == pytest.approx([0.5 * -3 + 0.5 * -3, 0.5 * -3 + 0.5 * -1])
        assert mixed[2].tolist() == pytest.approx([0.5 * -5 + 0.5 * -2, -5.0])  # out of range in copy 1
        for b in buses:
            assert b.totals.messages_sent == 2 * 2  # 2 peers x 2 env copies, offered to the links
            assert b.totals.bytes_sent == 4 * (4 + cfg.header_bytes)
        assert buses[2].totals.dropped["out_of_range"] == 2
        assert [s.rows_heard for s in sharing] == [3, 3, 2]
    finally:
        for b in buses:
            b.close()

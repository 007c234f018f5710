"""DG-MAPPO reward sharing over the bus (``algo.dgmappo.reward_sharing``).

After each env step an agent sends the reward it just received (one float per env copy) to its live peers on
channel ``reward`` and reads theirs, through the same :class:`~comm_bus.bus.Bus` as its policy messages: the
same link emulation (range, loss, queue, delay, rate) and the same counters (``bus.messages_sent``,
``bus.bytes_sent``, per-channel Prometheus series ``channel="reward"``). The reward recorded in the fragment, and
so the one its learner trains on, is ``(1 - w) * r_i + w * mean(r_j over the neighbours heard in that env
copy)``; where it heard nobody it is ``r_i``.

Timing: the reward of tick ``t``'s action is observed at tick ``t + 1`` and shared in slot ``(t + 1, 0)`` of
channel ``reward``, i.e. next to round 0 of the next step's policy messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from comm_bus.bus import Bus
from comm_bus.mailbox import Delivery
from marlmesh.config import RewardSharingConfig
from marlmesh.observation import AgentObservation

CHANNEL = "reward"
"""Bus channel of shared rewards."""


def mix_rewards(own: np.ndarray, received: Mapping[int, Delivery], weight: float) -> np.ndarray:
    """``(1 - weight) * own + weight * mean of the fresh neighbour rewards``, per env copy.

    Args:
        own: ``[B]`` this agent's rewards.
        received: Sender -> delivery whose payload ``reward`` is ``[B, 1]`` (stale rows masked by ``rows``).
        weight: Share of the neighbours' mean.

    Returns:
        ``[B]`` float32; ``own`` where no neighbour's reward arrived (or a payload is malformed).
    """
    own = np.asarray(own, np.float32)
    total = np.zeros_like(own)
    heard = np.zeros_like(own)
    for got in received.values():
        rew = got.payload.get("reward")
        if rew is None or rew.shape[:1] != own.shape or not np.isfinite(rew).all():
            continue
        fresh = np.ones(own.shape, bool) if got.rows is None else got.rows
        total += np.where(fresh, rew.reshape(own.shape[0], -1)[:, 0], 0.0)
        heard += fresh
    mean = total / np.maximum(heard, 1.0)
    return np.where(heard > 0, (1.0 - weight) * own + weight * mean, own).astype(np.float32)


class RewardSharing:
    """Shares one agent's rewards with its peers over its bus.

    Args:
        config: ``algo.dgmappo.reward_sharing``.
        bus: The agent's bus endpoint.
        agent_index: This agent.
    """

    def __init__(self, config: RewardSharingConfig, bus: Bus, agent_index: int) -> None:
        self.weight = config.weight
        self.bus = bus
        self.index = agent_index
        self.rows_heard = 0
        """Neighbour rewards (sender x env copy) mixed in so far."""

    def share(self, ob: AgentObservation) -> np.ndarray:
        """Send ``ob.reward`` for tick ``ob.tick``, read the peers' and return the mixed ``[B]`` rewards."""
        peers = [p for p in ob.live_agents if p != self.index]
        reward = np.asarray(ob.reward, np.float32).reshape(-1, 1)
        self.bus.send(
            tick=ob.tick, round=0, channel=CHANNEL, payload={"reward": reward}, peers=peers, positions=ob.positions
        )
        received = self.bus.collect(tick=ob.tick, round=0, channel=CHANNEL, expected=peers)
        self.rows_heard += sum(reward.shape[0] if d.rows is None else int(d.rows.sum()) for d in received.values())
        return mix_rewards(ob.reward, received, self.weight)

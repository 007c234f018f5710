"""Gossip (D-SGD) parameter mixing between neighbour learners over the bus (``algo.dgmappo.gossip``).

Every ``period`` updates, learner i runs ``rounds`` gossip rounds of ``theta_i <- sum_j W_ij theta_j`` with
Metropolis-Hastings weights ``W_ij = 1 / (1 + max(d_i, d_j))`` on the current comm graph and
``W_ii = 1 - sum_j W_ij`` (:func:`metropolis_weights`): symmetric and doubly stochastic, so repeated mixing on a
connected graph converges to the average of the parameters.

The comm graph is "alive and in range", seen from both ends. Each learner's candidates are the agents its own
agent heard in the latest fragment (:func:`heard_neighbours`: the env's range and liveness as the agent bus
saw them). A gossip round has two bus slots (channels ``gossip-hello`` and ``gossip``):

1. *hello*: every learner sends its candidate list to every peer learner that is not suspended; an edge
   ``i - j`` exists when each lists the other (:func:`mutual_neighbours`), so both ends agree on it and on
   each other's degree;
2. *params*: every learner sends its flat parameters and its degree to its neighbours; ``W_ij`` uses both
   degrees. A neighbour's parameters that do not arrive (loss, range, too slow for ``slot_ms`` at the link
   rate) leave their weight with the receiver's own parameters (the row stays stochastic).

Messages go through a :class:`~comm_bus.bus.Bus` of the learner's own (``MARLMESH_GOSSIP_BASE_PORT``), with the
run's link model, quantization and header bytes, so their bytes are emulated and counted like the agents'
(``bus.gossip`` in ``summary.json``). Learners that drift apart in their mixing step catch up with the newest
step heard from a peer; a peer that does not answer within ``timeout_ms`` is suspended for a few mixings.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from comm_bus.addressing import PeerAddressing
from comm_bus.bus import Bus
from comm_bus.mailbox import Delivery
from comm_bus.metrics import BusMetrics
from marlmesh.config import BusConfig, GossipConfig, TraceConfig
from marlmesh.rollout import inbox_keys

log = logging.getLogger(__name__)

HELLO = "gossip-hello"
"""Bus channel of the neighbour lists (its own channel: the bus counts received bytes per channel)."""
PARAMS = "gossip"
"""Bus channel of the parameters."""
SUSPEND_MIXINGS = 10
"""Mixings a peer that did not answer in time is not waited for (unless it is heard from again)."""


def metropolis_weights(adjacency: np.ndarray) -> np.ndarray:
    """Metropolis-Hastings mixing matrix of an undirected graph.

    Args:
        adjacency: ``[N, N]`` symmetric bool/0-1 matrix (the diagonal is ignored).

    Returns:
        ``W`` float64 ``[N, N]``: ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges, 0 off edges,
        ``W_ii = 1 - sum_{j != i} W_ij``. Symmetric, non-negative, rows and columns sum to 1.

    Raises:
        ValueError: If the matrix is not square and symmetric.
    """
    adj = np.asarray(adjacency).astype(bool)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1] or not (adj == adj.T).all():
        raise ValueError(f"adjacency must be a square symmetric matrix, got shape {adj.shape}")
    adj = adj & ~np.eye(adj.shape[0], dtype=bool)
    degree = adj.sum(1)
    w = np.where(adj, 1.0 / (1.0 + np.maximum(degree[:, None], degree[None, :])), 0.0)
    w[np.diag_indices_from(w)] = 1.0 - w.sum(1)
    return w


def mutual_neighbours(me: int, candidates: Iterable[int], lists: Mapping[int, Iterable[int]]) -> list[int]:
    """Peers ``j`` in ``candidates`` whose own candidate list (``lists[j]``) names ``me``."""
    return sorted(j for j in set(candidates) if j != me and me in set(lists.get(j, ())))


def heard_neighbours(columns: Mapping[str, np.ndarray], me: int, num_agents: int) -> list[int]:
    """Agents whose round-0 message reached agent ``me`` in some env copy at the fragment's last step.

    Without a communication round in the fragment (channel ``none``) every other agent is a candidate.
    """
    _, mask_key = inbox_keys(0)
    mask = columns.get(mask_key)
    if mask is None:
        return [j for j in range(num_agents) if j != me]
    heard = np.asarray(mask)[-1].reshape(-1, num_agents).max(0) > 0
    return [j for j in range(num_agents) if j != me and heard[j]]


def flatten(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Float parameters concatenated in key order (float32)."""
    return np.concatenate([np.asarray(params[k], np.float32).reshape(-1) for k in sorted(params)])


def unflatten(flat: np.ndarray, like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`flatten` with the shapes and dtypes of ``like``."""
    out, pos = {}, 0
    for k in sorted(like):
        ref = np.asarray(like[k])
        out[k] = flat[pos : pos + ref.size].reshape(ref.shape).astype(ref.dtype)
        pos += ref.size
    return out


def _fresh(got: Delivery | None) -> bool:
    return got is not None and (got.rows is None or bool(got.rows[0]))


class Gossip:
    """One learner's gossip endpoint.

    Args:
        config: ``algo.dgmappo.gossip``.
        bus_config: The run's ``bus`` section (link model, quantization, header bytes, clock, security).
        agent_index: This learner's agent.
        num_agents: N.
        addressing: Where every learner's gossip socket lives.
        seed: Run seed (link randomness).
        metrics: Prometheus instruments (default: the process-wide ones).
    """

    def __init__(
        self,
        config: GossipConfig,
        bus_config: BusConfig,
        agent_index: int,
        num_agents: int,
        addressing: PeerAddressing,
        seed: int,
        metrics: BusMetrics | None = None,
    ) -> None:
        self.config = config
        self.index = agent_index
        self.num_agents = num_agents
        slots = 2 * config.rounds
        bus_cfg = bus_config.model_copy(
            update={
                "dt_ms": slots * config.slot_ms,
                "round_interval_ms": config.slot_ms,
                "lifespan_ms": config.slot_ms,
                "round_timeout_ms": config.timeout_ms,
                "trace": TraceConfig(enabled=False),
            }
        )
        self.bus = Bus(
            agent_index, num_agents, addressing, config=bus_cfg, seed=seed + 0x60551, rounds=slots, metrics=metrics
        )
        self.step = 0
        """Mixing index (the bus tick of gossip messages)."""
        keys = ("mixings", "rounds", "neighbours", "params_mixed", "params_missing", "catch_ups", "peers_suspended")
        self.counters: Counter[str] = Counter(dict.fromkeys(keys, 0))  # fixed keys: status() reads from another thread
        self._suspended: dict[int, tuple[int, tuple[int, int] | None]] = {}  # peer -> (until step, heard then)
        self.seconds = 0.0
        """Wall time spent mixing (the learner's training thread waits meanwhile)."""

    @property
    def period(self) -> int:
        """Mix after every ``period``-th update."""
        return self.config.period

    def _live_peers(self) -> list[int]:
        peers = []
        for j in range(self.num_agents):
            if j == self.index:
                continue
            until, heard = self._suspended.get(j, (-1, None))
            if self.step < until and self.bus.latest_heard(j, HELLO) == heard:
                continue
            self._suspended.pop(j, None)
            peers.append(j)
        return peers

    def _catch_up(self) -> None:
        newest = [self.bus.latest_heard(j, HELLO) for j in range(self.num_agents) if j != self.index]
        ahead = max((h[0] for h in newest if h is not None), default=-1)
        if ahead > self.step:
            self.counters["catch_ups"] += 1
            self.step = ahead

    def _suspend_missing(self, expected: list[int]) -> None:
        for j in expected:
            heard = self.bus.latest_heard(j, HELLO)
            if heard is None or heard[0] < self.step:
                self._suspended[j] = (self.step + SUSPEND_MIXINGS, heard)
                self.counters["peers_suspended"] += 1

    def mix(self, params: Mapping[str, np.ndarray], candidates: Iterable[int]) -> dict[str, np.ndarray]:
        """Run ``rounds`` gossip rounds and return the mixed parameters (same keys, shapes and dtypes).

        Args:
            params: This learner's parameters.
            candidates: Agents this learner's agent can currently hear (see :func:`heard_neighbours`).
        """
        start = time.perf_counter()
        theta = flatten(params)
        candidates = set(candidates)
        self._catch_up()
        for r in range(self.config.rounds):
            peers = self._live_peers()
            hello = np.zeros((1, self.num_agents), np.float32)
            hello[0, sorted(candidates & set(peers))] = 1.0
            self.bus.send(tick=self.step, round=2 * r, channel=HELLO, payload={"neighbours": hello}, peers=peers)
            got = self.bus.collect(tick=self.step, round=2 * r, channel=HELLO, expected=peers)
            self._suspend_missing(peers)
            lists = {
                j: np.flatnonzero(d.payload["neighbours"][0] > 0.5).tolist()
                for j, d in got.items()
                if _fresh(d) and d.payload.get("neighbours", np.zeros((1, 0))).shape == (1, self.num_agents)
            }
            mutual = mutual_neighbours(self.index, candidates & set(peers), lists)
            theta = self._params_round(theta, 2 * r + 1, peers, mutual)
        self.step += 1
        self.counters["mixings"] += 1
        self.seconds += time.perf_counter() - start
        return unflatten(theta, params)

    def _params_round(self, theta: np.ndarray, slot: int, peers: list[int], mutual: list[int]) -> np.ndarray:
        degree = len(mutual)
        payload = {"theta": theta[None], "degree": np.array([[degree]], np.float32)}
        # every live peer gets the frame (the sim clock waits for it); only the neighbours' rows are sent on a link
        for group, send in ((mutual, True), ([j for j in peers if j not in mutual], False)):
            if group:
                rows = np.array([send])
                self.bus.send(tick=self.step, round=slot, channel=PARAMS, payload=payload, peers=group, rows=rows)
        got = self.bus.collect(tick=self.step, round=slot, channel=PARAMS, expected=peers)
        mixed = theta.astype(np.float64)
        for j in mutual:
            d = got.get(j)
            other = d.payload.get("theta") if _fresh(d) else None
            if other is None or other.shape != theta[None].shape or not np.isfinite(other).all():
                self.counters["params_missing"] += 1
                continue
            w = 1.0 / (1.0 + max(degree, int(round(float(d.payload["degree"].reshape(-1)[0])))))
            mixed += w * (other[0].astype(np.float64) - theta)
            self.counters["params_mixed"] += 1
        self.counters["rounds"] += 1
        self.counters["neighbours"] += degree
        return mixed.astype(np.float32)

    def status(self) -> dict[str, object]:
        """Counters and the gossip bus totals (JSON-ready)."""
        return {
            **dict(self.counters),
            "step": self.step,
            "seconds": round(self.seconds, 3),
            "bus": self.bus.totals.as_dict(),
        }

    def close(self) -> None:
        """Close the gossip sockets."""
        self.bus.close()

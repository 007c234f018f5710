"""The two :class:`~marlmesh.exchange.Exchange` implementations: bus endpoints over ZeroMQ or in memory.

Both are :class:`BusExchange`, a map from agent index to that agent's :class:`~comm_bus.bus.Bus`; they differ only
in the bus's transport (:mod:`comm_bus.transport`):

- the mesh: an agent process serves its own agent, its bus on ZeroMQ (``BusExchange({i: bus})``);
- in process: :func:`local_exchange` gives every agent a bus on one :class:`~comm_bus.transport.LocalHub`.

So the link model, sim clock, lifespan, drop causes, quantization, range check and fate trace are the same code
on both, and under the sim clock the same sends give the same fates, inboxes and trace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from comm_bus.bus import Bus
from comm_bus.faults import LinkFaults
from comm_bus.mailbox import Delivery
from comm_bus.metrics import BusMetrics
from comm_bus.transport import LocalHub
from marlmesh.config.bus import BusConfig


class BusExchange:
    """An exchange over the buses of the agents this process runs.

    Args:
        buses: Agent index -> its bus endpoint.
    """

    def __init__(self, buses: Mapping[int, Bus]) -> None:
        self.buses = dict(buses)

    def send(
        self,
        agent: int,
        *,
        tick: int,
        round: int,
        channel: str,
        payload: Mapping[str, np.ndarray],
        peers: Iterable[int],
        positions: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> int:
        """:meth:`Bus.send` of ``agent``'s bus; returns the number of links the message went out on."""
        fates = self.buses[agent].send(
            tick=tick, round=round, channel=channel, payload=payload, peers=peers, positions=positions, rows=rows
        )
        return len(fates.dsts)

    def collect(
        self,
        agent: int,
        *,
        tick: int,
        round: int,
        channel: str,
        expected: Iterable[int],
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> dict[int, Delivery]:
        """:meth:`Bus.collect` of ``agent``'s bus."""
        return self.buses[agent].collect(
            tick=tick, round=round, channel=channel, expected=expected, timeout_s=timeout_s, stop=stop
        )

    def close(self) -> None:
        """Close every bus (and its trace file)."""
        for bus in self.buses.values():
            bus.close()


def local_exchange(
    num_agents: int,
    *,
    config: BusConfig | None = None,
    seed: int = 0,
    rounds: int = 1,
    max_frame_bytes: int = 16 * 1024 * 1024,
    trace_path: Callable[[int], Path | None] | None = None,
    faults: LinkFaults | None = None,
    metrics: BusMetrics | None = None,
) -> BusExchange:
    """Every agent's bus in this process, on one in-memory hub (same arguments as each agent process's bus).

    Args:
        num_agents: N.
        config: The ``bus`` section (links, clock, quantization, lifespan, trace).
        seed: Run seed (link randomness, as in the agent processes).
        rounds: Communication rounds per env step.
        max_frame_bytes: Larger frames are dropped unread.
        trace_path: Agent index -> where its fate records go (None: no trace).
        faults: Scheduled partitions and degradations of the links.
        metrics: Prometheus instruments (default: the process-wide ones).
    """
    hub = LocalHub(num_agents)
    return BusExchange(
        {
            i: Bus(
                i,
                num_agents,
                config=config,
                seed=seed,
                rounds=rounds,
                max_frame_bytes=max_frame_bytes,
                trace_path=None if trace_path is None else trace_path(i),
                faults=faults,
                metrics=metrics,
                transport=hub.transport(i),
            )
            for i in range(num_agents)
        }
    )

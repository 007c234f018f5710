"""The Exchange: how a staged policy's communication rounds travel between agents.

Every caller of the staged loop (:mod:`marlmesh.staged_loop`) hands it an Exchange: the agent process (its own
endpoint on the ZeroMQ bus), the in-process launcher (every agent's endpoint on an in-memory hub), the benchmarks
and the channel conformance suite. Both implementations in :mod:`comm_bus.exchange` are the bus itself, over a
different transport, so link emulation (the ``LinkModel`` plugins, the sim clock, lifespan, drop causes,
quantization, range from env positions) and the fate trace are the same code on both.

An exchange serves one or more agents of this process, named by index: :meth:`Exchange.send` offers agent
``agent``'s message of one (tick, round) to its peers, :meth:`Exchange.collect` reads what ``agent`` can see of
that round. Within a round every served agent sends before any collects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np


class Heard(Protocol):
    """One sender's message as a receiver reads it (what a channel's ``inbox`` takes)."""

    payload: Mapping[str, np.ndarray]
    """Tensors with B rows each."""
    rows: np.ndarray | None
    """``[B]`` bool: the env copies whose row is fresh (None: every row)."""


class Exchange(Protocol):
    """Carries the rounds of the agents this process runs (see the module docstring)."""

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
        """Offer ``agent``'s message (B rows) to ``peers``; returns how many peers it went out to.

        Args:
            agent: The sender (an agent this exchange serves).
            tick: Batched env step.
            round: Round inside the step.
            channel: Channel name.
            payload: Tensors with B rows each.
            peers: Receivers.
            positions: ``[N, B, D]`` agent positions for the range check (None: no range check).
            rows: ``[B]`` bool, the env copies that send this round (None: all).
        """
        ...

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
    ) -> Mapping[int, Heard]:
        """What ``agent`` sees of round ``round`` of tick ``tick``: sender -> message, for senders heard.

        Args:
            agent: The receiver (an agent this exchange serves).
            tick: Batched env step.
            round: Round inside the step.
            channel: Channel name.
            expected: The peers whose frames of this round to wait for.
            timeout_s: Longest wait for them (None: the exchange's default).
            stop: Ends the wait early when set (shutting down).
        """
        ...

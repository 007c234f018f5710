"""The staged decision loop: ``encode -> K communication rounds through an Exchange -> act``, written once.

Per env step, for the agents a process runs (one in an agent process, all N in the in-process launcher):

1. every agent encodes its observation: ``state, outbox = runtime.encode(obs)``;
2. for each round k: every agent sends ``channel.payload(outbox)`` to its live peers (a gated channel only the
   rows ``channel.send_rows(outbox)``), then every agent collects what it can see of round k and turns it into an
   inbox with ``channel.inbox`` (malformed messages rejected and counted), and, before the last round, runs
   ``runtime.round(k + 1, state, inbox)`` for its next outbox;
3. the caller acts on ``(state, inboxes)`` (:func:`act`) and records the inboxes with the step.

Callers: :class:`agent_service.node.AgentNode`, the in-process launcher (:mod:`marlmesh.launch.inprocess`),
the single-process benchmark reference and the channel conformance suite (:mod:`marlmesh.testing.channels`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from marlmesh.exchange import Exchange
from marlmesh.interfaces import Channel, GatedChannel
from marlmesh.policy_runtime import ActOutput, NpInbox, PolicyRuntime


class AgentView(Protocol):
    """What an agent knows of the env at a step (the env service's observation of it has these and more)."""

    tick: int
    """The batched env step its action answers (names the rounds on the exchange)."""
    obs: np.ndarray
    """``[B, ...]`` its observation."""
    live_agents: Sequence[int]
    """The agents in the env now (it sends to every live agent but itself)."""
    positions: np.ndarray | None
    """``[N, B, D]`` agent positions for the links' range (None: no range check)."""


@dataclass
class StepView:
    """An :class:`AgentView` for callers without an env service (benchmarks, diagnostics, tests).

    Attributes:
        tick: The batched env step (strictly increasing over a run: it names the rounds on the exchange).
        obs: ``[B, ...]`` the agent's observation.
        live_agents: The agents taking part.
        positions: ``[N, B, D]`` agent positions for the links' range (None: no range check).
    """

    tick: int
    obs: np.ndarray
    live_agents: Sequence[int]
    positions: np.ndarray | None = None


@dataclass
class StagedStep:
    """One agent's stages of one env step, up to acting.

    Attributes:
        state: The runtime's state after the last round (input of :func:`act`).
        inboxes: One ``(msgs [B, N, M], mask [B, N])`` per round.
        outboxes: The message it sent in each round (``[B, M]``).
        sent_rows: Per round, ``[B]`` bool: the env copies it sent (all but a gated channel's closed rows).
        rejected: Messages its channel rejected as malformed.
        rounds_sent: Rounds in which its message went out to at least one peer.
        interrupted: The process began shutting down during a round; the step ends there, unfinished.
    """

    state: Any
    inboxes: list[NpInbox] = field(default_factory=list)
    outboxes: list[np.ndarray] = field(default_factory=list)
    sent_rows: list[np.ndarray] = field(default_factory=list)
    rejected: int = 0
    rounds_sent: int = 0
    interrupted: bool = False


def send_rows(channel: Channel, outbox: np.ndarray) -> np.ndarray | None:
    """``[B]`` bool, the rows a gated channel sends (``channel.send_rows``); None when it sends every row.

    Raises:
        ValueError: If the channel's ``send_rows`` gives anything but a ``[B]`` bool array.
    """
    if not channel.gated:
        return None
    rows = np.asarray(cast(GatedChannel, channel).send_rows(outbox))
    if rows.shape != (outbox.shape[0],) or rows.dtype != bool:
        raise ValueError(f"channel {channel.name!r}: send_rows gave {rows.dtype}{list(rows.shape)}, not bool[B]")
    return rows


def communicate(
    channel: Channel,
    runtimes: Mapping[int, PolicyRuntime],
    views: Mapping[int, AgentView],
    exchange: Exchange | None,
    *,
    num_agents: int,
    timeout_s: float | None = None,
    stop: threading.Event | None = None,
) -> dict[int, StagedStep]:
    """Run the stages of every agent in ``runtimes`` up to acting (steps 1-2 of the module docstring).

    Args:
        channel: The run's channel (``payload``, ``inbox``, ``rounds``, optional ``send_rows``).
        runtimes: Agent index -> its policy runtime (the agents this process runs).
        views: Agent index -> what it knows of the env at this step (all at the same tick).
        exchange: Carries the rounds (None only for a channel without rounds).
        num_agents: N.
        timeout_s: Longest wait per round for the peers' frames (None: the exchange's default).
        stop: Set when the process shuts down.

    Returns:
        Agent index -> its :class:`StagedStep` (``interrupted`` if ``stop`` was set during a round: the step
        ends there, its rounds so far counted).
    """
    steps: dict[int, StagedStep] = {}
    outbox: dict[int, np.ndarray | None] = {}
    for i, runtime in runtimes.items():
        state, outbox[i] = runtime.encode(np.asarray(views[i].obs, np.float32))
        steps[i] = StagedStep(state)
    if channel.rounds == 0:
        return steps
    assert exchange is not None, f"channel {channel.name!r} has rounds and needs an exchange"
    peers = {i: [p for p in views[i].live_agents if p != i] for i in runtimes}
    batch = next(iter(views.values())).obs.shape[0]
    for k in range(channel.rounds):
        for i in runtimes:
            out = outbox[i]
            assert out is not None, f"channel {channel.name!r}: stage {k} of agent {i} gave no outbox"
            rows = send_rows(channel, out)
            step = steps[i]
            step.outboxes.append(out)
            step.sent_rows.append(np.ones(batch, bool) if rows is None else rows)
            sent_to = exchange.send(
                i,
                tick=views[i].tick,
                round=k,
                channel=channel.name,
                payload=channel.payload(out),
                peers=peers[i],
                positions=views[i].positions,
                rows=rows,
            )
            step.rounds_sent += int(sent_to > 0)
        for i in runtimes:
            received = exchange.collect(
                i, tick=views[i].tick, round=k, channel=channel.name, expected=peers[i], timeout_s=timeout_s, stop=stop
            )
            if stop is not None and stop.is_set():  # shutting down: peers that left will never send this round
                for step in steps.values():
                    step.interrupted = True
                return steps
            msgs, mask, rejected = channel.inbox(received, batch, num_agents)
            steps[i].rejected += rejected
            steps[i].inboxes.append((msgs, mask))
        if k + 1 < channel.rounds:
            for i, runtime in runtimes.items():
                steps[i].state, outbox[i] = runtime.round(k + 1, steps[i].state, steps[i].inboxes[k])
    return steps


def restage(runtime: PolicyRuntime, obs: np.ndarray, inboxes: Sequence[NpInbox]) -> Any:
    """The state of a step recomputed with the runtime's current weights from the inboxes already received.

    Lockstep loads the weights trained on a fragment in the middle of a step; the rounds are not sent again.
    """
    state, _ = runtime.encode(np.asarray(obs, np.float32))
    for k in range(1, runtime.rounds):
        state, _ = runtime.round(k, state, inboxes[k - 1])
    return state


def act(runtime: PolicyRuntime, step: StagedStep, deterministic: bool) -> tuple[np.ndarray, np.ndarray, ActOutput]:
    """The final stage: ``(action [B, ...], log_prob [B], output)`` for one agent's :class:`StagedStep`."""
    out = runtime.act(step.state, step.inboxes)
    action, logp = runtime.sample(out, deterministic)
    return action, logp, out

"""Conformance suite for channel plugins (``marlmesh.channels``), usable by third-party channels too.

A channel is a set of staged policy stages plus a message schema. The checks run N of its policies in one
process through the staged loop every agent runs (:func:`run_stages`, :mod:`marlmesh.staged_loop`) and the
channel's own ``payload``/``inbox`` code, over an exchange (default: the in-process one, every agent's bus on an
in-memory hub with ideal links; any :class:`~marlmesh.exchange.Exchange` factory can be passed, e.g. buses on
ZeroMQ sockets), and verify what the rest of marlmesh relies on:

- :func:`check_round_trip`: what a sender puts in ``payload(outbox)`` comes out of ``inbox`` at its index,
  with mask 1 for every heard sender and 0 for self. A gated channel (optional ``send_rows(outbox) -> [B] bool``)
  sends only those rows: the bus delivers them as ``.rows``.
- :func:`check_malformed_rejected`: a missing key, wrong shape or dtype, non-finite values, a bad ``.rows``
  and an unknown sender are rejected and counted, never raised, and leave mask 0.
- :func:`check_mask_honoured`: ``.rows`` (which env copies' rows are visible) and absent senders give mask 0
  and zero messages.
- :func:`check_replay_identical`: the learner's :meth:`StagedPolicy.evaluate` on the recorded inboxes gives
  the same log-probabilities and values as the agent's stage-by-stage path.
- :func:`check_no_nan_isolated`: nobody heard (and an agent removed mid-episode) gives finite actions, values
  and gradients.
- :func:`check_critic_is_local`: the critic's value is a function of the agent's own observation and received
  messages only: other agents' observations matter only through messages, and env-copy rows do not mix.

:func:`run_conformance` runs them all. Example (from a plugin's own tests)::

    from marlmesh.testing.channels import run_conformance
    def test_my_channel():
        run_conformance(lambda: MyChannel(ChannelConfig(name="mine", message_dim=8)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.distributions import Distribution

from comm_bus.exchange import BusExchange, local_exchange
from marlmesh.config import BusConfig
from marlmesh.exchange import Exchange
from marlmesh.interfaces import Channel
from marlmesh.policies.staged import Inbox, StagedPolicy
from marlmesh.policies.torch_runtime import TorchRuntime
from marlmesh.policy_spec import PolicySpec
from marlmesh.spaces import SpaceSpec
from marlmesh.staged_loop import StepView, communicate

ChannelFactory = Callable[[], Channel]


@dataclass
class Received:
    """An in-memory received message, shaped like the bus's: ``.payload`` plus optional ``.rows`` ([B] bool)."""

    payload: dict[str, np.ndarray]
    rows: np.ndarray | None = None


@dataclass
class TeamStep:
    """What every agent saw and did in one env step of :func:`run_stages`.

    Attributes:
        obs: Per agent, ``[B, obs_dim]``.
        outboxes: Per agent, per round, the message it sent (``[B, M]``).
        sent_rows: Per agent, per round, ``[B]`` bool: the rows it sent (``channel.send_rows`` for gated
            channels, else all).
        inboxes: Per agent, per round, ``(msgs [B, N, M], mask [B, N])`` as numpy arrays.
        dists: Per agent, the action distribution of the final stage.
        values: Per agent, the local critic's value ``[B]``.
        rejected: Per agent, messages its channel rejected.
    """

    obs: list[np.ndarray]
    outboxes: list[list[np.ndarray]]
    sent_rows: list[list[np.ndarray]]
    inboxes: list[list[tuple[np.ndarray, np.ndarray]]]
    dists: list[Distribution]
    values: list[torch.Tensor]
    rejected: list[int]


def make_spec(
    agent_index: int, num_agents: int, message_dim: int, obs_dim: int = 6, action: str = "discrete"
) -> PolicySpec:
    """A small policy spec: Box observations and a Discrete(5) (or Box(2)) action space."""
    act = (
        SpaceSpec(kind="discrete", n=5)
        if action == "discrete"
        else SpaceSpec(kind="box", shape=(2,), low=(-1.0, -1.0), high=(1.0, 1.0))
    )
    return PolicySpec(
        agent_index=agent_index,
        num_agents=num_agents,
        obs_space=SpaceSpec(kind="box", shape=(obs_dim,)),
        action_space=act,
        message_dim=message_dim,
        hidden_sizes=(32, 32),
    )


def build_team(channel: Channel, num_agents: int, seed: int = 0, action: str = "discrete") -> list[StagedPolicy]:
    """One policy per agent, each with its own (seeded) parameters, in eval mode."""
    team = []
    for i in range(num_agents):
        torch.manual_seed(seed * 1000 + i)
        policy = channel.build_policy(make_spec(i, num_agents, channel.message_dim, action=action))
        policy.eval()
        team.append(policy)
    return team


def full_links(batch: int, num_agents: int) -> np.ndarray:
    """``links[b, i, j]``: j's message reaches i in env copy b. Everyone hears everyone else."""
    links = np.ones((batch, num_agents, num_agents), bool)
    links[:, np.arange(num_agents), np.arange(num_agents)] = False
    return links


def _t(inbox: tuple[np.ndarray, np.ndarray]) -> Inbox:
    return torch.from_numpy(inbox[0]), torch.from_numpy(inbox[1])


ExchangeFactory = Callable[[int, int], "BusExchange"]
"""``(num_agents, rounds) -> exchange``: a fresh exchange serving every agent (closed by the suite after use)."""


def local_exchange_factory(num_agents: int, rounds: int) -> BusExchange:
    """The in-process exchange (every agent's bus on an in-memory hub) with ideal links."""
    return local_exchange(num_agents, config=BusConfig(), rounds=rounds)


class _LinkMask:
    """An exchange seen through ``links[b, i, j]``: rows of j that i may not see are hidden from it."""

    def __init__(self, inner: Exchange, links: np.ndarray) -> None:
        self.inner = inner
        self.links = links

    def send(self, agent: int, **kwargs: Any) -> int:
        return self.inner.send(agent, **kwargs)

    def collect(self, agent: int, **kwargs: Any) -> dict[int, Received]:
        out = {}
        for j, heard in self.inner.collect(agent, **kwargs).items():
            rows = self.links[:, agent, j] & (True if heard.rows is None else heard.rows)
            if rows.any():
                out[j] = Received(dict(heard.payload), rows=rows)
        return out


@torch.no_grad()
def run_stages(
    channel: Channel,
    team: list[StagedPolicy],
    obs: list[np.ndarray],
    links: np.ndarray | None = None,
    exchange: ExchangeFactory = local_exchange_factory,
) -> TeamStep:
    """One env step of the whole team through the staged loop (:mod:`marlmesh.staged_loop`), as agents run it.

    Args:
        channel: The channel under test (its ``payload`` and ``inbox`` are used for every message).
        team: One policy per agent.
        obs: Per agent ``[B, obs_dim]`` float32.
        links: ``[B, N, N]`` bool, ``links[b, i, j]`` = j's message reaches i in env copy b (default: all).
        exchange: Builds the exchange the rounds travel through (default: the in-process one, ideal links).
    """
    n = len(team)
    runtimes = {i: TorchRuntime(policy) for i, policy in enumerate(team)}
    views = {i: StepView(0, obs[i], range(n)) for i in range(n)}
    inner = exchange(n, channel.rounds) if channel.rounds else None
    try:
        ex = inner if inner is None or links is None else _LinkMask(inner, links)
        staged = communicate(channel, runtimes, views, ex, num_agents=n)
    finally:
        if inner is not None:
            inner.close()
    dists, values = [], []
    for i in range(n):
        dist, value = team[i].act(staged[i].state, [_t(x) for x in staged[i].inboxes])
        dists.append(dist)
        values.append(value)
    return TeamStep(
        obs,
        [staged[i].outboxes for i in range(n)],
        [staged[i].sent_rows for i in range(n)],
        [staged[i].inboxes for i in range(n)],
        dists,
        values,
        [staged[i].rejected for i in range(n)],
    )


def _obs(rng: np.random.Generator, n: int, batch: int, obs_dim: int = 6) -> list[np.ndarray]:
    return [rng.normal(size=(batch, obs_dim)).astype(np.float32) for _ in range(n)]


def _finite_dist(dist: Distribution) -> bool:
    params = [getattr(dist, "logits", None), getattr(dist, "loc", None), getattr(dist, "scale", None)]
    return all(torch.isfinite(p).all() for p in params if p is not None)


# -- the checks ----------------------------------------------------------------------------------------
def check_round_trip(
    make: ChannelFactory, num_agents: int = 3, batch: int = 5, exchange: ExchangeFactory = local_exchange_factory
) -> None:
    """Payloads come out of ``inbox`` at the sender's index with mask 1; self has mask 0."""
    channel = make()
    if channel.rounds == 0:
        return
    team = build_team(channel, num_agents)
    step = run_stages(channel, team, _obs(np.random.default_rng(0), num_agents, batch), exchange=exchange)
    for i in range(num_agents):
        assert step.rejected[i] == 0, f"agent {i}: {step.rejected[i]} well-formed messages rejected"
        for k in range(channel.rounds):
            msgs, mask = step.inboxes[i][k]
            assert msgs.shape == (batch, num_agents, channel.message_dim) and msgs.dtype == np.float32
            assert mask.shape == (batch, num_agents) and mask.dtype == np.float32
            for j in range(num_agents):
                if j == i:
                    assert not mask[:, j].any(), "an agent must not hear itself"
                    continue
                sent = step.sent_rows[j][k]
                np.testing.assert_array_equal(mask[:, j], sent.astype(np.float32), f"round {k}: {i} hearing {j}")
                np.testing.assert_array_equal(msgs[sent, j], step.outboxes[j][k][sent])
                assert not msgs[~sent, j].any(), "a row that was not sent reached the inbox"


def check_malformed_rejected(
    make: ChannelFactory, num_agents: int = 3, batch: int = 4, exchange: ExchangeFactory = local_exchange_factory
) -> None:
    """Malformed messages are rejected and counted (never raised); the good one next to them is kept."""
    channel = make()
    if channel.rounds == 0:
        return
    team = build_team(channel, num_agents)
    obs = _obs(np.random.default_rng(1), num_agents, batch)
    with torch.no_grad():
        _, out = team[1].encode(torch.from_numpy(obs[1]))
    good = channel.payload(out.numpy())
    m = channel.message_dim
    key = next(iter(good))
    nan = {k: v.copy() for k, v in good.items()}
    nan[key][0, 0] = np.nan
    bad_cases: list[tuple[str, object]] = [
        ("missing key", Received({})),
        ("wrong shape", Received({key: np.zeros((batch, m + 1), np.float32)})),
        ("wrong batch", Received({key: np.zeros((batch + 1, m), np.float32)})),
        ("wrong dtype", Received({key: np.zeros((batch, m), np.int32)})),
        ("non-finite", Received(nan)),
        ("bad rows", Received(good, rows=np.ones(batch + 2, bool))),
    ]
    for what, bad in bad_cases:
        msgs, mask, rejected = channel.inbox({1: Received(good), 2: bad}, batch, num_agents)
        assert rejected == 1, f"{what}: rejected {rejected}, expected 1"
        assert not mask[:, 2].any() and not msgs[:, 2].any(), f"{what}: rejected message left traces"
        assert (mask[:, 1] == 1).all(), f"{what}: the well-formed message was lost"
    msgs, mask, rejected = channel.inbox({num_agents: Received(good)}, batch, num_agents)
    assert rejected == 1 and not mask.any(), "a sender index outside [0, N) must be rejected"


def check_mask_honoured(
    make: ChannelFactory, num_agents: int = 4, batch: int = 6, exchange: ExchangeFactory = local_exchange_factory
) -> None:
    """``.rows`` and absent senders give mask 0 and zero messages; visible rows are exact."""
    channel = make()
    if channel.rounds == 0:
        return
    team = build_team(channel, num_agents)
    rng = np.random.default_rng(2)
    links = full_links(batch, num_agents)
    links &= rng.random(links.shape) < 0.6
    links[:, 0, num_agents - 1] = False  # the last agent never reaches agent 0
    step = run_stages(channel, team, _obs(rng, num_agents, batch), links, exchange=exchange)
    for i in range(num_agents):
        for k in range(channel.rounds):
            msgs, mask = step.inboxes[i][k]
            sent = np.stack([step.sent_rows[j][k] for j in range(num_agents)], axis=1)  # [B, N]
            visible = links[:, i, :] & sent
            np.testing.assert_array_equal(mask, visible.astype(np.float32))
            hidden = ~visible
            assert not msgs[hidden].any(), "a message row that was not visible leaked into the inbox"
            for j in range(num_agents):
                rows = visible[:, j]
                np.testing.assert_array_equal(msgs[rows, j], step.outboxes[j][k][rows])


def check_replay_identical(
    make: ChannelFactory,
    num_agents: int = 3,
    batch: int = 7,
    action: str = "discrete",
    exchange: ExchangeFactory = local_exchange_factory,
) -> None:
    """``evaluate`` on recorded inputs == the agent's stage-by-stage log-probs and values."""
    channel = make()
    team = build_team(channel, num_agents, action=action)
    rng = np.random.default_rng(3)
    links = full_links(batch, num_agents) & (rng.random((batch, num_agents, num_agents)) < 0.7)
    step = run_stages(channel, team, _obs(rng, num_agents, batch), links, exchange=exchange)
    for i, policy in enumerate(team):
        with torch.no_grad():
            action_t = policy.actor.sample(step.dists[i], False)
            logp_agent = policy.actor.log_prob(step.dists[i], action_t)
            logp, _, value = policy.evaluate(torch.from_numpy(step.obs[i]), [_t(x) for x in step.inboxes[i]], action_t)
        torch.testing.assert_close(logp, logp_agent, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(value, step.values[i], rtol=1e-5, atol=1e-5)


def check_no_nan_isolated(
    make: ChannelFactory, num_agents: int = 3, batch: int = 4, exchange: ExchangeFactory = local_exchange_factory
) -> None:
    """Nobody heard, or one agent removed (silent and deaf) mid-episode: finite outputs and gradients."""
    channel = make()
    team = build_team(channel, num_agents)
    rng = np.random.default_rng(4)
    obs = _obs(rng, num_agents, batch)
    removed = full_links(batch, num_agents)
    removed[:, :, num_agents - 1] = False
    removed[:, num_agents - 1, :] = False
    for links in (np.zeros((batch, num_agents, num_agents), bool), removed):
        step = run_stages(channel, team, obs, links, exchange=exchange)
        for i, policy in enumerate(team):
            assert _finite_dist(step.dists[i]), f"agent {i}: non-finite action distribution"
            assert torch.isfinite(step.values[i]).all(), f"agent {i}: non-finite value"
            actions = policy.actor.sample(step.dists[i], False)
            logp, ent, value = policy.evaluate(torch.from_numpy(obs[i]), [_t(x) for x in step.inboxes[i]], actions)
            policy.zero_grad()
            (logp.sum() + ent.sum() + value.sum()).backward()
            for name, p in policy.named_parameters():
                assert p.grad is None or torch.isfinite(p.grad).all(), f"agent {i}: non-finite gradient of {name}"


def check_critic_is_local(
    make: ChannelFactory, num_agents: int = 3, batch: int = 5, exchange: ExchangeFactory = local_exchange_factory
) -> None:
    """The value depends only on the agent's own observation and received messages, row by row."""
    channel = make()
    team = build_team(channel, num_agents)
    rng = np.random.default_rng(5)
    obs = _obs(rng, num_agents, batch)
    step = run_stages(channel, team, obs, exchange=exchange)
    # 1. another agent's observation changes: with the recorded messages unchanged the value is unchanged
    changed = [o.copy() for o in obs]
    changed[1] = changed[1] + 3.0
    step2 = run_stages(channel, team, changed, exchange=exchange)
    with torch.no_grad():
        replay = team[0].value(torch.from_numpy(obs[0]), [_t(x) for x in step.inboxes[0]])
    torch.testing.assert_close(replay, step.values[0], rtol=1e-5, atol=1e-5)
    if channel.rounds == 0:
        torch.testing.assert_close(step2.values[0], step.values[0], rtol=0, atol=0)
    # 2. an agent whose messages reach nobody cannot influence anyone's value
    silent = full_links(batch, num_agents)
    silent[:, :, 1] = False
    base = run_stages(channel, team, obs, silent, exchange=exchange)
    moved = run_stages(channel, team, changed, silent, exchange=exchange)
    for i in range(num_agents):
        if i != 1:
            torch.testing.assert_close(moved.values[i], base.values[i], rtol=0, atol=0)
    # 3. rows (env copies) do not mix: d value[b] / d inputs[b'] = 0 for b' != b
    o = torch.from_numpy(obs[0]).requires_grad_(True)
    boxes = [(torch.from_numpy(m).requires_grad_(True), torch.from_numpy(k)) for m, k in step.inboxes[0]]
    value = team[0].value(o, boxes)
    grads = torch.autograd.grad(value[0], [o, *[m for m, _ in boxes]], allow_unused=True)
    for g in grads:
        if g is not None:
            assert not g[1:].abs().sum() > 0, "the value of env copy 0 depends on another env copy's inputs"


CHECKS = (
    check_round_trip,
    check_malformed_rejected,
    check_mask_honoured,
    check_replay_identical,
    check_no_nan_isolated,
    check_critic_is_local,
)
"""Every check of the suite, in order."""


def run_conformance(make: ChannelFactory, exchange: ExchangeFactory = local_exchange_factory) -> None:
    """Run every check on a channel built by ``make`` (raises AssertionError on the first failure).

    Args:
        make: Builds the channel under test.
        exchange: Builds the exchange its rounds travel through (default: in process, ideal links; the
            built-in channels also run through ZeroMQ sockets on 127.0.0.1, see ``tests/conformance``).
    """
    for check in CHECKS:
        check(make, exchange=exchange)
    check_replay_identical(make, action="box", exchange=exchange)

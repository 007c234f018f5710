"""The env service's logic (no gRPC): B env copies, a step barrier with a deadline, episode statistics.

Barrier semantics, per tick:

- Every agent of the env is waited for, except agents that said ``Leave`` and agents marked *absent*.
- The deadline starts when the first action of the tick arrives. Agents still missing after
  ``env.step_deadline_ms`` get the space's default action (counted in ``default_actions``); an agent that
  misses ``env.max_missed_deadlines`` deadlines in a row becomes absent and is no longer waited for until it
  submits an action again.
- An action for an old tick is not applied (counted in ``late_actions``); the agent gets the current
  observation back and continues from there.
- An env copy is reset as soon as any agent's episode ends in it (fixed-population semantics). The step
  that ends an episode reports ``terminated``/``truncated`` from the env and the episode's last observation
  in ``final_obs``; agents still running in that copy see ``truncated``. The observation is the first one of
  the new episode.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from env_service.copies import EnvCopies
from env_service.env_workers import EnvWorkerError, EnvWorkers
from marlmesh.config import EnvConfig
from marlmesh.envs import make_env
from marlmesh.envs.adapter import adapter_for
from marlmesh.observation import AgentObservation
from marlmesh.spaces import SpaceSpec

log = logging.getLogger(__name__)

MAX_EPISODE_HISTORY = 10_000
"""Finished-episode records kept for ``GetStats``."""


class EnvError(Exception):
    """A request the env cannot serve; ``kind`` maps to a gRPC status in the servicer."""

    kind = "invalid"


class InvalidRequest(EnvError):
    """The request is malformed (bad agent index, shape, dtype or tick)."""


class NotJoined(EnvError):
    """The agent must ``Join`` first."""

    kind = "precondition"


class EnvClosed(EnvError):
    """The service is shutting down."""

    kind = "unavailable"


@dataclass
class EpisodeRecord:
    """A finished episode of one env copy."""

    seq: int
    env_index: int
    end_tick: int
    agent_returns: list[float]
    length: int
    collisions: float

    @property
    def return_sum(self) -> float:
        """Sum of all agents' episode returns."""
        return float(sum(self.agent_returns))


@dataclass
class EnvStatsView:
    """Counters and finished episodes."""

    tick: int
    env_steps: int
    episodes: int
    recent: list[EpisodeRecord]
    default_actions: dict[int, int]
    late_actions: dict[int, int]
    live_agents: list[int]
    steps_per_second: float


class EnvNode:
    """B copies of one ParallelEnv stepped in lock step by N agent processes.

    Args:
        config: The ``env`` section of the config.
        seed: Copy ``b`` is first reset with seed ``seed + b``; later resets continue each copy's RNG.
        num_envs: B (defaults to ``config.num_envs``).
        clock: Monotonic clock (injectable for tests).
        start_tick: First tick number. A restarted env service continues above its previous incarnation's
            ticks, so agents' buses do not take the new ticks' messages for stale ones.
        start_deadline_s: Barrier deadline while a missing agent has not acted yet since this env started or
            since it (re)joined (it may still be starting: importing, loading weights). None: the step
            deadline. Lockstep runs use the startup timeout, so start-up skew gives no default actions.
        on_failure: Called (with the reason) when the env copies fail for good (an ``env.workers`` process
            died); the node is closed by then and every ``step`` raises :class:`EnvClosed`. The env service
            stops and exits non-zero, so its supervisor restarts it.

    Raises:
        ValueError: If the env cannot be built or has an unsupported space.
        plugins.PluginError: If ``config.name`` is unknown.
        env_workers.EnvWorkerError: If an ``env.workers`` process cannot build its copies.
    """

    def __init__(
        self,
        config: EnvConfig,
        seed: int,
        num_envs: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        start_tick: int = 0,
        start_deadline_s: float | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.num_envs = int(num_envs or config.num_envs)
        self.deadline_s = config.step_deadline_ms / 1000.0
        self.start_deadline_s = self.deadline_s if start_deadline_s is None else start_deadline_s
        self._clock = clock
        self.failure: str | None = None
        self._on_failure = on_failure
        if config.workers > 1:
            first = make_env(config)  # spaces and adapter (and config errors, first); the copies live in the workers
            self._copies: EnvCopies | EnvWorkers = EnvWorkers(config, seed, self.num_envs)
        else:
            self._copies = EnvCopies(config, seed, 0, self.num_envs)
            first = self._copies.template
        self.agent_names: list[str] = list(first.possible_agents)
        self.num_agents = len(self.agent_names)
        if self.num_agents == 0:
            raise ValueError(f"env {config.name!r} has no agents")
        self.adapter = adapter_for(first)
        try:
            self.obs_spaces = [SpaceSpec.from_gym(first.observation_space(a)) for a in self.agent_names]
            self.act_spaces = [SpaceSpec.from_gym(first.action_space(a)) for a in self.agent_names]
        except ValueError as exc:
            raise ValueError(f"env {config.name!r}: {exc}") from None
        self.instance_id = uuid.uuid4().hex
        b, n = self.num_envs, self.num_agents
        self._state = self._copies.reset()
        self._ep_returns = np.zeros((b, n), np.float64)
        self._ep_len = np.zeros(b, np.int64)
        self._ep_coll = np.zeros(b, np.float64)
        # barrier state
        self._cond = threading.Condition()
        if start_tick < 0:
            raise ValueError(f"start_tick must be >= 0, got {start_tick}")
        self.tick = int(start_tick)
        self._pending: dict[int, np.ndarray] = {}
        self._first_action_at: float | None = None
        self._joined: dict[int, str] = {}
        self._acted: set[int] = set()  # agents that submitted an action since this env started or they (re)joined
        self._left: set[int] = set()
        self._absent: set[int] = set()
        self._missed = [0] * n
        self._closed = False
        # statistics
        self.env_steps = 0
        self.joins = 0
        self.rejoins = 0
        self.default_actions: collections.Counter[int] = collections.Counter()
        self.late_actions: collections.Counter[int] = collections.Counter()
        self._episodes: collections.deque[EpisodeRecord] = collections.deque(maxlen=MAX_EPISODE_HISTORY)
        self._episode_seq = 0
        self._rate: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._rate.append((clock(), 0))

    # -- public API --------------------------------------------------------------------------------
    def check_agent(self, agent: int) -> None:
        """Raise :class:`InvalidRequest` unless ``agent`` is an index of this env."""
        if not 0 <= agent < self.num_agents:
            raise InvalidRequest(f"agent_index {agent} out of range: this env has agents 0..{self.num_agents - 1}")

    def join(self, agent: int, process_id: str) -> AgentObservation:
        """Register an agent process; a new process id for a joined slot counts as a rejoin."""
        self.check_agent(agent)
        with self._cond:
            self._raise_if_closed()
            previous = self._joined.get(agent)
            if previous is not None and previous != process_id:
                self.rejoins += 1
                log.info("agent %d rejoined (process %s replaces %s)", agent, process_id, previous)
            self.joins += 1
            self._joined[agent] = process_id
            self._acted.discard(agent)
            self._left.discard(agent)
            self._absent.discard(agent)
            self._missed[agent] = 0
            self._pending.pop(agent, None)
            return self._view(agent)

    def leave(self, agent: int) -> None:
        """Stop waiting for ``agent`` (it gets default actions until it joins again)."""
        self.check_agent(agent)
        with self._cond:
            self._joined.pop(agent, None)
            self._left.add(agent)
            self._pending.pop(agent, None)
            self._cond.notify_all()

    def step(self, agent: int, tick: int, action: np.ndarray) -> tuple[AgentObservation, bool]:
        """Submit ``agent``'s action for ``tick`` and wait for the barrier.

        Returns:
            The agent's view of the next tick, and whether the action was applied (False if it was late).

        Raises:
            InvalidRequest: Bad index, action or future tick; NotJoined; EnvClosed.
        """
        self.check_agent(agent)
        try:
            action = self.act_spaces[agent].validate_action(action, self.num_envs)
        except ValueError as exc:
            raise InvalidRequest(f"agent {agent}: {exc}") from None
        with self._cond:
            self._raise_if_closed()
            if agent not in self._joined:
                raise NotJoined(f"agent {agent} has not joined (call Join first)")
            self._absent.discard(agent)
            self._missed[agent] = 0
            if tick < self.tick:
                self.late_actions[agent] += 1
                return self._view(agent), False
            if tick > self.tick:
                raise InvalidRequest(f"tick {tick} is ahead of the env (current tick {self.tick})")
            if agent in self._pending:
                raise InvalidRequest(f"agent {agent} already submitted an action for tick {tick}")
            self._pending[agent] = action
            self._acted.add(agent)
            if self._first_action_at is None:
                self._first_action_at = self._clock()
            while self.tick == tick:
                missing = self._waited_for() - self._pending.keys()
                if not missing:
                    self._advance(missed=set())
                    break
                deadline = self.deadline_s if missing <= self._acted else self.start_deadline_s
                remaining = self._first_action_at + deadline - self._clock()
                if remaining <= 0:
                    self._advance(missed=missing)
                    break
                self._cond.wait(remaining)
                self._raise_if_closed()
            return self._view(agent), True

    def stats(self, episodes_from: int = 0, max_episodes: int = 1000) -> EnvStatsView:
        """Counters and up to ``max_episodes`` finished episodes with ``seq >= episodes_from``."""
        with self._cond:
            oldest = self._episodes[0].seq if self._episodes else self._episode_seq
            start = max(0, episodes_from - oldest)
            recent = [self._episodes[i] for i in range(start, min(len(self._episodes), start + max(0, max_episodes)))]
            return EnvStatsView(
                tick=self.tick,
                env_steps=self.env_steps,
                episodes=self._episode_seq,
                recent=recent,
                default_actions=dict(self.default_actions),
                late_actions=dict(self.late_actions),
                live_agents=self._live(),
                steps_per_second=self._steps_per_second(),
            )

    def close(self) -> None:
        """Wake every waiting ``step`` with :class:`EnvClosed` and close the env copies."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._copies.close()

    # -- internals (call with the lock held) -------------------------------------------------------
    def _raise_if_closed(self) -> None:
        if self._closed:
            raise EnvClosed("env_service is shutting down")

    def _waited_for(self) -> set[int]:
        return set(range(self.num_agents)) - self._left - self._absent

    def _live(self) -> list[int]:
        # The agents the barrier waits for (everyone but those that left or went absent), not only those
        # that joined so far: an early joiner then expects its peers' messages from tick 0 on, so who
        # hears whom does not depend on start-up timing (sim-clock determinism).
        return sorted(self._waited_for())

    def _view(self, agent: int) -> AgentObservation:
        state = self._state  # replaced (never written in place) by every step: no copies needed
        return AgentObservation(
            tick=self.tick,
            obs=state.obs[agent],
            reward=state.reward[agent],
            terminated=state.terminated[agent],
            truncated=state.truncated[agent],
            final_obs=state.final[agent],
            cost=state.cost[agent],
            positions=state.positions,
            live_agents=self._live(),
        )

    def _advance(self, missed: set[int]) -> None:
        for a in sorted(missed):
            self._missed[a] += 1
            if self._missed[a] >= self.config.max_missed_deadlines and a not in self._absent:
                self._absent.add(a)
                log.warning(
                    "agent %d missed %d deadlines in a row; no longer waiting for it until it acts again",
                    a,
                    self._missed[a],
                )
        actions = []
        for a in range(self.num_agents):
            act = self._pending.get(a)
            if act is None:
                self.default_actions[a] += 1
                act = self.act_spaces[a].default_action(self.num_envs)
            actions.append(act)
        self._step_envs(actions)
        self._pending.clear()
        self._first_action_at = None
        self.tick += 1
        self.env_steps += self.num_envs
        self._rate.append((self._clock(), self.env_steps))
        self._cond.notify_all()

    def _step_envs(self, actions: list[np.ndarray]) -> None:
        try:
            self._state = state = self._copies.step(actions)
        except EnvWorkerError as exc:
            self.failure = str(exc)
            self._closed = True
            self._cond.notify_all()
            log.error("the env copies failed; the env service stops: %s", exc)
            if self._on_failure is not None:
                self._on_failure(self.failure)
            raise EnvClosed(f"env_service failed: {exc}") from None
        if self.adapter.has_collisions:
            self._ep_coll += state.cost.sum(axis=0) / 2.0
        self._ep_returns += state.reward.T
        self._ep_len += 1
        for b in np.flatnonzero(state.ended):
            self._record_episode(int(b))

    def _record_episode(self, b: int) -> None:
        self._episodes.append(
            EpisodeRecord(
                seq=self._episode_seq,
                env_index=b,
                end_tick=self.tick + 1,
                agent_returns=[float(x) for x in self._ep_returns[b]],
                length=int(self._ep_len[b]),
                collisions=float(self._ep_coll[b]) if self.adapter.has_collisions else float("nan"),
            )
        )
        self._episode_seq += 1
        self._ep_returns[b] = 0.0
        self._ep_len[b] = 0
        self._ep_coll[b] = 0.0

    def _steps_per_second(self, window_s: float = 5.0) -> float:
        now, steps = self._rate[-1]
        old_t, old_steps = self._rate[0]
        for t, s in self._rate:
            if now - t <= window_s:
                old_t, old_steps = t, s
                break
        return (steps - old_steps) / (now - old_t) if now > old_t else 0.0

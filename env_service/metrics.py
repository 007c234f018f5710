"""The env service's Prometheus series, mirrored from :class:`env_service.node.EnvNode` by a background thread.

The stepping path makes no metric calls: once a second the exporter reads the node's counters and the episodes
finished since its last look. Episode statistics are *windowed-mean gauges* over the last
:data:`EPISODE_WINDOW` finished episodes (returns of a fixed env fit no fixed histogram buckets; a mean over a
window is what the training progress line shows too). ``marlmesh_env_episodes_total`` counts what the window
moves over.
"""

from __future__ import annotations

import collections
import math
import threading

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from env_service.node import MAX_EPISODE_HISTORY, EnvNode, EpisodeRecord

EPISODE_WINDOW = 100
"""Finished episodes (over all env copies) behind the windowed-mean gauges."""

ENV_STEPS = Counter("marlmesh_env_steps", "Single-env steps summed over the B copies")
EPISODES = Counter("marlmesh_env_episodes", "Finished episodes")
DEFAULT_ACTIONS = Counter("marlmesh_env_default_actions", "Default actions given at the barrier", ["agent"])
LATE_ACTIONS = Counter("marlmesh_env_late_actions", "Actions that arrived for an old tick", ["agent"])
LIVE_AGENTS = Gauge("marlmesh_env_live_agents", "Agents joined and stepping")


class EpisodeGauges:
    """The windowed-mean episode gauges, registered when the first episode ends (absent before, not 0).

    Args:
        registry: Where they are registered.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        w = EPISODE_WINDOW
        self.team_return = Gauge(
            "marlmesh_env_team_episode_return_mean",
            f"Sum of all agents' episode returns, mean over the last {w} finished episodes",
            registry=registry,
        )
        self.agent_return = Gauge(
            "marlmesh_env_episode_return_mean",
            f"One agent's episode return, mean over the last {w} finished episodes",
            ["agent"],
            registry=registry,
        )
        self.length = Gauge(
            "marlmesh_env_episode_length_steps_mean",
            f"Episode length in steps, mean over the last {w} finished episodes",
            registry=registry,
        )
        self._registry = registry
        self._collisions: Gauge | None = None
        self.episodes = Gauge(
            "marlmesh_env_episode_window_episodes", "Finished episodes behind the windowed means", registry=registry
        )

    @property
    def collisions(self) -> Gauge:
        """The collisions gauge, registered on first use (envs that report no collisions export none)."""
        if self._collisions is None:
            self._collisions = Gauge(
                "marlmesh_env_episode_collisions_mean",
                f"Agent-agent collisions per episode, mean over the last {EPISODE_WINDOW} finished episodes",
                registry=self._registry,
            )
        return self._collisions


class EpisodeWindow:
    """The last ``size`` finished episodes and the gauges they set.

    Args:
        size: Episodes kept.
        registry: Where the gauges are registered (on the first episode).
    """

    def __init__(self, size: int = EPISODE_WINDOW, registry: CollectorRegistry = REGISTRY) -> None:
        self.episodes: collections.deque[EpisodeRecord] = collections.deque(maxlen=size)
        self._registry = registry
        self._gauges: EpisodeGauges | None = None

    def add(self, episodes: list[EpisodeRecord]) -> None:
        """Take newly finished episodes and set the gauges (nothing is set before the first episode)."""
        if not episodes:
            return
        if self._gauges is None:
            self._gauges = EpisodeGauges(self._registry)
        g = self._gauges
        self.episodes.extend(episodes)
        window = list(self.episodes)
        returns = np.array([e.agent_returns for e in window], dtype=np.float64)
        g.team_return.set(float(returns.sum(axis=1).mean()))
        for agent, mean in enumerate(returns.mean(axis=0)):
            g.agent_return.labels(agent=str(agent)).set(float(mean))
        g.length.set(float(np.mean([e.length for e in window])))
        collisions = [e.collisions for e in window if not math.isnan(e.collisions)]
        if collisions:
            g.collisions.set(float(np.mean(collisions)))
        g.episodes.set(len(window))


def export_metrics(node: EnvNode, stop: threading.Event, period_s: float = 1.0) -> None:
    """Mirror the node's counters and finished episodes into Prometheus every ``period_s`` until ``stop``."""
    seen_steps, seen_eps = 0, 0
    seen_default: dict[int, int] = {}
    seen_late: dict[int, int] = {}
    window = EpisodeWindow()
    while True:
        s = node.stats(episodes_from=seen_eps, max_episodes=MAX_EPISODE_HISTORY)
        ENV_STEPS.inc(s.env_steps - seen_steps)
        EPISODES.inc(s.episodes - seen_eps)
        window.add(s.recent)
        seen_steps, seen_eps = s.env_steps, s.episodes
        for counts, seen, metric in (
            (s.default_actions, seen_default, DEFAULT_ACTIONS),
            (s.late_actions, seen_late, LATE_ACTIONS),
        ):
            for agent, n in counts.items():
                metric.labels(agent=str(agent)).inc(n - seen.get(agent, 0))
                seen[agent] = n
        LIVE_AGENTS.set(len(s.live_agents))
        if stop.wait(period_s):
            return

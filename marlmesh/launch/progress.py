"""Progress of a run: the console line both launchers print, and the mesh's poller behind ``metrics.jsonl``."""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np

from marlmesh.config import Config
from marlmesh.launch.mesh import Mesh
from marlmesh.tensorboard import TeamLog
from marlmesh.v1 import env_pb2, learner_pb2, learner_pb2_grpc


def _fmt_time(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def progress(steps: int, total: int, elapsed: float, max_wall_seconds: float | None) -> tuple[float, int]:
    """``(seconds left, percent done)`` of a run that stops at ``total`` env steps or ``max_wall_seconds``.

    Whichever limit comes first counts; seconds left is NaN before the step rate is known.
    """
    rate = steps / elapsed if elapsed > 0 else 0.0
    left = (total - steps) / rate if rate > 0 else float("nan")
    share = steps / total
    if max_wall_seconds is not None:
        wall_left = max(0.0, max_wall_seconds - elapsed)
        left = wall_left if math.isnan(left) else min(left, wall_left)
        share = max(share, elapsed / max_wall_seconds)
    return left, min(100, int(100 * share))


def progress_line(rec: dict[str, object], episodes_in_mean: int, config: Config) -> str:
    """The console progress line of a ``metrics.jsonl`` record (both launchers print it).

    Args:
        rec: The record (``env_steps``, ``wall_seconds``, ``steps_per_second``, ``return_sum_recent_mean``,
            ``learners`` with their ``version``).
        episodes_in_mean: Episodes behind ``return_sum_recent_mean``.
        config: The run's config (the budget).
    """
    total = config.train.total_env_steps
    steps = int(rec["env_steps"])
    elapsed = float(rec["wall_seconds"])
    left, share = progress(steps, total, elapsed, config.train.max_wall_seconds)
    ret = rec["return_sum_recent_mean"]
    versions = "/".join(str(lr.get("version")) for lr in rec["learners"]) or "-"
    return (
        f"[{share:3d}%] env steps {steps:,}/{total:,}"
        f" | {rec['steps_per_second']:,.0f} steps/s"
        f" | return (last {episodes_in_mean} ep) {'-' if ret is None else f'{ret:.1f}'}"
        f" | policy versions {versions} | {_fmt_time(elapsed)} elapsed"
        + (f", ~{_fmt_time(left)} left" if left == left else "")
    )


class EpisodeWindow:
    """The last 100 finished episodes a launcher has read from the env's statistics, for its progress records.

    Attributes:
        next_seq: The sequence number of the first episode not read yet (``episodes_from`` of the next read).
        returns: Summed returns of the last 100 episodes.
        collisions: Collisions of the last 100 episodes that report them.
    """

    def __init__(self) -> None:
        self.next_seq = 0
        self.returns: collections.deque[float] = collections.deque(maxlen=100)
        self.collisions: collections.deque[float] = collections.deque(maxlen=100)

    def add(self, recent: Iterable[Any]) -> None:
        """Take in newly finished episodes (each with ``seq``, ``return_sum`` and ``collisions``, NaN if none)."""
        for ep in recent:
            self.returns.append(ep.return_sum)
            if not np.isnan(ep.collisions):
                self.collisions.append(ep.collisions)
            self.next_seq = max(self.next_seq, ep.seq + 1)

    def fields(self) -> dict[str, float | None]:
        """The ``return_sum_recent_*`` and ``collisions_recent_mean`` fields of a ``metrics.jsonl`` record."""
        return {
            "return_sum_recent_mean": float(np.mean(self.returns)) if self.returns else None,
            "return_sum_recent_std": float(np.std(self.returns)) if self.returns else None,
            "collisions_recent_mean": float(np.mean(self.collisions)) if self.collisions else None,
        }


class Progress:
    """Polls the env and the learners, writes ``metrics.jsonl`` and prints a progress line.

    Args:
        mesh: The running mesh.
        config: The run's config.
        metrics_path: ``metrics.jsonl``, appended to.
        out: Console.
        team_log: Also writes every record there as TensorBoard scalars (None: not).
    """

    def __init__(
        self, mesh: Mesh, config: Config, metrics_path: Path, out: TextIO, team_log: TeamLog | None = None
    ) -> None:
        self.mesh = mesh
        self.team_log = team_log
        self.config = config
        self.out = out
        self.tty = out.isatty()
        self.metrics = open(metrics_path, "a")  # noqa: SIM115 (closed in close())
        self.env_channel, self.env = mesh.env_stub()
        self.learners = {
            p.agent_id: learner_pb2_grpc.LearnerServiceStub(mesh.channel(f"{config.runtime.host}:{p.port}"))
            for p in mesh.procs
            if p.role == "learner"
        }
        self.window = EpisodeWindow()
        self.start = time.monotonic()
        self.last_print = 0.0
        self.env_steps = 0
        self.episodes = 0
        self.tick = 0
        self.default_actions: dict[str, int] = {}
        self._env_raw = (0, 0)
        self._env_offset = (0, 0)

    def _follow_env_restart(self, stats: env_pb2.EnvStats) -> None:
        """Keep env steps and episodes cumulative when a restarted env service counts from 0 again."""
        raw_steps, raw_episodes = self._env_raw
        if stats.env_steps < raw_steps:
            self._env_offset = (self._env_offset[0] + raw_steps, self._env_offset[1] + raw_episodes)
            self.window.next_seq = 0
        self._env_raw = (stats.env_steps, stats.episodes)
        self.env_steps = self._env_offset[0] + stats.env_steps
        self.episodes = self._env_offset[1] + stats.episodes
        self.tick = stats.tick

    def poll(self) -> dict[str, object]:
        """One progress tick; returns the metrics record."""
        timeout = self.config.runtime.rpc_timeout_s
        stats = self.env.GetStats(
            env_pb2.StatsRequest(episodes_from=self.window.next_seq, max_episodes=10_000), timeout=timeout
        )
        self._follow_env_restart(stats)
        self.window.add(stats.recent)
        learners = []
        for agent_id, stub in sorted(self.learners.items()):
            try:
                st = stub.GetStatus(learner_pb2.LearnerStatusRequest(), timeout=timeout)
            except grpc.RpcError:
                learners.append({"agent_id": agent_id, "version": None})
                continue
            learners.append(
                {
                    "agent_id": agent_id,
                    "version": st.version,
                    "samples_trained": st.samples_trained,
                    "fragments_received": st.fragments_received,
                    "fragments_dropped": dict(st.fragments_dropped),
                    **{k: round(v, 6) for k, v in st.last_losses.items()},
                }
            )
        rec: dict[str, object] = {
            "wall_seconds": round(time.monotonic() - self.start, 3),
            "env_steps": self.env_steps,
            "steps_per_second": round(stats.steps_per_second, 1),
            "episodes": self.episodes,
            **self.window.fields(),
            "default_actions": self._default_actions(stats),
            "learners": learners,
        }
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()
        if self.team_log is not None:
            self.team_log.record(rec)
        self._print(rec)
        return rec

    def _default_actions(self, stats: env_pb2.EnvStats) -> dict[str, int]:
        self.default_actions = {str(k): int(v) for k, v in stats.default_actions.items()}
        return self.default_actions

    def _print(self, rec: dict[str, object]) -> None:
        line = progress_line(rec, len(self.window.returns), self.config)
        if self.tty:
            self.out.write("\r\033[K" + line)
            self.out.flush()
        elif time.monotonic() - self.last_print >= 10.0:
            self.out.write(line + "\n")
            self.out.flush()
            self.last_print = time.monotonic()

    def close(self) -> None:
        """Finish the progress line and release channels."""
        if self.tty:
            self.out.write("\n")
        self.metrics.close()
        self.env_channel.close()

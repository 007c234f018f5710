"""``marlmesh train``: run the mesh until the env-step budget, showing progress, then evaluate and summarise.

Run directory layout::

    RUN_DIR/config.yaml      resolved config (every key)
    RUN_DIR/metrics.jsonl    one line per progress tick (env steps, throughput, returns, learner versions)
    RUN_DIR/logs/            one log per process
    RUN_DIR/checkpoints/     agent-<i>/ckpt-<version>.pt (atomic, checksummed)
    RUN_DIR/plots/           learning curves (``marlmesh plot``)
    RUN_DIR/summary.json     the contract fields (docs/runs.md)
"""

from __future__ import annotations

import collections
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import grpc
import numpy as np

from marlmesh import plugins
from marlmesh.config import Config, dump_config
from marlmesh.evaluate import evaluate_run, format_eval_table
from marlmesh.faults import FaultSchedule, check_supported
from marlmesh.lockstep import LockstepEnd, reproducibility, uses_lockstep
from marlmesh.mesh import Mesh, MeshError
from marlmesh.stop_signals import StopSignals
from marlmesh.supervise import Supervisor
from marlmesh.v1 import env_pb2, learner_pb2, learner_pb2_grpc


def check_plugins(config: Config) -> None:
    """Resolve every plugin name in the config before anything starts.

    Raises:
        plugins.PluginError: Naming the unknown plugin and listing the installed ones.
        ConfigError: If the channel rejects its settings or the algorithm needs another channel.
    """
    plugins.load("envs", config.env.name)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    algo = plugins.load("algos", config.algo.name)
    plugins.check_channel(config.algo.name, getattr(algo, "required_channel", None), channel.name)
    plugins.load("links", config.bus.links.resolved_model())


def default_run_dir(config: Config) -> Path:
    """``runs/<time>-<env>-<algo>-<channel>``."""
    env = config.env.name.replace(":", "_").replace("/", "_")
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{env}-{config.algo.name}-{config.channel.name}"


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


class Progress:
    """Polls the env and the learners, writes ``metrics.jsonl`` and prints a progress line."""

    def __init__(self, mesh: Mesh, config: Config, metrics_path: Path, out: TextIO) -> None:
        self.mesh = mesh
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
        self.next_seq = 0
        self.returns: collections.deque[float] = collections.deque(maxlen=100)
        self.collisions: collections.deque[float] = collections.deque(maxlen=100)
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
            self.next_seq = 0
        self._env_raw = (stats.env_steps, stats.episodes)
        self.env_steps = self._env_offset[0] + stats.env_steps
        self.episodes = self._env_offset[1] + stats.episodes
        self.tick = stats.tick

    def poll(self) -> dict[str, object]:
        """One progress tick; returns the metrics record."""
        timeout = self.config.runtime.rpc_timeout_s
        stats = self.env.GetStats(
            env_pb2.StatsRequest(episodes_from=self.next_seq, max_episodes=10_000), timeout=timeout
        )
        self._follow_env_restart(stats)
        for ep in stats.recent:
            self.returns.append(ep.return_sum)
            if not np.isnan(ep.collisions):
                self.collisions.append(ep.collisions)
            self.next_seq = max(self.next_seq, ep.seq + 1)
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
            "return_sum_recent_mean": float(np.mean(self.returns)) if self.returns else None,
            "return_sum_recent_std": float(np.std(self.returns)) if self.returns else None,
            "collisions_recent_mean": float(np.mean(self.collisions)) if self.collisions else None,
            "default_actions": self._default_actions(stats),
            "learners": learners,
        }
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()
        self._print(rec)
        return rec

    def _default_actions(self, stats: env_pb2.EnvStats) -> dict[str, int]:
        self.default_actions = {str(k): int(v) for k, v in stats.default_actions.items()}
        return self.default_actions

    def _print(self, rec: dict[str, object]) -> None:
        line = progress_line(rec, len(self.returns), self.config)
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


def _read_stats(run_dir: Path, tag: str) -> list[dict[str, object]]:
    out = []
    for path in sorted((run_dir / "stats").glob(f"{tag}-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def bus_summary(agent_stats: list[dict[str, object]]) -> dict[str, object]:
    """Sum the agents' bus counters into the ``bus.*`` summary fields.

    ``messages_sent``/``bytes_sent`` count what senders offered to links (one message per env copy and
    receiver), ``messages_received`` what became visible, ``dropped`` maps cause -> count (link causes are
    counted by senders, receive-side ones by receivers), latencies are medians over agents (bus clock).
    """
    sent = bytes_sent = received = bytes_received = 0
    dropped: collections.Counter[str] = collections.Counter()
    p50s: dict[str, list[float]] = collections.defaultdict(list)
    for st in agent_stats:
        bus = st.get("bus") or {}
        sent += int(bus.get("messages_sent", 0))
        bytes_sent += int(bus.get("bytes_sent", 0))
        received += int(bus.get("messages_received", 0))
        bytes_received += int(bus.get("bytes_received", 0))
        dropped.update(bus.get("dropped", {}))
        for key in ("delivery_latency_p50_seconds", "transport_latency_p50_seconds", "age_of_information_p50_seconds"):
            if bus.get(key) is not None:
                p50s[key].append(float(bus[key]))
    out: dict[str, object] = {
        "messages_sent": sent,
        "bytes_sent": bytes_sent,
        "messages_received": received,
        "bytes_received": bytes_received,
        "dropped": dict(sorted(dropped.items())),
        "delivery_latency_p50_seconds": None,
        "transport_latency_p50_seconds": None,
        "age_of_information_p50_seconds": None,
    }
    out.update({k: float(np.median(v)) for k, v in p50s.items()})
    return out


def gossip_summary(learner_stats: list[dict[str, object]]) -> dict[str, object]:
    """``bus.gossip``: the learners' gossip traffic summed (empty when no learner gossiped).

    Holds ``messages_sent``, ``bytes_sent``, ``messages_received``, ``dropped`` (cause -> count, from the same link
    emulation as the agents' messages), ``mixings``, ``params_mixed`` and ``params_missing``.
    """
    gossips = [st["gossip"] for st in learner_stats if isinstance(st.get("gossip"), dict)]
    if not gossips:
        return {}
    totals = bus_summary([{"bus": g.get("bus") or {}} for g in gossips])
    out = {k: totals[k] for k in ("messages_sent", "bytes_sent", "messages_received", "bytes_received", "dropped")}
    for key in ("mixings", "params_mixed", "params_missing"):
        out[key] = sum(int(g.get(key, 0)) for g in gossips)
    return {"gossip": out}


def merge_bus_trace(config: Config, run_dir: Path, agent_stats: list[dict[str, object]]) -> dict[str, object] | None:
    """Merge the agents' fate records into ``RUN_DIR/bus_trace.bin``; returns the ``bus.trace`` summary."""
    from comm_bus.trace import merge_traces

    parts = sorted((run_dir / "traces").glob("train-agent-*.rec"))
    if not parts:
        return None
    out = run_dir / "bus_trace.bin"
    meta = {
        "seed": config.seed,
        "clock": config.bus.clock,
        "link_model": config.bus.links.resolved_model(),
        # sim rounds that went on without a peer's frame after the wall-clock safety deadline (a dead or
        # stalled peer): nonzero means this trace depended on wall time and a rerun may differ
        "round_timeouts": sum(
            int((st.get("bus") or {}).get("dropped", {}).get("round_timeout", 0)) for st in agent_stats
        ),
    }
    records = merge_traces(parts, out, meta)
    truncated = any(bool((st.get("bus_trace") or {}).get("truncated")) for st in agent_stats)
    for part in parts:
        part.unlink()
    return {"path": str(out), "records": records, "truncated": truncated}


def _supervised_tick(progress: Progress, supervisor: Supervisor, faults: FaultSchedule) -> None:
    """One launcher tick under supervision: restart what crashed, poll progress, fire due faults.

    Raises:
        MeshError: If a process crashed more often than ``runtime.restart.max_restarts``.
    """
    supervisor.check()
    if not supervisor.is_up(supervisor.mesh.find("env")):
        return
    try:
        progress.poll()
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
        return  # the env just went away; the supervisor sees it on the next tick
    supervisor.observe(progress.env_steps, progress.tick)
    faults.step(progress.env_steps)


def train(
    config: Config,
    run_dir: Path,
    out: TextIO = sys.stdout,
    evaluate: bool = True,
    on_tick: Callable[[Mesh, Progress], bool] | None = None,
) -> dict[str, object]:
    """Train, evaluate and write ``summary.json``; returns the summary.

    Crashed processes are restarted per ``runtime.restart``; the ``faults`` schedule is applied.
    SIGINT/SIGTERM stop the mesh cleanly (no process left) and still write a summary (without evaluation).

    Args:
        config: The resolved config.
        run_dir: Run directory.
        out: Console.
        evaluate: Evaluate the saved policies after training.
        on_tick: Called after every progress tick with the mesh and the progress (benchmarks sample the
            processes there); returning True ends training like a reached budget.

    Raises:
        MeshError: If a process fails for good.
        ConfigError: If the fault schedule uses a kind that is not implemented.
    """
    if getattr(plugins.load("algos", config.algo.name), "centralized", False):  # the CENTRALIZED REFERENCE
        from marlmesh.centralized.run import train_central

        return train_central(config, run_dir, out, evaluate)
    check_supported(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plots").mkdir(exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(dump_config(config))
    stop = StopSignals()
    interrupted = stop.event
    out.write(f"marlmesh train: run directory {run_dir}\n")
    out.flush()
    start = time.monotonic()
    mesh = Mesh(config, config_path, run_dir, "train", "train", config.seed, config.env.num_envs)
    summary: dict[str, object] = {"run_dir": str(run_dir), "launcher": "mesh", "status": "running"}
    progress = None
    supervisor = faults = None
    lockstep_end: LockstepEnd | None = None
    reached_end = False
    failure: MeshError | None = None
    try:
        mesh.start()
        out.write(
            f"started env + {mesh.num_agents} agents + {mesh.num_agents} learners "
            f"(pids {', '.join(str(p['pid']) for p in mesh.processes())}); logs in {run_dir / 'logs'}\n"
        )
        out.flush()
        progress = Progress(mesh, config, run_dir / "metrics.jsonl", out)
        supervisor = Supervisor(mesh, config.runtime.restart, config.runtime.startup_timeout_s, out)
        faults = FaultSchedule(config, mesh, supervisor)
        if uses_lockstep(config):  # the agents stop at the exact final tick; the run ends when all did
            agents = [f"{config.runtime.host}:{p.port}" for p in mesh.procs if p.role == "agent"]
            lockstep_end = LockstepEnd(mesh.channel, agents, config.runtime.rpc_timeout_s)
        budget = config.train.max_wall_seconds
        while not interrupted.is_set():
            interrupted.wait(config.runtime.progress_interval_s)
            _supervised_tick(progress, supervisor, faults)
            if on_tick is not None and on_tick(mesh, progress):
                break
            if lockstep_end is not None:
                if lockstep_end.reached():
                    progress.poll()  # the env steps of the final tick
                    reached_end = True
                    break
            elif progress.env_steps >= config.train.total_env_steps:
                reached_end = True
                break
            if budget is not None and time.monotonic() - start >= budget:
                out.write(f"\nwall-clock budget of {budget:.0f}s reached\n")
                break
    except MeshError as exc:
        failure = exc
    finally:
        if progress is not None:
            progress.close()
        if lockstep_end is not None:
            lockstep_end.close()
        processes = mesh.processes()
        codes = mesh.stop()
        stop.restore()
    train_seconds = time.monotonic() - start
    agent_stats = [s for s in _read_stats(run_dir, "train") if s.get("role") == "agent"]
    learner_stats = [s for s in _read_stats(run_dir, "train") if s.get("role") == "learner"]
    bus = {
        **bus_summary(agent_stats),
        "trace": merge_bus_trace(config, run_dir, agent_stats),
        **gossip_summary(learner_stats),
    }
    restarts = _restarts(processes, supervisor)
    summary.update(
        {
            "status": "interrupted" if interrupted.is_set() else "trained",
            "signal": stop.signal_name,
            "env_steps": progress.env_steps if progress else 0,
            "episodes": progress.episodes if progress else 0,
            "wall_seconds": round(train_seconds, 2),
            "train_return_sum_recent_mean": float(np.mean(progress.returns)) if progress and progress.returns else None,
            "processes": processes,
            "exit_codes": codes,
            "ports": mesh.bound_ports(),
            "restarts": restarts,
            "restart_events": [e.as_dict() for e in supervisor.events] if supervisor else [],
            "replaced_processes": mesh.replaced_processes(),
            "faults": faults.summary() if faults else [],
            "bus": bus,
            "reproducibility": reproducibility(
                config,
                round_timeouts=sum(  # the agents' rounds and the learners' gossip rounds
                    int(dict(part.get("dropped") or {}).get("round_timeout", 0))
                    for part in (bus, bus.get("gossip", {}))
                ),
                default_actions=sum(progress.default_actions.values()) if progress else 0,
                fragments_lost=sum(sum(dict(a.get("fragments_dropped") or {}).values()) for a in agent_stats),
                restarts=sum(restarts.values()),
                stopped_early=not reached_end,
            ),
            "agents": agent_stats,
            "learners": learner_stats,
            "config": config_summary(config),
        }
    )
    if failure is not None:  # still leave a summary behind, then fail
        summary.update({"status": "failed", "error": str(failure).splitlines()[0]})
        write_summary(run_dir, summary)
        raise failure
    if evaluate and not interrupted.is_set():
        evaluate_into(summary, config, config_path, run_dir, out)
    write_summary(run_dir, summary)
    try:
        from marlmesh.plotting import plot_run

        plot_run(run_dir)
    except ImportError:  # matplotlib is in the train extra
        pass
    out.write(f"summary: {run_dir / 'summary.json'}\n")
    out.flush()
    return summary


def _restarts(processes: list[dict[str, object]], supervisor: Supervisor | None) -> dict[str, int]:
    """``restarts`` of the summary: process name (``env``, ``agent-0``, ...) -> restart count."""
    if supervisor is not None:
        return supervisor.restart_counts()
    return {str(p["role"]) if int(p["agent_id"]) < 0 else f"{p['role']}-{p['agent_id']}": 0 for p in processes}


def config_summary(config: Config) -> dict[str, object]:
    """``config`` of the summary: env, algo, channel, B, seed and weight sync."""
    return {
        "env": config.env.name,
        "algo": config.algo.name,
        "channel": config.channel.name,
        "num_envs": config.env.num_envs,
        "seed": config.seed,
        "weight_sync": config.train.weight_sync,
    }


def evaluate_into(
    summary: dict[str, object], config: Config, config_path: Path, run_dir: Path, out: TextIO, note: str = ""
) -> None:
    """Evaluate the run's saved policies as processes into ``summary["eval"]`` and mark the run ``done``.

    Prints the evaluation table on ``out``.

    Raises:
        MeshError: If an evaluation process fails.
    """
    out.write(f"evaluating{note}...\n")
    out.flush()
    result = evaluate_run(
        config,
        config_path,
        run_dir,
        episodes=config.eval.episodes,
        num_envs=config.eval.num_envs,
        seed=config.seed + config.eval.seed_offset,
    )
    summary["eval"] = result
    summary["status"] = "done"
    out.write(format_eval_table(result) + "\n")


def write_summary(run_dir: Path, summary: dict[str, object]) -> None:
    """Write ``RUN_DIR/summary.json`` atomically."""
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    tmp.replace(run_dir / "summary.json")


__all__ = ["MeshError", "check_plugins", "default_run_dir", "train"]

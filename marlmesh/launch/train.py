"""``marlmesh train``: run the mesh until the env-step budget, showing progress, then evaluate and summarise.

Run directory layout::

    RUN_DIR/config.yaml      resolved config (every key)
    RUN_DIR/metrics.jsonl    one line per progress tick (env steps, throughput, returns, learner versions)
    RUN_DIR/logs/            one log per process
    RUN_DIR/checkpoints/     agent-<i>/ckpt-<version>.pt (atomic, checksummed)
    RUN_DIR/plots/           learning curves (``marlmesh plot``)
    RUN_DIR/tensorboard/     learner-<i>/ and team/ event files (``train.tensorboard``; marlmesh.tensorboard)
    RUN_DIR/summary.json     the contract fields (docs/runs.md)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
import numpy as np

from marlmesh import plugins
from marlmesh.config import Config
from marlmesh.launch.faults import FaultSchedule, check_supported
from marlmesh.launch.lockstep_end import LockstepEnd
from marlmesh.launch.mesh import Mesh, MeshError
from marlmesh.launch.progress import Progress
from marlmesh.launch.summary import (
    bus_summary,
    config_summary,
    evaluate_into,
    gossip_summary,
    merge_bus_trace,
    plot_curves,
    read_stats,
    rejected_summary,
    write_run_dir,
    write_summary,
)
from marlmesh.launch.supervise import Supervisor
from marlmesh.lockstep import reproducibility, uses_lockstep
from marlmesh.stop_signals import StopSignals
from marlmesh.tensorboard import TeamLog, team_log


def check_plugins(config: Config) -> None:
    """Resolve every plugin name in the config before anything starts.

    Raises:
        plugins.PluginError: Naming the unknown plugin and listing the installed ones.
        ConfigError: If the channel rejects its settings or the algorithm needs another channel.
    """
    plugins.load("envs", config.env.name)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    algo = plugins.load("algos", config.algo.name)
    plugins.check_channel(config.algo.name, algo.required_channel, channel.name)
    plugins.load("links", config.bus.links.resolved_model())


def default_run_dir(config: Config) -> Path:
    """``runs/<time>-<env>-<algo>-<channel>``."""
    env = config.env.name.replace(":", "_").replace("/", "_")
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{env}-{config.algo.name}-{config.channel.name}"


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
    if plugins.load("algos", config.algo.name).centralized:  # the CENTRALIZED REFERENCE
        from marlmesh.launch.centralized import train_central

        return train_central(config, run_dir, out, evaluate)
    check_supported(config)
    config_path = write_run_dir(config, run_dir)
    stop = StopSignals()
    out.write(f"marlmesh train: run directory {run_dir}\n")
    out.flush()
    start = time.monotonic()
    run = _MeshRun(Mesh(config, config_path, run_dir, "train", "train", config.seed, config.env.num_envs))
    team = team_log(config.train.tensorboard, run_dir)
    try:
        summary = _train_and_evaluate(run, config, config_path, run_dir, stop, start, out, evaluate, on_tick, team)
    finally:
        if team is not None:
            team.close()
    write_summary(run_dir, summary)
    plot_curves(run_dir)
    out.write(f"summary: {run_dir / 'summary.json'}\n")
    out.flush()
    return summary


def _train_and_evaluate(
    run: _MeshRun,
    config: Config,
    config_path: Path,
    run_dir: Path,
    stop: StopSignals,
    start: float,
    out: TextIO,
    evaluate: bool,
    on_tick: Callable[[Mesh, Progress], bool] | None,
    team: TeamLog | None,
) -> dict[str, object]:
    """Run the mesh to its end, stop it and evaluate; returns the summary (not yet written).

    Raises:
        MeshError: If a process fails for good (a summary with ``status: failed`` is written first).
    """
    failure: MeshError | None = None
    try:
        _start(run, config, run_dir, out, team)
        _run_until_done(run, config, stop.event, start, out, on_tick)
    except MeshError as exc:
        failure = exc
    finally:
        processes, codes = _stop(run)
        stop.restore()
    summary = _summarize(config, run_dir, run, stop, processes, codes, time.monotonic() - start)
    if failure is not None:  # still leave a summary behind, then fail
        summary.update({"status": "failed", "error": str(failure).splitlines()[0]})
        write_summary(run_dir, summary)
        raise failure
    if evaluate and not stop.event.is_set():
        evaluate_into(summary, config, config_path, run_dir, out)
        if team is not None:
            team.evaluation(summary["eval"], int(summary["env_steps"]))
    return summary


@dataclass
class _MeshRun:
    """The mesh of one training run and what watches it, filled in as it starts (any part may be missing)."""

    mesh: Mesh
    progress: Progress | None = None
    supervisor: Supervisor | None = None
    faults: FaultSchedule | None = None
    lockstep_end: LockstepEnd | None = None
    reached_end: bool = False
    """The run got to its end (env-step budget or lockstep's final tick), not stopped early."""


def _start(run: _MeshRun, config: Config, run_dir: Path, out: TextIO, team: TeamLog | None) -> None:
    """Start every process, then the progress poller, the supervisor, the fault schedule and lockstep's end check.

    ``team`` (None: none) receives every progress record as TensorBoard scalars.

    Raises:
        MeshError: If a process does not come up.
    """
    mesh = run.mesh
    mesh.start()
    out.write(
        f"started env + {mesh.num_agents} agents + {mesh.num_agents} learners "
        f"(pids {', '.join(str(p['pid']) for p in mesh.processes())}); logs in {run_dir / 'logs'}\n"
    )
    out.flush()
    run.progress = Progress(mesh, config, run_dir / "metrics.jsonl", out, team)
    run.supervisor = Supervisor(mesh, config.runtime.restart, config.runtime.startup_timeout_s, out)
    run.faults = FaultSchedule(config, mesh, run.supervisor)
    if uses_lockstep(config):  # the agents stop at the exact final tick; the run ends when all did
        agents = [f"{config.runtime.host}:{p.port}" for p in mesh.procs if p.role == "agent"]
        run.lockstep_end = LockstepEnd(mesh.channel, agents, config.runtime.rpc_timeout_s)


def _run_until_done(
    run: _MeshRun,
    config: Config,
    interrupted: threading.Event,
    start: float,
    out: TextIO,
    on_tick: Callable[[Mesh, Progress], bool] | None,
) -> None:
    """Tick every ``runtime.progress_interval_s`` until the end, ``on_tick``, the wall-clock budget or a signal.

    Raises:
        MeshError: If a process crashed more often than ``runtime.restart.max_restarts``.
    """
    progress, supervisor, faults = run.progress, run.supervisor, run.faults
    assert progress is not None and supervisor is not None and faults is not None, "start the run first"
    budget = config.train.max_wall_seconds
    while not interrupted.is_set():
        interrupted.wait(config.runtime.progress_interval_s)
        _supervised_tick(progress, supervisor, faults)
        if on_tick is not None and on_tick(run.mesh, progress):
            break
        if run.lockstep_end is not None:
            if run.lockstep_end.reached():
                progress.poll()  # the env steps of the final tick
                run.reached_end = True
                break
        elif progress.env_steps >= config.train.total_env_steps:
            run.reached_end = True
            break
        if budget is not None and time.monotonic() - start >= budget:
            out.write(f"\nwall-clock budget of {budget:.0f}s reached\n")
            break


def _stop(run: _MeshRun) -> tuple[list[dict[str, object]], dict[str, int | None]]:
    """Close the pollers and stop every process; returns the processes as they ran and their exit codes."""
    if run.progress is not None:
        run.progress.close()
    if run.lockstep_end is not None:
        run.lockstep_end.close()
    processes = run.mesh.processes()
    return processes, run.mesh.stop()


def _summarize(
    config: Config,
    run_dir: Path,
    run: _MeshRun,
    stop: StopSignals,
    processes: list[dict[str, object]],
    codes: dict[str, int | None],
    train_seconds: float,
) -> dict[str, object]:
    """The ``summary.json`` of a stopped mesh (before evaluation): counters, processes, bus and reproducibility."""
    progress, supervisor, faults = run.progress, run.supervisor, run.faults
    agent_stats = [s for s in read_stats(run_dir, "train") if s.get("role") == "agent"]
    learner_stats = [s for s in read_stats(run_dir, "train") if s.get("role") == "learner"]
    bus = {
        **bus_summary(agent_stats),
        "trace": merge_bus_trace(config, run_dir, agent_stats),
        **gossip_summary(learner_stats),
    }
    restarts = _restarts(processes, supervisor)
    return {
        "run_dir": str(run_dir),
        "launcher": "mesh",
        "status": "interrupted" if stop.event.is_set() else "trained",
        "signal": stop.signal_name,
        "env_steps": progress.env_steps if progress else 0,
        "episodes": progress.episodes if progress else 0,
        "wall_seconds": round(train_seconds, 2),
        "train_return_sum_recent_mean": float(np.mean(progress.window.returns))
        if progress and progress.window.returns
        else None,
        "processes": processes,
        "exit_codes": codes,
        "ports": run.mesh.bound_ports(),
        "restarts": restarts,
        "restart_events": [e.as_dict() for e in supervisor.events] if supervisor else [],
        "replaced_processes": run.mesh.replaced_processes(),
        "faults": faults.summary() if faults else [],
        "bus": bus,
        "reproducibility": reproducibility(
            config,
            round_timeouts=sum(  # the agents' rounds and the learners' gossip rounds
                int(dict(part.get("dropped") or {}).get("round_timeout", 0)) for part in (bus, bus.get("gossip", {}))
            ),
            default_actions=sum(progress.default_actions.values()) if progress else 0,
            fragments_lost=sum(sum(dict(a.get("fragments_dropped") or {}).values()) for a in agent_stats),
            restarts=sum(restarts.values()),
            stopped_early=not run.reached_end,
        ),
        "rejected": rejected_summary(agent_stats, learner_stats),
        "agents": agent_stats,
        "learners": learner_stats,
        "config": config_summary(config),
    }


def _restarts(processes: list[dict[str, object]], supervisor: Supervisor | None) -> dict[str, int]:
    """``restarts`` of the summary: process name (``env``, ``agent-0``, ...) -> restart count."""
    if supervisor is not None:
        return supervisor.restart_counts()
    return {str(p["role"]) if int(p["agent_id"]) < 0 else f"{p['role']}-{p['agent_id']}": 0 for p in processes}


__all__ = ["MeshError", "check_plugins", "default_run_dir", "train"]

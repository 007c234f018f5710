"""``marlmesh bench sim``: the same config trained by the mesh launcher and by the in-process launcher.

Two parts, in one run:

- **identity**: a short lockstep run of the config on each launcher (``--identity-steps`` env steps, sim clock,
  no wall-clock budget, no evaluation); ``trace_identical`` is True when both wrote the same
  ``bus_trace.bin`` byte for byte (or, for a silent channel, neither wrote one) and ``weights_identical`` when
  every agent's final policy parameters are byte-identical.
- **throughput**: the mesh is started in ``train`` mode and warmed up, the in-process team
  (:class:`marlmesh.launch.inprocess.InProcessTeam`) is built in this process; then ``--repeats`` cycles of a mesh
  window followed by an in-process window with the mesh paused (SIGSTOP), so that a noisy neighbour on the shared
  machine hits both alike. Both train in lockstep (every fragment trained before the agents act again), so they
  do the same work per env step. Reported (medians over the windows): ``mesh_steps_per_s``,
  ``inprocess_steps_per_s`` and ``ratio`` = in-process / mesh.

With ``--json`` the last line printed is one JSON object; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from marlmesh.bench import run_in_work_dir
from marlmesh.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/default.yaml"
PAUSE_DEADLINE_FACTOR = 3.0
"""The bench's env step deadline, bus round timeout and lockstep timeout, as a multiple of one pause."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench sim``."""
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per trial")
    p.add_argument("--warmup", type=float, default=3.0, help="stepping before the first window of each side")
    p.add_argument("--repeats", type=int, default=3, help="interleaved trials per side (medians reported)")
    p.add_argument(
        "--identity-steps", type=int, default=None, help="env steps of the identity runs (default: 2 fragments)"
    )
    p.add_argument("--run-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def bench_config(ns: argparse.Namespace) -> Config:
    """The config both launchers train: the given one in lockstep, with deadlines that outlast a pause.

    The mesh is stopped for about ``--seconds`` at a time, so ``env.step_deadline_ms``, ``bus.round_timeout_ms``
    and ``train.lockstep_timeout_s`` are raised to :data:`PAUSE_DEADLINE_FACTOR` times that (never lowered).

    Raises:
        ConfigError: If a flag, key or value is invalid.
    """
    if ns.repeats < 1 or ns.seconds <= 0 or ns.warmup < 0:
        raise ConfigError(
            f"--repeats must be >= 1, --seconds > 0 and --warmup >= 0, got {ns.repeats}, {ns.seconds}, {ns.warmup}"
        )
    base = load_config(ns.config, ns.set)
    pause_ms = math.ceil(PAUSE_DEADLINE_FACTOR * (ns.seconds + 1.0) * 1000)
    return load_config(
        ns.config,
        [
            *ns.set,
            "train.weight_sync=lockstep",
            f"env.step_deadline_ms={max(pause_ms, base.env.step_deadline_ms)}",
            f"bus.round_timeout_ms={max(pause_ms, base.bus.round_timeout_ms)}",
            f"train.lockstep_timeout_s={max(pause_ms / 1000, base.train.lockstep_timeout_s)}",
        ],
    )


def identity(config: Config, root: Path, env_steps: int) -> dict[str, Any]:
    """Train ``env_steps`` in lockstep on both launchers; whether their bus traces and weights are identical."""
    from marlmesh.checkpoint import load_latest
    from marlmesh.launch.inprocess import train_inprocess
    from marlmesh.launch.train import train

    short = config.model_copy(deep=True)
    short.train.total_env_steps = env_steps
    short.train.max_wall_seconds = None
    runs = {"mesh": root / "identity-mesh", "inprocess": root / "identity-inprocess"}
    summaries = {
        "mesh": train(short, runs["mesh"], out=io.StringIO(), evaluate=False),
        "inprocess": train_inprocess(short, runs["inprocess"], out=io.StringIO(), evaluate=False),
    }
    traces = [(d / "bus_trace.bin").read_bytes() if (d / "bus_trace.bin").is_file() else None for d in runs.values()]
    weights = True
    for agent in range(len(summaries["mesh"]["agents"])):
        found = [load_latest(d / "checkpoints" / f"agent-{agent}") for d in runs.values()]
        if any(f is None for f in found):
            weights = False
            continue
        a, b = (f[0]["policy"] for f in found)
        weights &= a.keys() == b.keys() and all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
    return {
        "identity_env_steps": [summaries[k]["env_steps"] for k in runs],
        "identity_exact": [summaries[k]["reproducibility"]["exact"] for k in runs],
        "trace_identical": traces[0] == traces[1],
        "trace_records": summaries["mesh"]["bus"]["trace"]["records"] if traces[0] is not None else 0,
        "weights_identical": weights,
    }


def _inprocess_window(team: Any, seconds: float) -> float:
    """Env steps/s of the in-process team over ``seconds``."""
    steps0, t0 = team.env_steps, time.monotonic()
    while time.monotonic() - t0 < seconds:
        team.step()
    return (team.env_steps - steps0) / (time.monotonic() - t0)


def throughput(ns: argparse.Namespace, config: Config, root: Path, log: Any) -> dict[str, Any]:
    """Interleaved windows of the training mesh and the in-process team (see the module docstring)."""
    from marlmesh.bench.meshrun import running_mesh
    from marlmesh.launch.inprocess import InProcessTeam

    long = config.model_copy(deep=True)
    long.train.total_env_steps = 10**12
    long.train.max_wall_seconds = None
    team = InProcessTeam(long, run_dir=None)
    mesh_rates, inprocess_rates = [], []
    try:
        _inprocess_window(team, ns.warmup)
        with running_mesh(long, root / "throughput-mesh", mode="train", warmup_s=ns.warmup) as running:
            for r in range(ns.repeats):
                mesh_rates.append(running.window(ns.seconds).steps_per_s)
                running.pause()
                try:
                    inprocess_rates.append(_inprocess_window(team, ns.seconds))
                finally:
                    running.resume()
                time.sleep(0.3)  # let the resumed mesh settle before its next window
                log(f"{r + 1}/{ns.repeats}: mesh {mesh_rates[-1]:.0f}/s, in process {inprocess_rates[-1]:.0f}/s")
    finally:
        team.close()
    mesh, inproc = statistics.median(mesh_rates), statistics.median(inprocess_rates)
    return {
        "mesh_steps_per_s": round(mesh, 1),
        "inprocess_steps_per_s": round(inproc, 1),
        "ratio": round(inproc / mesh, 3) if mesh > 0 else None,
        "windows": {"mesh": [round(x, 1) for x in mesh_rates], "inprocess": [round(x, 1) for x in inprocess_rates]},
    }


def run(ns: argparse.Namespace, config: Config, root: Path, log: Any) -> dict[str, Any]:
    """Both parts; returns the result record."""
    from marlmesh.bench.meshrun import machine

    load_before = machine()["load_average"]
    steps = ns.identity_steps or 2 * config.env.num_envs * config.train.rollout_steps
    log(f"identity: {steps} env steps in lockstep on each launcher")
    same = identity(config, root, steps)
    log(f"identity: trace_identical={same['trace_identical']}, weights_identical={same['weights_identical']}")
    speed = throughput(ns, config, root, log)
    return {
        "benchmark": "sim",
        "config": str(ns.config),
        "overrides": list(ns.set),
        "env": config.env.name,
        "algo": config.algo.name,
        "channel": config.channel.name,
        "num_envs": config.env.num_envs,
        "link_model": config.bus.links.resolved_model(),
        "weight_sync": config.train.weight_sync,
        "seconds_per_window": ns.seconds,
        "repeats": ns.repeats,
        **speed,
        **same,
        "load_average_before": load_before,
        **machine(),
    }


def main(ns: argparse.Namespace) -> int:
    """``marlmesh bench sim``."""
    from marlmesh.launch.inprocess import check_inprocess

    try:
        config = bench_config(ns)
        check_inprocess(config)
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2

    keys = ("mesh_steps_per_s", "inprocess_steps_per_s", "ratio", "trace_identical", "weights_identical")
    return run_in_work_dir(ns, "marlmesh-sim-", run, config, keys)

"""``marlmesh bench e2e``: the distributed rollout against the same env and policies in one process.

Sides:

- **rollout**: env_service + N agent processes over the bus (channel ``dgat``, K = ``--hops``), acting with
  fixed version-0 policies (``eval`` mode: no learner);
- **single process**: the same B env copies and the same policies in this process
  (:class:`marlmesh.bench.single.SingleProcessRollout`);
- **learning**: the same mesh in ``train`` mode (one learner per agent, ``dgmappo``).

Each mesh is started once and warmed up; then ``--repeats`` cycles of a mesh window followed by a
single-process window with the mesh paused (SIGSTOP), so that a noisy neighbour on the shared machine hits
both sides alike. Reported (medians over the windows): ``distributed_steps_per_s``,
``single_process_steps_per_s``, ``ratio`` = rollout / single process, ``learning_steps_per_s`` and
``ratio_learning`` = learning / single process (the rollout-only single process: learning is extra work the
mesh spreads over its learner processes), CPU milliseconds per batched step (``cpu_ms_per_tick``: the single
process, every role of the mesh and the mesh's total) with ``cpu_ratio`` = single-process CPU / mesh CPU per
step (the mesh's overhead, independent of how much CPU the shared machine leaves it), and the load average.
On a machine loaded by other work the mesh, with several processes, can get more CPU than the single process;
``cpu_ratio`` shows what it costs.
With ``--json`` the last line printed is one JSON object; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from marlmesh.bench import run_in_work_dir
from marlmesh.config import Config, ConfigError, load_config

PAUSE_OVERHEAD_S = 0.5
"""Warm-up of the single process inside each pause of the mesh (seconds)."""
PAUSE_DEADLINE_FACTOR = 2.0
"""The bench's env step deadline and bus round timeout, as a multiple of the longest pause of its meshes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench e2e``."""
    p.add_argument("-c", "--config", default=None, help="base YAML config (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--agents", type=int, default=3, help="N agent processes (simple_spread N)")
    p.add_argument("--num-envs", type=int, default=64, help="B env copies per step")
    p.add_argument("--hops", type=int, default=2, help="dgat rounds K per env step")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per trial")
    p.add_argument("--warmup", type=float, default=3.0, help="stepping before each window")
    p.add_argument("--repeats", type=int, default=3, help="interleaved trials per side (medians reported)")
    p.add_argument("--no-learning", action="store_true", help="skip the trials with learners on")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the meshes' logs here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def bench_config(ns: argparse.Namespace) -> Config:
    """The config every side uses: the base config with the bench's N, B, channel and hops.

    The bench stops its meshes for about ``--seconds`` at a time (the single-process windows), so it raises
    ``env.step_deadline_ms`` and ``bus.round_timeout_ms`` to :data:`PAUSE_DEADLINE_FACTOR` times that pause
    (never lowers them) unless ``--set`` gives them; explicit values too close to the pause are an error.

    Raises:
        ConfigError: If a key or value is invalid.
    """
    for flag in ("agents", "num_envs", "hops", "repeats"):
        if getattr(ns, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(ns, flag)}")
    if ns.seconds <= 0 or ns.warmup < 0:
        raise ConfigError(f"--seconds must be > 0 and --warmup >= 0, got {ns.seconds} and {ns.warmup}")
    overrides = [
        f"env.kwargs.N={ns.agents}",
        f"env.num_envs={ns.num_envs}",
        "channel.name=dgat",
        f"channel.dgat.hops={ns.hops}",
        "algo.name=dgmappo",
        "eval.deterministic=false",
    ]
    config = load_config(ns.config, [*overrides, *ns.set])
    pause_s = ns.seconds + PAUSE_OVERHEAD_S  # the mesh is stopped during each single-process window
    user_keys = {item.split("=", 1)[0].strip() for item in ns.set}
    wanted_ms = math.ceil(PAUSE_DEADLINE_FACTOR * pause_s * 1000)
    raised = [
        f"{key}={max(wanted_ms, current)}"
        for key, current in (
            ("env.step_deadline_ms", config.env.step_deadline_ms),
            ("bus.round_timeout_ms", config.bus.round_timeout_ms),
        )
        if key not in user_keys
    ]
    if raised:
        config = load_config(ns.config, [*overrides, *raised, *ns.set])
    limit_s = min(config.env.step_deadline_ms, config.bus.round_timeout_ms) / 1000.0
    if pause_s > 0.8 * limit_s:
        raise ConfigError(
            f"--seconds {ns.seconds:g} pauses the mesh for about {pause_s:g}s, too close to env.step_deadline_ms / "
            f"bus.round_timeout_ms ({limit_s:g}s): use a shorter window or raise both with --set"
        )
    return config


def _interleave(
    running: Any, single: Any, ns: argparse.Namespace, side: str, log: Any
) -> tuple[list[float], list[float], list[dict[str, float]]]:
    """``ns.repeats`` cycles of (mesh window, mesh paused + single-process window): both rates and mesh CPU."""
    mesh_rates, single_rates, cpu = [], [], []
    for r in range(ns.repeats):
        got = running.window(ns.seconds)
        mesh_rates.append(got.steps_per_s)
        cpu.append({"mesh_total": round(sum(got.cpu_ms_per_tick.values()), 3), **got.cpu_by_role(per_tick=True)})
        running.pause()
        try:
            single_rates.append(single.measure(min(ns.warmup, PAUSE_OVERHEAD_S), ns.seconds))
        finally:
            running.resume()
        cpu[-1]["single_process"] = round(single.cpu_ms_per_tick, 3)
        time.sleep(0.3)  # let the resumed mesh settle before its next window
        log(f"{side} {r + 1}/{ns.repeats}: mesh {mesh_rates[-1]:.0f}/s, single process {single_rates[-1]:.0f}/s")
    return mesh_rates, single_rates, cpu


def run(ns: argparse.Namespace, config: Config, root: Path, log: Any) -> dict[str, Any]:
    """Every trial; returns the result record."""
    from marlmesh.bench.meshrun import initial_policies, machine, running_mesh
    from marlmesh.bench.single import SingleProcessRollout

    load_before = machine()["load_average"]
    policies = initial_policies(config, root / "rollout" / "checkpoints")
    single = SingleProcessRollout(config, policies)
    single.measure(ns.warmup, 0.1)
    rates: dict[str, list[float]] = {}
    cpu: dict[str, dict[str, float]] = {}
    sides = [("rollout", "eval")] + ([] if ns.no_learning else [("learning", "train")])
    for side, mode in sides:
        with running_mesh(config, root / side, mode=mode, warmup_s=ns.warmup) as running:
            mesh_rates, single_rates, cpu_ticks = _interleave(running, single, ns, side, log)
        rates[side] = mesh_rates
        rates[f"single_process_during_{side}"] = single_rates
        cpu[side] = {k: statistics.median(c[k] for c in cpu_ticks) for k in cpu_ticks[0]}
    single_all = rates["single_process_during_rollout"] + rates.get("single_process_during_learning", [])
    med = {k: statistics.median(v) for k, v in rates.items()}
    single_med = statistics.median(single_all)
    result: dict[str, Any] = {
        "benchmark": "e2e",
        "env": config.env.name,
        "num_agents": ns.agents,
        "num_envs": config.env.num_envs,
        "channel": config.channel.name,
        "hops": config.channel.dgat.hops,
        "seconds_per_window": ns.seconds,
        "repeats": ns.repeats,
        "distributed_steps_per_s": round(med["rollout"], 1),
        "single_process_steps_per_s": round(single_med, 1),
        "ratio": round(med["rollout"] / med["single_process_during_rollout"], 3),
        "windows": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "cpu_ms_per_tick": cpu,
        "cpu_ratio": round(cpu["rollout"]["single_process"] / cpu["rollout"]["mesh_total"], 3),
        "load_average_before": load_before,
        **machine(),
    }
    if "learning" in med:
        result["learning_steps_per_s"] = round(med["learning"], 1)
        result["ratio_learning"] = round(med["learning"] / med["single_process_during_learning"], 3)
    return result


def main(ns: argparse.Namespace) -> int:
    """``marlmesh bench e2e``."""
    try:
        config = bench_config(ns)
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2

    keys = (
        "distributed_steps_per_s",
        "single_process_steps_per_s",
        "ratio",
        "learning_steps_per_s",
        "ratio_learning",
        "load_average",
    )
    return run_in_work_dir(ns, "marlmesh-e2e-", run, config, keys)

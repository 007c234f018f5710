"""``marlmesh bench env``: env copy-steps per second of the vectorized simple_spread against mpe2, same run.

For each B of ``--num-envs`` (default 32, 256, 1024) it times three ways of stepping B copies of simple_spread
with the same random discrete actions, in this process:

- **mpe2**: ``mpe2.simple_spread_v3`` through :class:`env_service.copies.EnvCopies` (the env service's loop
  over PettingZoo copies: step, collisions, positions, autoreset) -- the baseline;
- **vector**: ``marlmesh.simple_spread`` through the same :class:`~env_service.copies.EnvCopies` (one vectorized
  call per step, the same arrays out);
- **vector_raw**: the vectorized env's own ``step_autoreset``, without the env service's wrapper.

The three alternate in rounds (so load on a shared machine hits all alike), each round stepping for
``--seconds``; the result holds, per B, the median copy-steps per wall-clock second of each and the ratios
against mpe2, and the same per CPU second of this process (``*_cpu_*``: what a busy machine's waiting for a core
does not blur).

    marlmesh bench env [--set KEY=VALUE]... [--num-envs 32,256,1024] [--seconds 1] [--rounds 3] [--json]
        [--out FILE]
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from marlmesh.config import ConfigError, EnvConfig, load_config

MPE2 = "mpe2.simple_spread_v3"
VECTOR = "marlmesh.simple_spread"
WAYS = ("mpe2", "vector", "vector_raw")
ACTION_SETS = 16
"""Pre-drawn joint actions cycled through (drawing them is not timed)."""


def add_arguments(p: Any) -> None:
    """Flags of ``marlmesh bench env``."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an env key for both envs (e.g. env.kwargs.N=5, env.obs_radius=0.8); env.name is set",
    )
    p.add_argument("--num-envs", default="32,256,1024", help="comma-separated B values")
    p.add_argument("--seconds", type=float, default=1.0, help="stepping time per round, way and B")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    p.add_argument("--seed", type=int, default=0, help="env and action seed")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")


def _env_config(name: str, sets: list[str], num_envs: int) -> EnvConfig:
    config = load_config(None, [*sets, f"env.name={name}", f"env.num_envs={num_envs}"])
    return config.env


def _steppers(sets: list[str], num_envs: int, seed: int) -> dict[str, Callable[[list[np.ndarray]], object]]:
    """One ``step(actions)`` callable per way, every env built and reset with ``seed``."""
    from env_service.copies import EnvCopies
    from marlmesh.envs import make_vector_env

    mpe2 = EnvCopies(_env_config(MPE2, sets, num_envs), seed, 0, num_envs)
    vector = EnvCopies(_env_config(VECTOR, sets, num_envs), seed, 0, num_envs)
    raw = make_vector_env(_env_config(VECTOR, sets, num_envs), num_envs)
    mpe2.reset()
    vector.reset()
    raw.reset(seed)
    return {"mpe2": mpe2.step, "vector": vector.step, "vector_raw": raw.step_autoreset}


def _copy_steps_per_second(
    step: Callable[[list[np.ndarray]], object], actions: list, b: int, seconds: float
) -> tuple[float, float]:
    """Copy-steps per wall-clock second and per CPU second of this process, stepping for ``seconds``."""
    steps = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step(actions[steps % len(actions)])
        steps += 1
    cpu_elapsed = max(time.process_time() - cpu, 1e-9)
    return steps * b / elapsed, steps * b / cpu_elapsed


def bench_env(sets: list[str], sizes: list[int], seconds: float, rounds: int, seed: int) -> dict[str, Any]:
    """Median copy-steps/s of each way at each B, and the ratios against mpe2.

    Raises:
        ConfigError: If a flag or the config is invalid.
    """
    from marlmesh.bench.meshrun import machine

    if rounds < 1 or seconds <= 0 or not sizes or min(sizes) < 1:
        raise ConfigError("--rounds >= 1, --seconds > 0 and --num-envs values >= 1 are needed")
    config = _env_config(VECTOR, sets, 1)
    num_agents = _num_agents(config)
    load_before = machine()["load_average"]
    rows: list[dict[str, Any]] = []
    for b in sizes:
        steppers = _steppers(sets, b, seed)
        rng = np.random.default_rng(seed)
        actions = [[rng.integers(0, 5, b) for _ in range(num_agents)] for _ in range(ACTION_SETS)]
        for step in steppers.values():  # warm-up: first calls allocate
            step(actions[0])
        wall: dict[str, list[float]] = {way: [] for way in WAYS}
        cpu: dict[str, list[float]] = {way: [] for way in WAYS}
        for r in range(rounds):
            for way in WAYS if r % 2 == 0 else WAYS[::-1]:
                per_wall, per_cpu = _copy_steps_per_second(steppers[way], actions, b, seconds)
                wall[way].append(per_wall)
                cpu[way].append(per_cpu)
            print(f"B={b} round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        med = {way: statistics.median(v) for way, v in wall.items()}
        med_cpu = {way: statistics.median(v) for way, v in cpu.items()}
        rows.append(
            {
                "num_envs": b,
                **{f"{way}_copy_steps_per_s": round(med[way], 1) for way in WAYS},
                "vector_ratio": round(med["vector"] / med["mpe2"], 2),
                "vector_raw_ratio": round(med["vector_raw"] / med["mpe2"], 2),
                **{f"{way}_copy_steps_per_cpu_s": round(med_cpu[way], 1) for way in WAYS},
                "vector_cpu_ratio": round(med_cpu["vector"] / med_cpu["mpe2"], 2),
                "vector_raw_cpu_ratio": round(med_cpu["vector_raw"] / med_cpu["mpe2"], 2),
            }
        )
    return {
        "bench": "env",
        "overrides": sets,
        "env_kwargs": config.kwargs,
        "num_agents": num_agents,
        "obs_radius": config.obs_radius,
        "time_feature": config.time_feature,
        "baseline": MPE2,
        "vectorized": VECTOR,
        "seconds": seconds,
        "rounds": rounds,
        "results": rows,
        "numpy": np.__version__,
        "python": platform.python_version(),
        **machine(),
        "load_average_before": load_before,
    }


def _num_agents(config: EnvConfig) -> int:
    from marlmesh.envs import make_env

    env = make_env(config)
    try:
        return len(env.possible_agents)
    finally:
        env.close()


def main(ns: Any) -> int:
    """``marlmesh bench env``."""
    try:
        sizes = [int(x) for x in str(ns.num_envs).split(",") if x.strip()]
    except ValueError:
        print(f"marlmesh: error: --num-envs must be comma-separated integers, got {ns.num_envs!r}", file=sys.stderr)
        return 2
    try:
        result = bench_env(ns.set, sizes, ns.seconds, ns.rounds, ns.seed)
    except (ConfigError, ValueError) as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    if not ns.json:
        print(f"{'B':>6} {'mpe2':>12} {'vector':>12} {'vector_raw':>12} {'ratio':>8} {'raw ratio':>9}  (copy-steps/s)")
        for row in result["results"]:
            print(
                f"{row['num_envs']:>6} {row['mpe2_copy_steps_per_s']:>12,.0f} {row['vector_copy_steps_per_s']:>12,.0f} "
                f"{row['vector_raw_copy_steps_per_s']:>12,.0f} {row['vector_ratio']:>7.1f}x "
                f"{row['vector_raw_ratio']:>8.1f}x"
            )
    from marlmesh.bench import emit

    return emit(ns, result)

"""``marlmesh bench scale``: env + N agent processes for N = 3, 8, 16, 32 with the meanfield and dgat channels.

Each point is a real mesh (simple_spread with N agents, ``eval`` mode: fixed version-0 policies, no learners)
measured over a short window after a warm-up: env steps/s, bus bytes sent per agent per step (and per env
copy), bus messages per agent per step, CPU per process (mean and max by role).

The links are a shared medium by default (``bus.links.shared_medium=true``: a round's message is one radio
transmission, its bytes counted once, however many peers hear it), the setting in which a mean-field message
costs the same per agent whatever the team size; ``--set bus.links.shared_medium=false`` counts every
point-to-point copy instead. With ``--json`` the last line printed is one JSON object; ``--out FILE`` also
writes it and ``--plot FILE`` (default: ``--out`` with ``.png``) draws steps/s and bytes vs N.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from marlmesh.bench import emit, work_dir
from marlmesh.config import Config, ConfigError, load_config
from marlmesh.launch.mesh import MeshError

CHANNELS = {"meanfield": "mfppo", "dgat": "dgmappo"}
"""Channel -> an algorithm that accepts it (the config must validate; eval mode does not train)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench scale``."""
    p.add_argument("-c", "--config", default=None, help="base YAML config (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--agents", default="3,8,16,32", help="comma-separated agent counts N")
    p.add_argument("--channels", default="meanfield,dgat", help=f"comma-separated, from {sorted(CHANNELS)}")
    p.add_argument("--num-envs", type=int, default=8, help="B env copies per step")
    p.add_argument("--seconds", type=float, default=8.0, help="measured window per point")
    p.add_argument("--warmup", type=float, default=3.0, help="stepping before each window")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the meshes' logs here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument("--plot", type=Path, default=None, help="PNG of steps/s and bytes vs N (default: --out as .png)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def parse_points(ns: argparse.Namespace) -> tuple[list[int], list[str]]:
    """The agent counts and channels asked for.

    Raises:
        ConfigError: If a count is not an integer >= 2 or a channel is not one of :data:`CHANNELS`.
    """
    try:
        counts = [int(x) for x in ns.agents.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--agents must be comma-separated integers, got {ns.agents!r}") from None
    if not counts or min(counts) < 2:
        raise ConfigError(f"--agents needs counts >= 2, got {ns.agents!r}")
    channels = [c.strip() for c in ns.channels.split(",") if c.strip()]
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels:
        raise ConfigError(f"--channels: unknown {unknown or ns.channels!r}; choose from {sorted(CHANNELS)}")
    if ns.num_envs < 1 or ns.seconds <= 0 or ns.warmup < 0:
        raise ConfigError("--num-envs must be >= 1, --seconds > 0 and --warmup >= 0")
    return counts, channels


def point_config(ns: argparse.Namespace, channel: str, agents: int) -> Config:
    """The config of one point.

    Raises:
        ConfigError: If a key or value is invalid.
    """
    return load_config(
        ns.config,
        [
            f"env.kwargs.N={agents}",
            f"env.num_envs={ns.num_envs}",
            f"channel.name={channel}",
            f"algo.name={CHANNELS[channel]}",
            "eval.deterministic=false",
            "bus.links.shared_medium=true",
            "runtime.startup_timeout_s=600",
            *ns.set,
        ],
    )


def run_point(ns: argparse.Namespace, config: Config, channel: str, agents: int, root: Path) -> dict[str, Any]:
    """Measure one (channel, N) point."""
    from marlmesh.bench.meshrun import initial_policies, measure_mesh

    run_dir = root / f"{channel}-n{agents}"
    shutil.rmtree(run_dir, ignore_errors=True)
    initial_policies(config, run_dir / "checkpoints")
    got = measure_mesh(config, run_dir, mode="eval", warmup_s=ns.warmup, seconds=ns.seconds)
    agent_cpu = [v for k, v in got.cpu_per_process.items() if k.startswith("agent")]
    return {
        "channel": channel,
        "num_agents": agents,
        "steps_per_s": round(got.steps_per_s, 1),
        "env_steps": got.env_steps,
        "seconds": round(got.seconds, 2),
        "bus_bytes_per_agent_step": got.bus_bytes_per_agent_step,
        "bus_bytes_per_agent_env_step": got.bus_bytes_per_agent_env_step,
        "bus_messages_per_agent_env_step": got.bus_messages_per_agent_env_step,
        "cpu_env": got.cpu_per_process.get("env"),
        "cpu_agent_mean": got.cpu_by_role().get("agent"),
        "cpu_agent_max": max(agent_cpu) if agent_cpu else None,
    }


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """Steps/s and bus bytes per agent per env step against N, one line per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for channel in sorted({p["channel"] for p in points}):
        mine = sorted((p for p in points if p["channel"] == channel), key=lambda p: p["num_agents"])
        n = [p["num_agents"] for p in mine]
        left.plot(n, [p["steps_per_s"] for p in mine], marker="o", label=channel)
        right.plot(n, [p["bus_bytes_per_agent_env_step"] or 0 for p in mine], marker="o", label=channel)
    left.set(xlabel="agent processes N", ylabel="env steps / s", title="throughput", xscale="log", yscale="log")
    right.set(xlabel="agent processes N", ylabel="bytes / agent / env step", title="bus bytes sent", xscale="log")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(sorted({p["num_agents"] for p in points}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(ns: argparse.Namespace) -> int:
    """``marlmesh bench scale``."""
    from marlmesh.bench.meshrun import machine

    try:
        counts, channels = parse_points(ns)
        configs = {(c, n): point_config(ns, c, n) for c in channels for n in counts}
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    load_before = machine()["load_average"]
    points = []
    try:
        with work_dir(ns.run_dir, "marlmesh-scale-") as root:
            for (channel, agents), config in configs.items():
                points.append(p := run_point(ns, config, channel, agents, root))
                print(
                    f"{channel:>10} N={agents:<3} {p['steps_per_s']:>9.1f} steps/s  "
                    f"{p['bus_bytes_per_agent_env_step']} B/agent/env step  agent CPU {p['cpu_agent_mean']}",
                    file=sys.stderr if ns.json else sys.stdout,
                    flush=True,
                )
    except MeshError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {
        "benchmark": "scale",
        "env": configs[(channels[0], counts[0])].env.name,
        "num_envs": ns.num_envs,
        "seconds_per_point": ns.seconds,
        "warmup_s": ns.warmup,
        "shared_medium": configs[(channels[0], counts[0])].bus.links.shared_medium,
        "points": points,
        "load_average_before": load_before,
        **machine(),
    }
    for channel in channels:
        sizes = [p["bus_bytes_per_agent_env_step"] for p in points if p["channel"] == channel]
        if sizes and all(sizes):
            result[f"{channel}_bytes_max_over_min"] = round(max(sizes) / min(sizes), 4)
    plot_path = ns.plot or (ns.out.with_suffix(".png") if ns.out is not None else None)
    if plot_path is not None:
        plot(points, plot_path)
        result["plot"] = str(plot_path)
    return emit(ns, result)

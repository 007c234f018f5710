"""``marlmesh bench scale``: env + N agent processes for N = 3, 8, 16, 32 with the meanfield and dgat channels.

Each point is a real mesh (simple_spread with N agents) in one of two modes: ``eval`` (agents only, acting with
fixed version-0 policies exported to ONNX: the onnx runtime, no learners, no torch in any process but the
bench's) and ``train`` (N learners too, the agents acting with the default ``train.agent_runtime``). Each is
measured over a short window after a warm-up: env steps/s, bus bytes sent per agent per step (and per env
copy), bus messages per agent per step, CPU per process (mean and max by role), and per role the peak resident
memory (``rss_mb``) and the start time (``start_s``: spawn to port file written, waits for the env and, for a
training agent, its learner included; ``start_cpu_s``: CPU spent meanwhile) that every process reports.

Before a point starts, its memory need is checked against ``MemAvailable`` (``--memory-fraction`` of it): the
private (anonymous) memory per process of each role, the largest measured so far (:data:`RSS_GUESS_MB` until
measured), times the processes, plus the shared library pages once; a point that would not fit is recorded as
skipped with the reason instead of being started.

The links are a shared medium by default (``bus.links.shared_medium=true``: a round's message is one radio
transmission, its bytes counted once, however many peers hear it), the setting in which a mean-field message
costs the same per agent whatever the team size; ``--set bus.links.shared_medium=false`` counts every
point-to-point copy instead. With ``--json`` the last line printed is one JSON object; ``--out FILE`` also
writes it and ``--plot FILE`` (default: ``--out`` with ``.png``) draws steps/s and bytes vs N.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import grpc

from marlmesh.bench import emit, work_dir
from marlmesh.config import Config, ConfigError, load_config
from marlmesh.launch.mesh import MeshError

CHANNELS = {"meanfield": "mfppo", "dgat": "dgmappo"}
"""Channel -> an algorithm that accepts it (the config must validate; eval mode does not train)."""
MODES = ("eval", "train")
ROLES = ("env", "agent", "learner")
RSS_GUESS_MB = {"env": 150.0, "agent": 130.0, "learner": 500.0}
"""Memory per process assumed for the memory check until a point has measured the role's private memory."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench scale``."""
    p.add_argument("-c", "--config", default=None, help="base YAML config (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--agents", default="3,8,16,32", help="comma-separated agent counts N")
    p.add_argument("--channels", default="meanfield,dgat", help=f"comma-separated, from {sorted(CHANNELS)}")
    p.add_argument("--modes", default="eval,train", help="comma-separated: eval (agents only), train (learners too)")
    p.add_argument(
        "--memory-fraction",
        type=float,
        default=0.7,
        help="skip a point whose estimated memory exceeds this fraction of MemAvailable",
    )
    p.add_argument("--num-envs", type=int, default=8, help="B env copies per step")
    p.add_argument("--seconds", type=float, default=8.0, help="measured window per point")
    p.add_argument("--warmup", type=float, default=3.0, help="stepping before each window")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the meshes' logs here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="PNG of steps/s, bytes, peak RSS and agent start vs N (default: --out as .png)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def parse_points(ns: argparse.Namespace) -> tuple[list[int], list[str], list[str]]:
    """The agent counts, channels and modes asked for.

    Raises:
        ConfigError: If a count is not an integer >= 2, a channel is not one of :data:`CHANNELS` or a mode not
            one of :data:`MODES`.
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
    modes = [m.strip() for m in ns.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise ConfigError(f"--modes: got {ns.modes!r}; choose from {', '.join(MODES)}")
    if ns.num_envs < 1 or ns.seconds <= 0 or ns.warmup < 0 or not 0 < ns.memory_fraction <= 1:
        raise ConfigError("--num-envs must be >= 1, --seconds > 0, --warmup >= 0 and 0 < --memory-fraction <= 1")
    return counts, channels, modes


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


def mem_available_mb() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` in MiB (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def memory_need_mb(mode: str, agents: int, private_mb: dict[str, float], shared_mb: float) -> float:
    """Memory a point needs in MiB.

    The private memory of one env, N agents and, in ``train`` mode, N learners, plus the pages they share
    (libraries) once.
    """
    per_agent = private_mb["agent"] + (private_mb["learner"] if mode == "train" else 0.0)
    return shared_mb + private_mb["env"] + agents * per_agent


def role_figures(processes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per role: peak RSS (max and mean over its processes), start wall time (median, max) and start CPU (mean)."""
    out: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        mine = [f for name, f in processes.items() if name.split("-")[0] == role]
        if not mine:
            continue
        rss = [f["peak_rss_mb"] for f in mine if "peak_rss_mb" in f]
        private = [f["private_mb"] for f in mine if "private_mb" in f]
        start = [f["start_s"] for f in mine if "start_s" in f]
        cpu = [f["start_cpu_s"] for f in mine if "start_cpu_s" in f]
        out[role] = {
            "processes": len(mine),
            "rss_mb": round(max(rss), 1) if rss else None,
            "rss_mb_mean": round(statistics.fmean(rss), 1) if rss else None,
            "private_mb": round(max(private), 1) if private else None,
            "start_s": round(statistics.median(start), 2) if start else None,
            "start_s_max": round(max(start), 2) if start else None,
            "start_cpu_s": round(statistics.fmean(cpu), 3) if cpu else None,
            "torch_imported": any(f.get("torch_imported") for f in mine) if role == "agent" else None,
            "started_by": "/".join(sorted({f["start"] for f in mine if "start" in f})) or None,
        }
        for key in ("torch_imported", "started_by"):
            if out[role][key] is None:
                del out[role][key]
    return out


def run_point(
    ns: argparse.Namespace, config: Config, channel: str, agents: int, mode: str, root: Path
) -> dict[str, Any]:
    """Measure one (mode, channel, N) point."""
    from marlmesh.bench.meshrun import export_policies, initial_policies, measure_mesh

    run_dir = root / f"{mode}-{channel}-n{agents}"
    shutil.rmtree(run_dir, ignore_errors=True)
    policy_dir = None
    if mode == "eval":
        policy_dir = export_policies(config, initial_policies(config), run_dir / "policy")
    got = measure_mesh(config, run_dir, mode=mode, warmup_s=ns.warmup, seconds=ns.seconds, policy_dir=policy_dir)
    agent_cpu = [v for k, v in got.cpu_per_process.items() if k.startswith("agent")]
    return {
        "mode": mode,
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
        "cpu_learner_mean": got.cpu_by_role().get("learner"),
        "roles": role_figures(got.processes),
    }


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """Steps/s, bus bytes per agent per env step, peak RSS and agent start time against N, one line per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [p for p in points if "skipped" not in p]
    fig, (left, right, mem, start) = plt.subplots(1, 4, figsize=(20, 4))
    for mode, channel in sorted({(p["mode"], p["channel"]) for p in measured}):
        mine = sorted(
            (p for p in measured if (p["mode"], p["channel"]) == (mode, channel)), key=lambda p: p["num_agents"]
        )
        n = [p["num_agents"] for p in mine]
        label = f"{channel} ({mode})"
        left.plot(n, [p["steps_per_s"] for p in mine], marker="o", label=label)
        right.plot(n, [p["bus_bytes_per_agent_env_step"] or 0 for p in mine], marker="o", label=label)
        for role, style in (("agent", "-"), ("learner", ":")):
            rss = [(k, p["roles"][role]["rss_mb"]) for k, p in zip(n, mine, strict=True) if role in p["roles"]]
            if rss:
                mem.plot(*zip(*rss, strict=True), marker="o", linestyle=style, label=f"{role}, {label}")
        agents = [(k, p["roles"]["agent"]["start_s"]) for k, p in zip(n, mine, strict=True) if "agent" in p["roles"]]
        if agents:
            start.plot(*zip(*agents, strict=True), marker="o", label=label)
    left.set(xlabel="agent processes N", ylabel="env steps / s", title="throughput", xscale="log", yscale="log")
    right.set(xlabel="agent processes N", ylabel="bytes / agent / env step", title="bus bytes sent", xscale="log")
    right.set_ylim(bottom=0)
    mem.set(xlabel="agent processes N", ylabel="MiB", title="peak RSS per process", xscale="log", yscale="log")
    start.set(xlabel="agent processes N", ylabel="s", title="agent start, spawn to port file (median)", xscale="log")
    start.set_ylim(bottom=0)
    for ax in (left, right, mem, start):
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
        counts, channels, modes = parse_points(ns)
        configs = {(c, n): point_config(ns, c, n) for c in channels for n in counts}
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    load_before = machine()["load_average"]
    points: list[dict[str, Any]] = []
    private_mb, measured, shared_mb = dict(RSS_GUESS_MB), {}, 0.0
    out = sys.stderr if ns.json else sys.stdout
    try:
        with work_dir(ns.run_dir, "marlmesh-scale-") as root:
            for mode in modes:
                for (channel, agents), config in configs.items():
                    need, available = memory_need_mb(mode, agents, private_mb, shared_mb), mem_available_mb()
                    if available is not None and need > ns.memory_fraction * available:
                        reason = (
                            f"needs ~{need:.0f} MiB (private memory per process measured so far x processes, "
                            f"plus shared pages), more than {ns.memory_fraction:g} x MemAvailable {available:.0f} MiB"
                        )
                        points.append({"mode": mode, "channel": channel, "num_agents": agents, "skipped": reason})
                        print(f"{mode:>5} {channel:>10} N={agents:<3} skipped: {reason}", file=out, flush=True)
                        continue
                    try:
                        p = run_point(ns, config, channel, agents, mode, root)
                    except grpc.RpcError as exc:  # the point's mesh failed; the next point starts afresh
                        reason = f"failed: {exc.code().name}: {exc.details()}"
                        points.append({"mode": mode, "channel": channel, "num_agents": agents, "skipped": reason})
                        print(f"{mode:>5} {channel:>10} N={agents:<3} {reason}", file=out, flush=True)
                        continue
                    points.append(p)
                    for role, f in p["roles"].items():
                        if f["private_mb"] is not None:
                            measured[role] = max(measured.get(role, 0.0), f["private_mb"])
                        if f["rss_mb"] is not None and f["private_mb"] is not None:
                            shared_mb = max(shared_mb, f["rss_mb"] - f["private_mb"])
                    private_mb = {**RSS_GUESS_MB, **measured}
                    agent = p["roles"].get("agent", {})
                    print(
                        f"{mode:>5} {channel:>10} N={agents:<3} {p['steps_per_s']:>9.1f} steps/s  "
                        f"{p['bus_bytes_per_agent_env_step']} B/agent/env step  agent CPU {p['cpu_agent_mean']}  "
                        f"agent RSS {agent.get('rss_mb')} MiB, start {agent.get('start_s')} s "
                        f"({agent.get('start_cpu_s')} s CPU)",
                        file=out,
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
        "agent_runtime_train": configs[(channels[0], counts[0])].train.agent_runtime,
        "graph_engine": configs[(channels[0], counts[0])].train.graph_engine,
        "agent_start": configs[(channels[0], counts[0])].runtime.agent_start,
        "memory_fraction": ns.memory_fraction,
        "points": points,
        "load_average_before": load_before,
        **machine(),
    }
    for mode in modes:
        for channel in channels:
            sizes = [
                p["bus_bytes_per_agent_env_step"]
                for p in points
                if (p["mode"], p["channel"]) == (mode, channel) and "skipped" not in p
            ]
            if sizes and all(sizes):
                result[f"{mode}_{channel}_bytes_max_over_min"] = round(max(sizes) / min(sizes), 4)
    plot_path = ns.plot or (ns.out.with_suffix(".png") if ns.out is not None else None)
    if plot_path is not None:
        plot(points, plot_path)
        result["plot"] = str(plot_path)
    return emit(ns, result)

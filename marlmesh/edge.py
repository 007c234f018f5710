"""Edge execution helpers and ``marlmesh bench edge``.

- :func:`export_initial_policies`: export the freshly initialised policies of a config (benchmarks and tests
  need an exported policy without a training run).
- :func:`run_edge_mesh`: an env_service plus N agents running ``--runtime onnx`` as real processes on
  127.0.0.1, configured only through the ``MARLMESH_*`` variables the Kubernetes manifests set; reports the
  finished episodes, each agent's counters, log and peak RSS.
- :func:`bench_edge`: per-decision latency of the ONNX and the torch runtime for the same policy in the same
  run (``encode -> act -> sample`` for one env copy; waiting for messages excluded: the inbox is given), and
  the peak RSS of an edge agent process.

With ``runtime.tls.enabled`` (``bench edge --tls-keys-dir DIR`` or ``--set runtime.tls.*``) the mesh runs over
mutual TLS: every child gets its own identity's files (``env``, ``agent-<i>``) through ``MARLMESH_TLS_*``, and
this process dials the env as ``launcher``; every file is checked before the first process starts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from marlmesh import contract, tls
from marlmesh.config import Config, dump_config, load_config
from marlmesh.mesh import stop_processes
from marlmesh.ports import free_port_block


def export_initial_policies(config: Config, out_dir: Path, seed: int = 0) -> Path:
    """Export every agent's freshly initialised policy (seeded); returns the manifest path."""
    import torch

    from marlmesh import plugins
    from marlmesh.export import export_policy, policy_specs, write_manifest

    torch.manual_seed(seed)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = [export_policy(channel.build_policy(s), s, out_dir, policy_version=0) for s in policy_specs(config)]
    return write_manifest(out_dir, config, channel, entries)


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size (``VmHWM``) of a live process in MiB; None where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class EdgeMeshResult:
    """What :func:`run_edge_mesh` observed."""

    episodes: int
    agent_stats: list[dict[str, Any]]
    agent_logs: list[str]
    agent_exit_codes: list[int | None]
    peak_rss_mb: list[float | None] = field(default_factory=list)
    return_sums: list[float] = field(default_factory=list)
    """Sum of all agents' returns of the first ``episodes`` finished episodes, in finishing order."""


def _wait_file(path: Path, proc: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.args} did not start:\n{log.read_text()[-3000:]}")


def run_edge_mesh(
    config_path: Path,
    policy_dir: Path,
    workdir: Path,
    *,
    episodes: int,
    num_envs: int = 2,
    agent_python: str = sys.executable,
    agent_flags: tuple[str, ...] = (),
    agent_cwd: Path | None = None,
    timeout_s: float = 180.0,
) -> EdgeMeshResult:
    """Run env_service + N onnx agents until ``episodes`` episodes finished, then stop them (SIGTERM).

    Args:
        config_path: The run's YAML config.
        policy_dir: A ``marlmesh export`` folder.
        workdir: Logs, port and stats files go here.
        episodes: Finished episodes to wait for.
        num_envs: B of the env service.
        agent_python: Interpreter of the agents (e.g. a venv with only the ``edge`` extra).
        agent_flags: Interpreter flags of the agents (e.g. ``("-X", "importtime")``).
        agent_cwd: Working directory of the agents (default: ``workdir``, so the installed package is used).
        timeout_s: Give up after this long.

    Raises:
        RuntimeError: If a process exits early; TimeoutError if the episodes do not finish in time.
        ConfigError: If the config or a TLS file is bad (before any process starts).
    """
    from env_service.client import EnvClient

    config = load_config(config_path)  # a bad config fails here, with the key path, not in N child processes
    settings = config.runtime.tls
    own_tls = tls.load_identity(settings, tls.LAUNCHER)
    env_tls = tls.child_env(settings, "env")
    workdir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != contract.PARENT_PID.name}
    base["PYTHONUNBUFFERED"] = "1"
    repo = Path(__file__).resolve().parents[1]
    env_log = workdir / "env.log"
    env_port_file = workdir / "env.port"
    env_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "env_service",
            "--port",
            "0",
            "--port-file",
            str(env_port_file),
            "--num-envs",
            str(num_envs),
        ],
        cwd=repo,
        env={**base, **env_tls, contract.CONFIG.name: str(config_path), contract.HOST.name: contract.LOCAL_HOST},
        stdout=open(env_log, "wb"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )
    procs = [env_proc]
    agents: list[subprocess.Popen] = []
    try:
        address = f"{contract.LOCAL_HOST}:{int(_wait_file(env_port_file, env_proc, env_log, 60))}"
        with EnvClient(address, timeout_s=10, tls_identity=own_tls) as client:
            spec = client.wait_ready(30)
        n = len(spec.agents)
        agent_tls = [tls.child_env(settings, tls.identity_name("agent", i), i) for i in range(n)]
        bus_base = free_port_block(contract.LOCAL_HOST, n)
        logs = [workdir / f"agent-{i}.log" for i in range(n)]
        for i in range(n):
            env = {
                **base,
                **agent_tls[i],
                # exactly the variables k8s/base/agents.yaml sets (addresses made local)
                contract.AGENT_ID.name: f"agents-{i}",
                contract.NUM_AGENTS.name: str(n),
                contract.CONFIG.name: str(config_path),
                contract.ENV_ADDR.name: address,
                contract.PEER_PATTERN.name: contract.LOCAL_ENDPOINT_PATTERN,
                contract.BUS_BIND.name: contract.LOCAL_ENDPOINT_PATTERN,
                contract.BUS_BASE_PORT.name: str(bus_base),
                contract.HOST.name: contract.LOCAL_HOST,
                contract.AGENT_PORT.name: "0",
                contract.MODE.name: "eval",
                contract.RUNTIME.name: "onnx",
                contract.POLICY_DIR.name: str(policy_dir),
            }
            agents.append(
                subprocess.Popen(
                    [
                        agent_python,
                        *agent_flags,
                        "-m",
                        "agent_service",
                        "--stats-file",
                        str(workdir / f"agent-{i}.json"),
                    ],
                    cwd=agent_cwd or workdir,
                    env=env,
                    stdout=open(logs[i], "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
            )
        procs += agents
        deadline = time.monotonic() + timeout_s
        done = 0
        with EnvClient(address, timeout_s=10, tls_identity=own_tls) as client:
            while True:
                try:
                    done = client.stats(max_episodes=1).episodes
                except grpc.RpcError as exc:  # an overloaded machine: a poll may time out; the deadline decides
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                if done >= episodes:
                    recent = client.stats(max_episodes=episodes).recent
                    return_sums = [e.return_sum for e in sorted(recent, key=lambda e: e.seq)][:episodes]
                    break
                for p, log in zip(procs, [env_log, *logs], strict=True):
                    if p.poll() is not None:
                        raise RuntimeError(f"{p.args} exited with {p.returncode}:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {done} of {episodes} episodes after {timeout_s:.0f}s")
                time.sleep(0.1)
        rss = [peak_rss_mb(p.pid) for p in agents]
    except BaseException:
        stop_processes(agents + [env_proc])
        raise
    codes = stop_processes(agents)
    stop_processes([env_proc])
    stats = []
    for i in range(n):
        path = workdir / f"agent-{i}.json"
        stats.append(json.loads(path.read_text()) if path.exists() else {})
    return EdgeMeshResult(done, stats, [log.read_text() for log in logs], codes, rss, return_sums)


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples_s) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def decision_latencies(
    runtime: Any, obs_shape: tuple[int, ...], num_agents: int, message_dim: int, n: int
) -> list[float]:
    """Seconds per decision (``encode -> rounds -> act -> sample``, one env copy, inbox given)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, *obs_shape)).astype(np.float32)
    inbox = (
        rng.normal(size=(1, num_agents, message_dim)).astype(np.float32),
        np.ones((1, num_agents), np.float32),
    )
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        decide(runtime, obs, inbox, deterministic=True)
        out.append(time.perf_counter() - t0)
    return out


def decide(
    runtime: Any, obs: np.ndarray, inbox: tuple[np.ndarray, np.ndarray], *, deterministic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One decision of a policy runtime with the same inbox in every round: ``(action, log_prob)``."""
    state, _ = runtime.encode(obs)
    inboxes = []
    for k in range(runtime.rounds):
        inboxes.append(inbox)
        if k + 1 < runtime.rounds:
            state, _ = runtime.round(k + 1, state, inbox)
    return runtime.sample(runtime.act(state, inboxes), deterministic)


def bench_edge(config: Config, decisions: int = 3000, episodes: int = 6) -> dict[str, Any]:
    """Latency of both runtimes on the same exported policy, and an edge agent process's peak RSS."""
    import torch

    from agent_service.runtime import OnnxRuntime
    from marlmesh import plugins
    from marlmesh.export import export_policy, policy_specs, write_manifest
    from marlmesh.policies.torch_runtime import TorchRuntime

    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    specs = policy_specs(config)
    policies = [channel.build_policy(s) for s in specs]
    with tempfile.TemporaryDirectory(prefix="marlmesh-bench-edge-") as tmp:
        policy_dir = Path(tmp) / "policy"
        policy_dir.mkdir()
        entries = [export_policy(p, s, policy_dir, policy_version=0) for p, s in zip(policies, specs, strict=True)]
        write_manifest(policy_dir, config, channel, entries)
        spec = specs[0]
        runtimes = {"onnx": OnnxRuntime(policy_dir, 0, threads=1), "torch": TorchRuntime(policies[0])}
        samples: dict[str, list[float]] = {k: [] for k in runtimes}
        for rt in runtimes.values():  # warm-up
            decision_latencies(rt, spec.obs_shape, spec.num_agents, spec.message_dim, 200)
        for _ in range(5):  # interleave so both runtimes see the same machine load
            for name, rt in runtimes.items():
                samples[name] += decision_latencies(
                    rt, spec.obs_shape, spec.num_agents, spec.message_dim, decisions // 5
                )
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(dump_config(config))
        mesh = run_edge_mesh(cfg_path, policy_dir, Path(tmp) / "mesh", episodes=episodes, num_envs=config.env.num_envs)
    onnx_p50, onnx_p99 = _percentiles(samples["onnx"])
    torch_p50, torch_p99 = _percentiles(samples["torch"])
    rss = [r for r in mesh.peak_rss_mb if r is not None]
    return {
        "bench": "edge",
        "env": config.env.name,
        "channel": config.channel.name,
        "num_agents": spec.num_agents,
        "batch_per_decision": 1,
        "decisions": len(samples["onnx"]),
        "onnx_p50_ms": round(onnx_p50, 4),
        "onnx_p99_ms": round(onnx_p99, 4),
        "torch_p50_ms": round(torch_p50, 4),
        "torch_p99_ms": round(torch_p99, 4),
        "edge_peak_rss_mb": round(max(rss), 1) if rss else None,
        "edge_agents": len(mesh.peak_rss_mb),
        "edge_episodes": mesh.episodes,
        "edge_torch_imported": any(s.get("torch_imported", True) for s in mesh.agent_stats),
        "edge_mtls": config.runtime.tls.enabled,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }


def add_bench_arguments(b: Any) -> None:
    """Flags of ``marlmesh bench edge``."""
    b.add_argument("-c", "--config", default=None, help="YAML config (default: built-in defaults)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    b.add_argument("--decisions", type=int, default=3000, help="decisions timed per runtime")
    b.add_argument(
        "--tls-keys-dir",
        type=Path,
        default=None,
        help="run the edge mesh over gRPC mTLS with this 'marlmesh keys gen' folder "
        "(= --set runtime.tls.enabled=true --set runtime.tls.keys_dir=DIR)",
    )
    b.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    b.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")


def cmd_bench(ns: Any) -> int:
    """``marlmesh bench edge``."""
    from marlmesh.config import ConfigError

    tls_sets = []
    if ns.tls_keys_dir is not None:
        tls_sets = ["runtime.tls.enabled=true", f"runtime.tls.keys_dir={ns.tls_keys_dir.resolve()}"]
    try:
        config = load_config(ns.config, ["channel.name=broadcast", "env.num_envs=1", *tls_sets, *ns.set])
        tls.check_tls(config)  # launcher and env files now; the agents' when the mesh starts
        result = bench_edge(config, decisions=ns.decisions)
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    for k in ("onnx_p50_ms", "onnx_p99_ms", "torch_p50_ms", "torch_p99_ms", "edge_peak_rss_mb"):
        print(f"{k:<18} {result[k]}")
    from marlmesh.bench import emit

    return emit(ns, result)

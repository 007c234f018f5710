"""Edge execution helpers (``marlmesh bench edge`` is in :mod:`marlmesh.bench.edge`).

- :func:`export_initial_policies`: export the freshly initialised policies of a config (benchmarks and tests
  need an exported policy without a training run).
- :func:`run_edge_mesh`: an env_service plus N agents running ``--runtime onnx`` as real processes on
  127.0.0.1, configured only through the ``MARLMESH_*`` variables the Kubernetes manifests set (but with
  OS-assigned bus ports and a peer table, ``MARLMESH_PEER_TABLE``, instead of fixed ports); reports the
  finished episodes, each agent's counters, log and peak RSS.

With ``runtime.tls.enabled`` (``bench edge --tls-keys-dir DIR`` or ``--set runtime.tls.*``) the mesh runs over
mutual TLS: every child gets its own identity's files (``env``, ``agent-<i>``) through ``MARLMESH_TLS_*``, and
this process dials the env as ``launcher``; every file is checked before the first process starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from marlmesh import contract, ports, tls
from marlmesh.config import Config, load_config
from marlmesh.launch.mesh import stop_processes


def export_initial_policies(config: Config, out_dir: Path, seed: int = 0) -> Path:
    """Export every agent's freshly initialised policy (seeded); returns the manifest path."""
    import torch

    from marlmesh import plugins
    from marlmesh.deploy.export import export_policy, policy_specs, write_manifest

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


def _wait_ports(path: Path, proc: subprocess.Popen, log: Path, timeout: float) -> dict[str, int]:
    """The ports a process reported in its port file, once it has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reported = ports.read_port_file(path)
        if reported is not None:
            return reported
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
    from marlmesh.env_client import EnvClient

    config = load_config(config_path)  # a bad config fails here, with the key path, not in N child processes
    settings = config.runtime.tls
    own_tls = tls.load_identity(settings, tls.LAUNCHER)
    env_tls = tls.child_env(settings, "env")
    workdir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != contract.PARENT_PID.name}
    base["PYTHONUNBUFFERED"] = "1"
    repo = Path(__file__).resolve().parents[2]
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
        address = f"{contract.LOCAL_HOST}:{_wait_ports(env_port_file, env_proc, env_log, 60)[ports.GRPC]}"
        with EnvClient(address, timeout_s=10, tls_identity=own_tls) as client:
            spec = client.wait_ready(30)
        n = len(spec.agents)
        agent_tls = [tls.child_env(settings, tls.identity_name("agent", i), i) for i in range(n)]
        peer_table = workdir / "bus.peers"
        peer_table.unlink(missing_ok=True)
        logs = [workdir / f"agent-{i}.log" for i in range(n)]
        port_files = [workdir / f"agent-{i}.port" for i in range(n)]
        for i in range(n):
            env = {
                **base,
                **agent_tls[i],
                # the variables k8s/base/agents.yaml sets, made local: OS-assigned ports and a peer table
                contract.AGENT_ID.name: f"agents-{i}",
                contract.NUM_AGENTS.name: str(n),
                contract.CONFIG.name: str(config_path),
                contract.ENV_ADDR.name: address,
                contract.PEER_PATTERN.name: contract.LOCAL_ENDPOINT_PATTERN,
                contract.BUS_BIND.name: f"tcp://{contract.LOCAL_HOST}:0",
                contract.PEER_TABLE.name: str(peer_table),
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
                        "--port-file",
                        str(port_files[i]),
                    ],
                    cwd=agent_cwd or workdir,
                    env=env,
                    stdout=open(logs[i], "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
            )
        procs += agents
        reported = [_wait_ports(f, p, log, 60) for f, p, log in zip(port_files, agents, logs, strict=True)]
        if all(ports.BUS in r for r in reported):
            ports.write_peer_table(peer_table, [r[ports.BUS] for r in reported])
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

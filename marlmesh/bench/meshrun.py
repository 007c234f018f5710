"""Shared parts of the mesh benchmarks (``bench e2e``, ``bench scale``): policies, a measured mesh window.

- :func:`initial_policies` builds every agent's staged policy from the env's spec (seeded) and writes each as
  version-0 checkpoint, so that an ``eval``-mode mesh acts with exactly the parameters the single-process
  baseline uses (rollout only, no learner).
- :func:`measure_mesh` starts a real mesh (env + N agent processes, and N learners in ``train`` mode), lets
  it warm up, then measures env steps per second, CPU per process and bus bytes over a fixed window.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marlmesh.config import Config, dump_config
from marlmesh.launch.mesh import Mesh, MeshError
from marlmesh.v1 import env_pb2

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``uptime``), recorded next to every result."""
    return [round(x, 2) for x in os.getloadavg()]


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (None if the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``; 0.0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def tree_cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process plus its live descendants (e.g. the env service's ``env.workers``).

    Args:
        pids: Name -> process id.

    Returns:
        Name -> user + system CPU seconds of that process and every process below it.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4 of stat: ppid
    out = {}
    for name, pid in pids.items():
        total, todo = 0.0, [pid]
        while todo:
            p = todo.pop()
            total += cpu_seconds(p)
            todo.extend(children.get(p, []))
        out[name] = total
    return out


def env_spec_for(config: Config) -> Any:
    """The env's wire spec (``EnvSpec``), built in this process from one env copy (no ``env.workers``)."""
    from env_service.convert import spec_to_proto
    from env_service.node import EnvNode

    node = EnvNode(config.env.model_copy(update={"workers": 1}), config.seed, num_envs=1)
    try:
        return spec_to_proto(node)
    finally:
        node.close()


def export_policies(config: Config, policies: list[Any], out_dir: Path) -> Path:
    """Write ``policies`` (from :func:`initial_policies`) as a ``marlmesh export`` folder, version 0.

    An ``eval``-mode mesh given this folder (``policy_dir``) runs agents with the onnx runtime, without torch.

    Returns:
        The folder.
    """
    from marlmesh import plugins
    from marlmesh.deploy.export import policy_specs, write_manifest
    from marlmesh.policies.onnx_export import export_policy

    channel = plugins.load("channels", config.channel.name)(config.channel)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = [
        export_policy(p, s, out_dir, policy_version=0) for p, s in zip(policies, policy_specs(config), strict=True)
    ]
    write_manifest(out_dir, config, channel, entries)
    return out_dir


def initial_policies(config: Config, checkpoint_root: Path | None = None) -> list[Any]:
    """Every agent's freshly initialised torch policy (seed ``config.seed + i``), optionally saved as version 0.

    Args:
        config: The run config (env, channel, hidden sizes).
        checkpoint_root: If given, agent i's policy is written to ``checkpoint_root/agent-<i>`` (what an
            ``eval``-mode mesh loads).

    Returns:
        The policies, in agent order.
    """
    import torch

    from marlmesh import plugins
    from marlmesh.checkpoint import save_checkpoint
    from marlmesh.policy_spec import policy_spec_for

    spec = env_spec_for(config)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    policies = []
    for i in range(len(spec.agents)):
        torch.manual_seed(config.seed + i)
        policy = channel.build_policy(policy_spec_for(spec, i, config))
        policies.append(policy)
        if checkpoint_root is not None:
            state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            save_checkpoint(checkpoint_root / f"agent-{i}", 0, {"version": 0, "policy": state}, keep=1)
    return policies


@dataclass
class MeshSample:
    """One measured window of a running mesh.

    Attributes:
        steps_per_s: Env steps (summed over the B copies) per wall second in the window.
        env_steps: Env steps in the window.
        seconds: Length of the window.
        cpu_per_process: Process name -> CPU seconds per wall second in the window (1.0 = one core busy), its
            child processes included (the env service's ``env.workers``).
        cpu_ms_per_tick: Process name -> CPU milliseconds per batched env step (less noisy than rates on a
            shared machine).
        bus_bytes_per_agent_step: Mean over agents of bus bytes sent per batched step (whole run), or None
            without a bus.
        bus_bytes_per_agent_env_step: The same per env copy (divided by B), or None.
        bus_messages_per_agent_env_step: Messages (rows x receivers) sent per agent per env copy and step.
    """

    steps_per_s: float
    env_steps: int
    seconds: float
    cpu_per_process: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_tick: dict[str, float] = field(default_factory=dict)
    bus_bytes_per_agent_step: float | None = None
    bus_bytes_per_agent_env_step: float | None = None
    bus_messages_per_agent_env_step: float | None = None
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Process name -> what it reported at exit: ``start_s``, ``start_cpu_s``, ``peak_rss_mb`` (see
    :func:`process_figures`)."""

    def cpu_by_role(self, per_tick: bool = False) -> dict[str, float]:
        """Mean CPU share (or CPU ms per tick) per process of each role (``env``, ``agent``, ``learner``)."""
        roles: dict[str, list[float]] = {}
        for name, cpu in (self.cpu_ms_per_tick if per_tick else self.cpu_per_process).items():
            roles.setdefault(name.split("-")[0], []).append(cpu)
        return {role: round(statistics.fmean(v), 3) for role, v in roles.items()}


def _env_counts(stub: Any) -> tuple[int, int]:
    # wait_for_ready: while N agents start at once on a small machine the launcher's connection can fail a
    # handshake; without it the first failure ends the benchmark instead of being retried within the deadline
    stats = stub.GetStats(env_pb2.StatsRequest(episodes_from=0, max_episodes=0), timeout=30, wait_for_ready=True)
    return int(stats.env_steps), int(stats.tick)


class RunningMesh:
    """A started mesh that can be measured in windows and paused (SIGSTOP) between them.

    Pausing lets a benchmark interleave short windows of the mesh and of a baseline many times, so that a
    noisy neighbour on the shared machine hits both alike; a pause must stay well under
    ``env.step_deadline_ms`` and ``bus.round_timeout_ms`` (the clocks go on while the processes are stopped).

    Args:
        mesh: The started mesh.
        stub: Env service stub.
    """

    def __init__(self, mesh: Mesh, stub: Any) -> None:
        self.mesh = mesh
        self.stub = stub
        self.pids = {p.name: p.popen.pid for p in mesh.procs}
        self.bus: tuple[float | None, float | None, float | None] = (None, None, None)
        """Filled in when the mesh has stopped: see :func:`_bus_bytes`."""
        self.processes: dict[str, dict[str, Any]] = {}
        """Filled in when the mesh has stopped: see :func:`process_figures`."""

    def window(self, seconds: float) -> MeshSample:
        """Env steps/s and CPU share per process over the next ``seconds``.

        Raises:
            MeshError: If a process has died.
        """
        self.mesh.check_alive()
        cpu0 = tree_cpu_seconds(self.pids)
        steps0, tick0 = _env_counts(self.stub)
        t0 = time.monotonic()
        time.sleep(seconds)
        steps1, tick1 = _env_counts(self.stub)
        elapsed = time.monotonic() - t0
        cpu1 = tree_cpu_seconds(self.pids)
        self.mesh.check_alive()
        ticks = max(1, tick1 - tick0)
        return MeshSample(
            steps_per_s=(steps1 - steps0) / elapsed,
            env_steps=steps1 - steps0,
            seconds=elapsed,
            cpu_per_process={n: round((cpu1[n] - cpu0[n]) / elapsed, 3) for n in self.pids},
            cpu_ms_per_tick={n: round(1000 * (cpu1[n] - cpu0[n]) / ticks, 3) for n in self.pids},
        )

    def _signal(self, sig: int) -> None:
        for pid in self.pids.values():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        """SIGSTOP every process of the mesh."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT every process of the mesh."""
        self._signal(signal.SIGCONT)


@contextlib.contextmanager
def running_mesh(
    config: Config,
    run_dir: Path,
    *,
    mode: str,
    warmup_s: float,
    start_timeout_s: float = 600.0,
    policy_dir: Path | None = None,
) -> Iterator[RunningMesh]:
    """Start a mesh, wait until it steps, warm up; stop it (and fill in bus bytes) on exit.

    Args:
        config: The run config (``env.num_envs`` is B).
        run_dir: Where the mesh's logs, stats (and, in ``eval`` mode, the checkpoints) live.
        mode: ``eval`` (rollout only: agents act with ``run_dir/checkpoints``) or ``train`` (learners on).
        warmup_s: Seconds of stepping after the first ticks before the caller measures.
        start_timeout_s: Bound on start-up plus the wait for the first ticks.
        policy_dir: ``eval`` mode: agents act from this exported folder with the onnx runtime
            (:func:`export_policies`) instead of ``run_dir/checkpoints`` with torch.

    Raises:
        MeshError: If a process dies or the mesh does not step within ``start_timeout_s``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(dump_config(config))
    mesh = Mesh(config, config_path, run_dir, mode, mode, config.seed, config.env.num_envs, policy_dir=policy_dir)
    running = None
    try:
        mesh.start()
        channel, stub = mesh.env_stub()
        with channel:
            deadline = time.monotonic() + start_timeout_s
            while _env_counts(stub)[1] < 2:  # every agent has joined and acted
                mesh.check_alive()
                if time.monotonic() > deadline:
                    raise MeshError(f"the mesh did not step within {start_timeout_s:.0f}s")
                time.sleep(0.1)
            time.sleep(warmup_s)
            running = RunningMesh(mesh, stub)
            yield running
    finally:
        if running is not None:
            running.resume()
        mesh.stop()
    running.bus = _bus_bytes(mesh, config.env.num_envs)
    running.processes = process_figures(mesh)


def measure_mesh(
    config: Config, run_dir: Path, *, mode: str, warmup_s: float, seconds: float, policy_dir: Path | None = None
) -> MeshSample:
    """Start a mesh, warm up, measure one window of ``seconds``, stop it; bus bytes from the agents' stats.

    Raises:
        MeshError: If a process dies or the mesh does not step in time.
    """
    with running_mesh(config, run_dir, mode=mode, warmup_s=warmup_s, policy_dir=policy_dir) as running:
        sample = running.window(seconds)
    sample.bus_bytes_per_agent_step, sample.bus_bytes_per_agent_env_step, sample.bus_messages_per_agent_env_step = (
        running.bus
    )
    sample.processes = running.processes
    return sample


FIGURES = ("start_s", "start_cpu_s", "peak_rss_mb", "private_mb")
"""What every service writes into its stats file at exit about its start and memory (:mod:`marlmesh.process`)."""


def process_figures(mesh: Mesh) -> dict[str, dict[str, Any]]:
    """Process name -> its :data:`FIGURES`, whether it had torch and how it started, from a stopped mesh's stats.

    A process killed at stop wrote no stats and is missing.
    """
    out = {}
    for p in mesh.procs:
        if not p.stats_file.is_file():
            continue
        stats = json.loads(p.stats_file.read_text())
        out[p.name] = {k: stats.get(k) for k in FIGURES if stats.get(k) is not None}
        out[p.name].update({k: stats[k] for k in ("torch_imported", "start") if k in stats})
    return out


def _bus_bytes(mesh: Mesh, num_envs: int) -> tuple[float | None, float | None, float | None]:
    """Bus bytes per agent per step and per env step, messages per agent per env step (agents' final stats).

    A step is ``rounds`` bus rounds, and ``rounds_sent`` counts the rounds that went out: an agent stopped
    between its sends and the env's answer sent the rounds of a step it never counted, and an agent left alone
    at stop (its peers gone first) took steps that sent nothing, so dividing by its steps would misstate the
    bytes per step.
    """
    size, count = [], []
    for p in mesh.procs:
        if p.role != "agent" or not p.stats_file.is_file():
            continue
        stats = json.loads(p.stats_file.read_text())
        bus, steps = stats.get("bus"), stats.get("steps", 0)
        rounds, rounds_sent = len(stats.get("heard_rows_per_round") or []), stats.get("rounds_sent", 0)
        if rounds and rounds_sent:
            steps = rounds_sent / rounds
        if bus and steps:
            size.append(bus["bytes_sent"] / steps)
            count.append(bus["messages_sent"] / steps)
    if not size:
        return None, None, None
    per_step = statistics.fmean(size)
    return round(per_step, 1), round(per_step / num_envs, 2), round(statistics.fmean(count) / num_envs, 3)


def machine() -> dict[str, Any]:
    """CPU count, load average and the time of the measurement (recorded with every result)."""
    return {
        "cpus": os.cpu_count(),
        "load_average": load_average(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None

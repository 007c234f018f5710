"""Start marlmesh service processes and `marlmesh train` runs for integration tests (real processes on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from marlmesh import contract, ports
from marlmesh.bench.meshrun import initial_policies
from marlmesh.config import dump_config, load_config
from marlmesh.launch.mesh import Mesh, stop_processes
from marlmesh.v1 import env_pb2

ROOT = Path(__file__).resolve().parents[2]
MARLMESH = [sys.executable, "-m", "marlmesh.cli"]
SMOKE = ROOT / "configs" / "smoke.yaml"
"""The tiny-budget config every end-to-end run starts from."""


def start(
    module: str,
    args: list[str],
    log: Path,
    *,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    python_flags: tuple[str, ...] = (),
) -> subprocess.Popen:
    """``python -m module args`` with stderr+stdout into ``log`` (cwd: the repo root)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop(contract.PARENT_PID.name, None)
    fh = open(log, "wb")  # noqa: SIM115 (closed with the process by the OS)
    return subprocess.Popen(
        [python, *python_flags, "-m", module, *args], cwd=ROOT, env=full_env, stdout=fh, stderr=subprocess.STDOUT
    )


def wait_port(proc: subprocess.Popen, port_file: Path, log: Path, timeout: float = 60.0) -> int:
    """The port a ``--port 0 --port-file F`` process bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reported = ports.read_port_file(port_file)
        if reported is not None:
            return reported[ports.GRPC]
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.args} did not report its port:\n{log.read_text()[-3000:]}")


def start_env(tmp: Path, config: Path, *extra: str, name: str = "env") -> tuple[subprocess.Popen, str]:
    """An env_service process on 127.0.0.1 with a free port; returns it and its address."""
    port_file, log = tmp / f"{name}.port", tmp / f"{name}.log"
    proc = start("env_service", ["--config", str(config), "--port", "0", "--port-file", str(port_file), *extra], log)
    return proc, f"127.0.0.1:{wait_port(proc, port_file, log)}"


def stop(procs: list[subprocess.Popen], timeout: float = 15.0) -> list[int | None]:
    """SIGTERM every process, wait, SIGKILL stragglers; returns the exit codes (None: killed)."""
    return stop_processes(procs, timeout)


def train(
    run_dir: Path, *overrides: str, config: Path = SMOKE, extra: tuple[str, ...] = (), timeout: float = 300
) -> subprocess.CompletedProcess:
    """``marlmesh train -c config --run-dir run_dir [extra] --set o...`` to completion (cwd: the repo root)."""
    args = [*MARLMESH, "train", "-c", str(config), "--run-dir", str(run_dir), *extra]
    for o in overrides:
        args += ["--set", o]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of one TensorBoard run folder -> its ``(step, value)`` points (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def port_is_free(host: str, port: int) -> bool:
    """True if ``host:port`` can be bound for TCP right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def alive(pid: int) -> bool:
    """True while a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def smoke_train(run_dir: Path, sets: list[str], *, evaluate: bool = True, timeout: float = 240):
    """``marlmesh train -c configs/smoke.yaml --set ...`` into ``run_dir`` (cwd: the repo root)."""
    return train(run_dir, *sets, extra=() if evaluate else ("--no-eval",), timeout=timeout)


def eval_mesh(tmp: Path, sets: list[str]) -> Mesh:
    """An eval-mode :class:`Mesh` (env + agents acting with version-0 checkpoints) of smoke.yaml + ``sets``.

    Not started: call ``start()`` and ``stop()`` (in a ``finally``).
    """
    config = load_config(SMOKE, sets)
    config_path = tmp / "config.yaml"
    config_path.write_text(dump_config(config))
    initial_policies(config, tmp / "checkpoints")
    return Mesh(config, config_path, tmp, "eval", "eval", config.seed, config.env.num_envs)


def env_stats(mesh: Mesh) -> env_pb2.EnvStats:
    """The mesh env's GetStats answer (tick, live agents, counters)."""
    channel, stub = mesh.env_stub()
    with channel:
        return stub.GetStats(env_pb2.StatsRequest(), timeout=10)


def env_tick(mesh: Mesh) -> int:
    """The mesh's env tick (batched env steps so far), from its GetStats."""
    return int(env_stats(mesh).tick)


def wait_tick(mesh: Mesh, at_least: int, *, timeout_s: float = 60.0, all_alive: bool = True) -> int:
    """Wait until the env tick reaches ``at_least``; returns it.

    Args:
        mesh: A started mesh.
        at_least: Tick to reach.
        timeout_s: Give up (assertion error) after this long.
        all_alive: Also fail as soon as any process of the mesh has exited (off once a test stopped one).
    """
    deadline = time.monotonic() + timeout_s
    while (tick := env_tick(mesh)) < at_least:
        if all_alive:
            mesh.check_alive()
        assert time.monotonic() < deadline, f"the mesh reached tick {tick} only, not {at_least}"
        time.sleep(0.1)
    return tick

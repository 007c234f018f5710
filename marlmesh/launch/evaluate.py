"""Evaluate saved policies: env + N agents as processes, acting with each agent's newest checkpoint.

With ``train.agent_runtime: onnx`` (the default) the checkpoints are first exported to ONNX by a short-lived
``marlmesh export`` process (``RUN_DIR/<tag>-policy/``) and the agents act from that folder with the onnx
runtime, so no process of the evaluation mesh imports torch; with ``torch`` (or if the export fails) each agent
loads its checkpoint with torch.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from marlmesh.config import Config
from marlmesh.launch.mesh import Mesh, MeshError
from marlmesh.v1 import env_pb2, env_pb2_grpc

log = logging.getLogger(__name__)


def export_for_eval(config: Config, run_dir: Path, tag: str) -> Path | None:
    """The run's newest checkpoints as ONNX graphs for the evaluation agents, when they act with onnx.

    The export runs in its own ``marlmesh export`` process (it needs torch; this launcher process has none).

    Returns:
        The exported folder ``run_dir/<tag>-policy``; None with ``train.agent_runtime: torch``, or if the export
        failed (logged): then the agents load the checkpoints with torch.
    """
    if config.train.agent_runtime != "onnx":
        return None
    out = run_dir / f"{tag}-policy"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "marlmesh.cli", "export", str(run_dir), "--out", str(out)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=config.runtime.startup_timeout_s)
    except subprocess.TimeoutExpired:
        log.warning(
            "exporting %s for evaluation took over %.0fs; the agents load the checkpoints with torch",
            run_dir,
            config.runtime.startup_timeout_s,
        )
        return None
    if res.returncode != 0:
        log.warning(
            "cannot export %s for evaluation (%s); the agents load the checkpoints with torch",
            run_dir,
            res.stderr.strip()[-500:],
        )
        return None
    return out


def evaluate_run(
    config: Config,
    config_path: Path,
    run_dir: Path,
    *,
    episodes: int,
    num_envs: int,
    seed: int,
    timeout_s: float = 900.0,
    tag: str = "eval",
) -> dict[str, object]:
    """Run ``episodes`` evaluation episodes with the checkpoints in ``run_dir/checkpoints``.

    Episodes are taken in the order they finish; with fixed-length episodes (MPE) that is every env copy
    equally.

    Returns:
        ``episodes``, ``return_sum_mean``, ``return_sum_std``, ``collisions_mean`` (None where the env has no
        collisions), ``agent_return_means``, ``agent_names``, ``deterministic``, ``seed``, ``num_envs``,
        ``wall_seconds``, ``processes``.

    Raises:
        MeshError: If a process fails or the episodes do not finish within ``timeout_s``.
    """
    start = time.monotonic()
    policy_dir = export_for_eval(config, run_dir, tag)
    mesh = Mesh(config, config_path, run_dir, "eval", tag, seed, num_envs, policy_dir=policy_dir)
    try:
        mesh.start()
        channel, stub = mesh.env_stub()
        with channel:
            spec = stub.GetSpec(env_pb2.GetSpecRequest(), timeout=10)
            stats = wait_for_episodes(stub, episodes, timeout_s=timeout_s, check=mesh.check_alive, what="evaluation")
        processes = mesh.processes()
    finally:
        mesh.stop()
    return episode_summary(
        stats,
        spec,
        episodes,
        deterministic=config.eval.deterministic,
        seed=seed,
        num_envs=num_envs,
        wall_seconds=round(time.monotonic() - start, 2),
        processes=processes,
    )


def wait_for_episodes(
    stub: env_pb2_grpc.EnvServiceStub,
    episodes: int,
    *,
    timeout_s: float,
    check: Callable[[], None],
    what: str,
    poll_s: float = 0.2,
) -> env_pb2.EnvStats:
    """Poll the env service until ``episodes`` episodes have finished.

    Args:
        stub: The env service.
        episodes: Finished episodes to wait for.
        timeout_s: Give up after this long.
        check: Called between polls; raises if a process of the run has failed.
        what: What is waiting, for the timeout message (``evaluation``, ``baseline random``).
        poll_s: Seconds between polls.

    Returns:
        The env's statistics with (at least) the first ``episodes`` finished episodes.

    Raises:
        MeshError: If the episodes do not finish within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        stats = stub.GetStats(env_pb2.StatsRequest(episodes_from=0, max_episodes=episodes), timeout=10)
        if stats.episodes >= episodes:
            return stats
        check()
        if time.monotonic() > deadline:
            raise MeshError(f"{what} did not finish {episodes} episodes in {timeout_s:.0f}s ({stats.episodes} done)")
        time.sleep(poll_s)


def episode_summary(
    stats: env_pb2.EnvStats,
    spec: env_pb2.EnvSpec,
    episodes: int,
    *,
    deterministic: bool,
    seed: int,
    num_envs: int,
    wall_seconds: float,
    processes: list[dict[str, object]],
) -> dict[str, object]:
    """The ``eval`` section of ``summary.json`` from the first ``episodes`` episodes the env service finished.

    Args:
        stats: The env's statistics (its ``recent`` episodes).
        spec: The env's spec (agent names, whether it reports collisions).
        episodes: How many episodes count (the first to finish).
        deterministic: Whether the agents acted deterministically.
        seed: The env seed.
        num_envs: B of the env service.
        wall_seconds: Wall time of the evaluation.
        processes: ``{role, agent_id, pid}`` of every process of the evaluation.

    Returns:
        ``episodes``, ``return_sum_mean``, ``return_sum_std``, ``collisions_mean`` (None where the env has no
        collisions), ``agent_return_means``, ``agent_names``, ``deterministic``, ``seed``, ``num_envs``,
        ``wall_seconds``, ``processes``.
    """
    eps = sorted(stats.recent, key=lambda e: e.seq)[:episodes]
    sums = np.array([e.return_sum for e in eps])
    per_agent = np.array([list(e.agent_returns) for e in eps])
    collisions = [e.collisions for e in eps]
    has_coll = spec.has_collisions and not any(math.isnan(c) for c in collisions)
    return {
        "episodes": len(eps),
        "return_sum_mean": float(sums.mean()),
        "return_sum_std": float(sums.std()),
        "collisions_mean": float(np.mean(collisions)) if has_coll else None,
        "agent_return_means": [float(x) for x in per_agent.mean(axis=0)],
        "agent_names": [a.name for a in spec.agents],
        "deterministic": deterministic,
        "seed": seed,
        "num_envs": num_envs,
        "wall_seconds": wall_seconds,
        "processes": processes,
    }


def format_eval_table(result: dict[str, object]) -> str:
    """A small human table of an evaluation result."""
    names = result["agent_names"]
    means = result["agent_return_means"]
    mode = "deterministic" if result["deterministic"] else "sampled"
    lines = [
        f"Evaluation: {result['episodes']} episodes, {mode} actions, env seed {result['seed']}, B={result['num_envs']}",
        f"  {'agent':<16} {'mean return':>12}",
    ]
    lines += [f"  {n:<16} {m:>12.2f}" for n, m in zip(names, means, strict=True)]
    lines.append(f"  {'sum of agents':<16} {result['return_sum_mean']:>12.2f}  ± {result['return_sum_std']:.2f} (std)")
    if result.get("collisions_mean") is not None:
        lines.append(f"  {'collisions/ep':<16} {result['collisions_mean']:>12.2f}")
    return "\n".join(lines)

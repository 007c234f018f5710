"""``marlmesh train`` for ``algo.name=mappo-central``: train in one process, then evaluate like any run.

The run directory has the same layout and ``summary.json`` contract as a decentralized run
(:mod:`marlmesh.launch.train`): ``config.yaml``, ``metrics.jsonl``, ``checkpoints/agent-<i>/`` (each actor, in the
learners' checkpoint format, so ``marlmesh eval``/``export`` work unchanged), ``checkpoints/central-critic/``,
``summary.json`` with ``eval.*`` from the usual evaluation (env service + N agent processes, each acting on its
own observation), and with ``train.tensorboard`` ``tensorboard/team/`` plus ``tensorboard/central-trainer/`` (the
trainer's update statistics as ``learner/*`` by update). The summary says ``centralized: true`` and
``label: "CENTRALIZED REFERENCE"``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from marlmesh.centralized import BANNER, CENTRALIZED_LABEL
from marlmesh.centralized.joint_env import JointEnv
from marlmesh.centralized.mappo import CentralMAPPO
from marlmesh.checkpoint import load_latest, save_checkpoint
from marlmesh.config import Config, ConfigError
from marlmesh.launch.summary import bus_summary, config_summary, evaluate_into, write_run_dir, write_summary
from marlmesh.stop_signals import StopSignals
from marlmesh.tensorboard import ScalarLog, team_log, tensorboard_root

TRAINER_RUN = "central-trainer"
"""TensorBoard run (folder under ``RUN_DIR/tensorboard``) of the central trainer's update statistics."""


def check_central(config: Config) -> None:
    """Reject settings that only make sense for the process mesh.

    Raises:
        ConfigError: Naming the key.
    """
    if config.faults:
        raise ConfigError(
            f"config key 'faults': algo.name=mappo-central ({CENTRALIZED_LABEL}) trains in one process; "
            "process and link faults need the decentralized mesh (remove 'faults')"
        )


def _save(trainer: CentralMAPPO, run_dir: Path, config: Config, env_steps: int) -> None:
    version = trainer.updates
    keep = config.train.checkpoint_keep
    for i, actor in enumerate(trainer.actors):
        payload = {
            "version": version,
            "updates": version,
            "samples_trained": env_steps,
            "policy": actor.state_dict(),
            "spec": actor.spec,
            "channel": config.channel.name,
            "centralized": True,
        }
        save_checkpoint(run_dir / "checkpoints" / f"agent-{i}", version, payload, keep)
    critic = {"version": version, "critic": trainer.critic.state_dict(), "optimizer": trainer.optimizer.state_dict()}
    save_checkpoint(run_dir / "checkpoints" / "central-critic", version, critic, keep)


def _resume(trainer: CentralMAPPO, run_dir: Path, out: TextIO) -> None:
    """Continue from the newest checkpoints of an earlier run in ``run_dir`` (like the learners resume)."""
    found = load_latest(run_dir / "checkpoints" / "central-critic")
    if found is None:
        return
    payload, path = found
    trainer.critic.load_state_dict(payload["critic"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    trainer.updates = int(payload["version"])
    for i, actor in enumerate(trainer.actors):
        got = load_latest(run_dir / "checkpoints" / f"agent-{i}")
        if got is not None:
            actor.load_state_dict(got[0]["policy"])
    out.write(f"resumed from {path} (update {trainer.updates})\n")


def train_central(config: Config, run_dir: Path, out: TextIO = sys.stdout, evaluate: bool = True) -> dict[str, object]:
    """Train mappo-central until the budget, evaluate, write ``summary.json``; returns the summary.

    SIGINT/SIGTERM stop after the current update and still write a summary (status ``interrupted``). An
    existing ``run_dir`` resumes from its newest checkpoints.

    Raises:
        ConfigError: If the config uses mesh-only settings (see :func:`check_central`).
    """
    check_central(config)
    config_path = write_run_dir(config, run_dir)
    torch.set_num_threads(config.train.torch_threads)
    out.write(f"marlmesh train: run directory {run_dir}\n{BANNER}\n")
    out.flush()
    stop = StopSignals()
    interrupted = stop.event
    start = time.monotonic()
    env = JointEnv(config, seed=config.seed, num_envs=config.env.num_envs)
    trainer = CentralMAPPO(config, env, seed=config.seed)
    _resume(trainer, run_dir, out)
    returns: list[float] = []
    next_seq, last_print = 0, 0.0
    budget = config.train.max_wall_seconds
    stats: dict[str, float] = {}
    board = team_log(config.train.tensorboard, run_dir)
    trainer_log = ScalarLog(tensorboard_root(run_dir) / TRAINER_RUN) if config.train.tensorboard else None
    try:
        with open(run_dir / "metrics.jsonl", "a") as metrics:
            while not interrupted.is_set() and env.env_steps < config.train.total_env_steps:
                if budget is not None and time.monotonic() - start >= budget:
                    out.write(f"wall-clock budget of {budget:.0f}s reached\n")
                    break
                progress = env.env_steps / config.train.total_env_steps
                if budget is not None:
                    progress = max(progress, (time.monotonic() - start) / budget)
                lr = trainer.set_progress(progress)
                stats = {**trainer.update(trainer.collect()), "lr": lr}
                _save(trainer, run_dir, config, env.env_steps)
                view = env.node.stats(episodes_from=next_seq, max_episodes=10_000)
                returns = (returns + [e.return_sum for e in view.recent])[-100:]
                next_seq = view.episodes
                elapsed = time.monotonic() - start
                rec = {
                    "wall_seconds": round(elapsed, 3),
                    "env_steps": env.env_steps,
                    "steps_per_second": round(env.env_steps / max(elapsed, 1e-9), 1),
                    "episodes": view.episodes,
                    "return_sum_recent_mean": float(np.mean(returns)) if returns else None,
                    "version": trainer.updates,
                    **{k: round(v, 6) for k, v in stats.items()},
                }
                metrics.write(json.dumps(rec) + "\n")
                metrics.flush()
                if board is not None and trainer_log is not None:
                    board.record(rec)
                    trainer_log.scalars("learner", {**stats, "version": trainer.updates}, trainer.updates)
                if elapsed - last_print >= 10.0 or env.env_steps >= config.train.total_env_steps:
                    ret = rec["return_sum_recent_mean"]
                    out.write(
                        f"[{CENTRALIZED_LABEL}] env steps {env.env_steps:,}/{config.train.total_env_steps:,}"
                        f" | update {trainer.updates} | return (last {len(returns)} ep) "
                        f"{'-' if ret is None else f'{ret:.1f}'} | {elapsed:.0f}s elapsed\n"
                    )
                    out.flush()
                    last_print = elapsed
    finally:
        episodes = env.node.stats(0, 0).episodes
        env.close()
        stop.restore()
        if trainer_log is not None:
            trainer_log.close()
    if trainer.updates == 0:  # evaluation needs a saved policy, even of an interrupted run
        _save(trainer, run_dir, config, env.env_steps)
    summary: dict[str, object] = {
        "run_dir": str(run_dir),
        "status": "interrupted" if interrupted.is_set() else "trained",
        "signal": stop.signal_name,
        "centralized": True,
        "label": CENTRALIZED_LABEL,
        "env_steps": env.env_steps,
        "episodes": episodes,
        "wall_seconds": round(time.monotonic() - start, 2),
        "train_return_sum_recent_mean": float(np.mean(returns)) if returns else None,
        "processes": [{"role": "central-trainer", "agent_id": -1, "pid": os.getpid()}],
        "exit_codes": {},
        "restarts": {},
        "restart_events": [],
        "replaced_processes": [],
        "faults": [],
        "bus": {**bus_summary([]), "trace": None},  # agents exchange nothing
        "learners": [{"role": "central-trainer", "version": trainer.updates, "last_losses": stats}],
        "config": {**config_summary(config), "centralized": True},
    }
    try:
        if evaluate and not interrupted.is_set():
            note = " (decentralized execution: each agent process acts on its own observation)"
            evaluate_into(summary, config, config_path, run_dir, out, note)
            if board is not None:
                board.evaluation(summary["eval"], env.env_steps)
    finally:
        if board is not None:
            board.close()
    write_summary(run_dir, summary)
    out.write(f"{BANNER}\nsummary: {run_dir / 'summary.json'}\n")
    out.flush()
    return summary

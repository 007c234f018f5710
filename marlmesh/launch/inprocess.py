"""``marlmesh train --launcher inprocess``: the same run in one process, for experiments.

The env (the env service's :class:`~env_service.node.EnvNode`, B copies), every agent's staged policy and every
agent's learner (the learner service's :class:`~learner_service.node.LearnerNode`, built by the configured
algorithm plugin) run in this process. Per env step it runs the one staged loop (:mod:`marlmesh.staged_loop`)
for all N agents over an in-process exchange (:func:`comm_bus.exchange.local_exchange`): the agents' buses on an
in-memory hub, so the links are emulated by the same code as on the mesh (link model, sim clock, lifespan,
drop causes, quantization, range, fate trace). Each learner sees only its own agent's fragments; there is no
central critic (``mappo-central``, the CENTRALIZED REFERENCE, has its own single-process trainer). The agents
act with the policy runtime ``train.agent_runtime`` names, as the mesh's agent processes do (:func:`agent_runtime`).

Weights are taken up in lockstep: when the agents' fragments are full, each learner trains on its agent's
fragment (the N learners side by side in threads) and the agent acts with the new version from that step on
(``train.weight_sync: lockstep`` on the mesh).
The run stops at :func:`marlmesh.lockstep.final_tick` or ``train.max_wall_seconds``. Under the sim clock a
lockstep run gives the same bus trace and byte-identical weights as the mesh launcher with the same config and
seed. It writes the mesh's run directory (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``tensorboard/``,
``bus_trace.bin``, ``summary.json`` with ``launcher: inprocess``) and evaluates the saved policies the same way
(env service and agent processes).

Not supported here (the config is refused at start, naming the key): the wall clock (``bus.clock``), process
faults (``faults`` of kind ``kill``), DG-MAPPO reward sharing and gossip (they exchange over the learners' and
agents' own bus endpoints, which this launcher does not run).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from marlmesh.config import Config, ConfigError
from marlmesh.launch.progress import EpisodeWindow, progress_line
from marlmesh.tensorboard import TeamLog
from marlmesh.weights_check import WeightsError, check_weights

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from marlmesh.policy_runtime import PolicyRuntime
    from marlmesh.policy_spec import PolicySpec

LAUNCHER = "inprocess"


def check_inprocess(config: Config) -> None:
    """Refuse settings the in-process launcher cannot honour.

    Raises:
        ConfigError: Naming the key and what to do instead.
    """
    hint = "; run it with --launcher mesh"
    if config.bus.clock != "sim":
        raise ConfigError(
            f"config key 'bus.clock': the in-process launcher runs every agent in one thread and needs the sim "
            f"clock, got {config.bus.clock!r} (--set bus.clock=sim){hint}"
        )
    for i, fault in enumerate(config.faults):
        if fault.kind not in ("partition", "degrade"):
            raise ConfigError(
                f"config key 'faults.{i}': fault kind {fault.kind!r} acts on processes, and the in-process "
                f"launcher has none{hint}"
            )
    dgmappo = config.algo.dgmappo
    for key, part in (("reward_sharing", dgmappo.reward_sharing), ("gossip", dgmappo.gossip)):
        if part.enabled:
            raise ConfigError(
                f"config key 'algo.dgmappo.{key}.enabled': {key} runs over the processes' own bus endpoints, "
                f"which the in-process launcher does not have{hint}"
            )


def agent_runtime(config: Config, channel: Any, spec: PolicySpec) -> PolicyRuntime:
    """The runtime an agent of the mesh acts with in training (``train.agent_runtime``), its sampler seeded alike.

    ``onnx``: the graphs its learner would hand out (:func:`~marlmesh.policies.onnx_export.training_graphs`),
    the weights fed in, evaluated by ``train.graph_engine``; ``torch``: the channel's torch policy.
    """
    from marlmesh.policy_runtime import sampler_seed

    seed = sampler_seed(config.seed, spec.agent_index)
    if config.train.agent_runtime == "onnx":
        from agent_service.runtime import OnnxRuntime
        from marlmesh.policies.onnx_export import training_graphs

        return OnnxRuntime.from_graphs(
            training_graphs(channel, spec),
            seed=seed,
            threads=config.train.torch_threads,
            engine=config.train.graph_engine,
        )
    from marlmesh.policies.torch_runtime import TorchRuntime

    return TorchRuntime(channel.build_policy(spec), seed=seed)


class InProcessTeam:
    """The env, N agents and their N learners of one run, stepped together in this process.

    Args:
        config: The run's config.
        run_dir: Checkpoints go to ``run_dir/checkpoints/agent-<i>``, bus fate records to ``run_dir/traces/``
            and, with ``train.tensorboard``, each learner's scalars to ``run_dir/tensorboard/learner-<i>``
            (None: none of them, e.g. for benchmarks).
    """

    def __init__(self, config: Config, run_dir: Path | None) -> None:
        import torch

        from agent_service.node import AgentCounters
        from comm_bus.exchange import local_exchange
        from comm_bus.faults import LinkFaults
        from learner_service.node import LearnerNode
        from marlmesh import plugins
        from marlmesh.centralized.joint_env import JointEnv
        from marlmesh.lockstep import final_tick
        from marlmesh.rollout import RolloutRecorder
        from marlmesh.tensorboard import ScalarLog, learner_run, tensorboard_root

        torch.set_num_threads(config.train.torch_threads)
        self.config = config
        self.joint = JointEnv(config, seed=config.seed, num_envs=config.env.num_envs)
        self.num_agents = n = self.joint.num_agents
        self.num_envs = self.joint.num_envs
        self.channel = plugins.load("channels", config.channel.name)(config.channel)
        specs = self.joint.specs
        ckpt = None if run_dir is None else run_dir / "checkpoints"
        self.scalar_logs = (
            [ScalarLog(tensorboard_root(run_dir) / learner_run(i)) for i in range(n)]
            if run_dir is not None and config.train.tensorboard
            else [None] * n
        )
        self.learners = [
            LearnerNode(config, spec, None if ckpt is None else ckpt / f"agent-{i}", scalars=self.scalar_logs[i])
            for i, spec in enumerate(specs)
        ]
        self.runtimes = {i: agent_runtime(config, self.channel, spec) for i, spec in enumerate(specs)}
        self.counters = [AgentCounters() for _ in range(n)]
        for i in range(n):
            self._take_up_weights(i)
        self.recorders = [
            RolloutRecorder(
                config.train.rollout_steps,
                self.num_envs,
                spec.obs_shape,
                spec.action_space,
                self.channel.rounds,
                n,
                spec.message_dim,
            )
            for spec in specs
        ]
        if run_dir is not None and config.bus.trace.enabled:
            (run_dir / "traces").mkdir(parents=True, exist_ok=True)
        self.exchange = (
            local_exchange(
                n,
                config=config.bus,
                seed=config.seed,
                rounds=self.channel.rounds,
                max_frame_bytes=config.runtime.max_message_bytes,
                trace_path=None if run_dir is None else (lambda i: run_dir / "traces" / f"train-agent-{i}.rec"),
                faults=LinkFaults.from_config(config.faults),
            )
            if self.channel.rounds > 0
            else None
        )
        self.final_tick = final_tick(config.train.total_env_steps, self.num_envs, config.train.rollout_steps)
        self.finished = False
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="learner")

    def _take_up_weights(self, i: int) -> None:
        """Act with learner ``i``'s newest published version (as an agent loads the weights it receives)."""
        counters = self.counters[i]
        newer = self.learners[i].wait_newer(counters.policy_version, 0.0)
        if newer is not None:
            try:  # the learner never publishes non-finite parameters; checked as an agent process checks them
                check_weights(newer.params, self.runtimes[i].param_shapes())
            except WeightsError as exc:
                counters.weights_rejected[exc.cause] += 1
                log.error("agent %d refused weights version %d: %s", i, newer.version, exc)
                return
            self.runtimes[i].load_params(newer.params)
            counters.policy_version = newer.version
            counters.weights_loaded += 1

    @property
    def env_steps(self) -> int:
        """Single-env steps so far, summed over the B copies."""
        return self.joint.env_steps

    def step(self) -> None:
        """One env step of every agent: the staged loop, lockstep training on full fragments, act, env step."""
        from marlmesh.staged_loop import act, communicate, restage

        views = dict(enumerate(self.joint.views))
        staged = communicate(self.channel, self.runtimes, views, self.exchange, num_agents=self.num_agents)
        for i, mine in staged.items():
            self.counters[i].count_rounds(mine)
        if self.recorders[0].full:  # every agent's fragment fills at the same step
            for i, learner in enumerate(self.learners):
                learner.submit(i, self.recorders[i].finish(views[i].obs, staged[i].inboxes))
            # the learners share nothing: they train side by side (torch releases the GIL in its kernels)
            list(self._pool.map(lambda learner: learner.train_next(timeout=0.0), self.learners))
            for i in range(self.num_agents):
                self._take_up_weights(i)
                staged[i].state = restage(self.runtimes[i], views[i].obs, staged[i].inboxes)
        if views[0].tick >= self.final_tick:
            self.finished = True
            return
        actions = []
        for i, runtime in self.runtimes.items():
            action, logp, out = act(runtime, staged[i], deterministic=False)
            self.recorders[i].add_decision(
                views[i].obs, staged[i].inboxes, action, logp, out.value, self.counters[i].policy_version
            )
            actions.append(action)
        for i, nxt in enumerate(self.joint.step(actions)):
            self.recorders[i].add_outcome(nxt.reward, nxt.terminated, nxt.truncated, nxt.final_obs, nxt.cost)
            self.counters[i].steps += 1
            self.counters[i].env_steps += self.num_envs

    def agent_stats(self) -> list[dict[str, object]]:
        """Every agent's counters, with the keys an agent process writes to its stats file."""
        out = []
        for i, c in enumerate(self.counters):
            bus = None if self.exchange is None else self.exchange.buses[i]
            learner = self.learners[i]
            out.append(
                {
                    "role": "agent",
                    "agent_id": i,
                    "pid": os.getpid(),
                    "runtime": self.config.train.agent_runtime,
                    **c.as_dict(self.channel.rounds),
                    "finished": self.finished,
                    "bus": None if bus is None else bus.totals.as_dict(),
                    "bus_trace": None if bus is None else bus.trace_status(),
                    "fragments_created": learner.fragments_received,
                    "fragments_sent": learner.fragments_received,
                    "fragments_dropped": {},
                    "weights_versions_received": c.weights_loaded,
                }
            )
        return out

    def learner_stats(self) -> list[dict[str, object]]:
        """Every learner's status, with the keys a learner process writes to its stats file."""
        return [
            {"role": "learner", "agent_id": i, "pid": os.getpid(), **learner.status()}
            for i, learner in enumerate(self.learners)
        ]

    def close(self) -> None:
        """Close the exchange (and its trace files), the learners and the env copies."""
        if self.exchange is not None:
            self.exchange.close()
        self._pool.shutdown(wait=True)
        for learner in self.learners:
            learner.close()
        for scalar_log in self.scalar_logs:
            if scalar_log is not None:
                scalar_log.close()
        self.joint.close()


class _Metrics:
    """``metrics.jsonl`` records and the console progress line, as the mesh launcher writes them.

    Every record also goes to ``team_log`` as TensorBoard scalars, if given.
    """

    def __init__(self, team: InProcessTeam, path: Path, out: TextIO, team_log: TeamLog | None) -> None:
        self.team = team
        self.team_log = team_log
        self.file = open(path, "a")  # noqa: SIM115 (closed in close())
        self.out = out
        self.window = EpisodeWindow()
        self.episodes = 0
        self.start = time.monotonic()
        self.last_print = -1e9

    def record(self) -> None:
        node = self.team.joint.node
        stats = node.stats(episodes_from=self.window.next_seq, max_episodes=10_000)
        self.window.add(stats.recent)
        self.episodes = stats.episodes
        elapsed = time.monotonic() - self.start
        rec: dict[str, object] = {
            "wall_seconds": round(elapsed, 3),
            "env_steps": self.team.env_steps,
            "steps_per_second": round(self.team.env_steps / max(elapsed, 1e-9), 1),
            "episodes": stats.episodes,
            **self.window.fields(),
            "default_actions": {},
            "learners": [
                {
                    "agent_id": i,
                    "version": learner.version,
                    "samples_trained": learner.samples_trained,
                    "fragments_received": learner.fragments_received,
                    "fragments_dropped": dict(learner.dropped),
                    **{k: round(v, 6) for k, v in learner.last_stats.items()},
                }
                for i, learner in enumerate(self.team.learners)
            ],
        }
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.team_log is not None:
            self.team_log.record(rec)
        if elapsed - self.last_print >= 10.0 or self.team.finished:
            self.out.write(f"[{LAUNCHER}] {progress_line(rec, len(self.window.returns), self.team.config)}\n")
            self.out.flush()
            self.last_print = elapsed

    def close(self) -> None:
        self.file.close()


def train_inprocess(
    config: Config, run_dir: Path, out: TextIO = sys.stdout, evaluate: bool = True
) -> dict[str, object]:
    """Train in this process, evaluate and write ``summary.json`` (the mesh's contract); returns the summary.

    SIGINT/SIGTERM stop after the current step and still write a summary (status ``interrupted``).

    Raises:
        ConfigError: If the config needs the mesh (see :func:`check_inprocess`).
    """
    from marlmesh import plugins
    from marlmesh.launch.summary import (
        bus_summary,
        config_summary,
        evaluate_into,
        merge_bus_trace,
        plot_curves,
        rejected_summary,
        write_run_dir,
        write_summary,
    )
    from marlmesh.launch.train import train
    from marlmesh.lockstep import reproducibility
    from marlmesh.stop_signals import StopSignals
    from marlmesh.tensorboard import team_log

    if plugins.load("algos", config.algo.name).centralized:  # already one process
        return train(config, run_dir, out, evaluate)
    check_inprocess(config)
    if config.train.weight_sync != "lockstep":
        out.write("note: the in-process launcher takes up weights in lockstep (train.weight_sync=lockstep)\n")
        config = config.model_copy(deep=True)
        config.train.weight_sync = "lockstep"
    config_path = write_run_dir(config, run_dir)
    out.write(
        f"marlmesh train: run directory {run_dir}\n"
        f"launcher {LAUNCHER}: env, {config.algo.name} agents and learners in one process (for experiments; "
        "the mesh is --launcher mesh)\n"
    )
    out.flush()
    stop = StopSignals()
    start = time.monotonic()
    team = InProcessTeam(config, run_dir)
    board = team_log(config.train.tensorboard, run_dir)
    metrics = _Metrics(team, run_dir / "metrics.jsonl", out, board)
    budget = config.train.max_wall_seconds
    interval = config.runtime.progress_interval_s
    next_record = interval
    try:
        while not stop.event.is_set() and not team.finished:
            if budget is not None and time.monotonic() - start >= budget:
                out.write(f"wall-clock budget of {budget:.0f}s reached\n")
                break
            team.step()
            if team.finished or time.monotonic() - start >= next_record:
                metrics.record()
                next_record += interval
    finally:
        metrics.close()
        team.close()
        stop.restore()
    agent_stats, learner_stats = team.agent_stats(), team.learner_stats()
    bus = {**bus_summary(agent_stats), "trace": merge_bus_trace(config, run_dir, agent_stats)}
    interrupted = stop.event.is_set()
    summary: dict[str, object] = {
        "run_dir": str(run_dir),
        "launcher": LAUNCHER,
        "status": "interrupted" if interrupted else "trained",
        "signal": stop.signal_name,
        "env_steps": team.env_steps,
        "episodes": metrics.episodes,
        "wall_seconds": round(time.monotonic() - start, 2),
        "train_return_sum_recent_mean": metrics.window.fields()["return_sum_recent_mean"],
        "processes": [{"role": LAUNCHER, "agent_id": -1, "pid": os.getpid()}],
        "exit_codes": {},
        "ports": {},
        "restarts": {},
        "restart_events": [],
        "replaced_processes": [],
        "faults": [],
        "bus": bus,
        "reproducibility": reproducibility(
            config,
            round_timeouts=int(bus["dropped"].get("round_timeout", 0)),
            default_actions=0,
            fragments_lost=0,
            restarts=0,
            stopped_early=not team.finished,
        ),
        "rejected": rejected_summary(agent_stats, learner_stats),
        "agents": agent_stats,
        "learners": learner_stats,
        "config": config_summary(config),
    }
    try:
        if evaluate and not interrupted:
            evaluate_into(summary, config, config_path, run_dir, out)
            if board is not None:
                board.evaluation(summary["eval"], team.env_steps)
    finally:
        if board is not None:
            board.close()
    write_summary(run_dir, summary)
    plot_curves(run_dir)
    out.write(f"summary: {run_dir / 'summary.json'}\n")
    out.flush()
    return summary

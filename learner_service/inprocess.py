"""In-process training harness: the same learner code as the mesh, without processes, gRPC or ZeroMQ.

Diagnosis tool for learning quality. One Python process holds a :class:`~marlmesh.centralized.joint_env.JointEnv`
(the env service's ``EnvNode``: B env copies, autoreset and truncation semantics), one actor policy per agent (a
:class:`~agent_service.runtime.TorchRuntime`, as in the agent process), one
:class:`~marlmesh.rollout.RolloutRecorder` per agent (the agent's fragment layout) and one learner per agent
built by the configured algorithm plugin (the learner process's code). Messages go straight from each agent's
outbox to its peers' inboxes (ideal links, every peer heard). With ``algo.dgmappo.gossip.enabled`` the learners'
parameters are mixed as the mesh's gossip does (``period``, ``rounds``, Metropolis-Hastings weights), on the
complete graph (every peer heard) and without link limits.

The distributed run's policy lag can be emulated: with ``policy_lag=L`` the actors act with the parameters of
``L`` updates ago, so a curve here at lag 0 vs lag 1-2 shows what the asynchrony costs per env step.

Run: ``python -m learner_service.inprocess -c configs/default.yaml --env-steps 600000 [--policy-lag 1]
[--eval-episodes 100]`` (the last adds a greedy evaluation, as ``marlmesh eval`` does, to every log line).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agent_service.runtime import TorchRuntime
from learner_service.gossip import flatten, metropolis_weights, unflatten
from learner_service.node import load_policy_params, policy_params
from marlmesh import plugins
from marlmesh.centralized.joint_env import JointEnv
from marlmesh.checkpoint import save_checkpoint
from marlmesh.config import Config, dump_config, load_config
from marlmesh.rollout import RolloutRecorder


def ideal_inboxes(outboxes: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each agent's inbox when every peer is heard: ``msgs[b, j] = outbox_j[b]``, mask 1 except for self."""
    n = len(outboxes)
    msgs = np.stack(outboxes, axis=1).astype(np.float32)  # [B, N, M]
    out = []
    for i in range(n):
        mask = np.ones((msgs.shape[0], n), np.float32)
        mask[:, i] = 0.0
        own = msgs.copy()
        own[:, i] = 0.0
        out.append((own, mask))
    return out


def ideal_rounds(actors: list[TorchRuntime], obs: list[np.ndarray], rounds: int) -> tuple[list, list, list]:
    """Run every agent's stages up to acting, every peer heard (ideal links).

    Args:
        actors: One runtime per agent.
        obs: One ``[B, ...]`` observation batch per agent.
        rounds: The channel's communication rounds per env step.

    Returns:
        ``(states, outboxes, inboxes)`` per agent; ``inboxes[i]`` holds one inbox per round, ready for ``act``.
    """
    states, outboxes = [], []
    for actor, ob in zip(actors, obs, strict=True):
        state, outbox = actor.encode(ob)
        states.append(state)
        outboxes.append(outbox)
    inboxes: list[list] = [[] for _ in actors]
    for k in range(rounds):
        heard = ideal_inboxes(outboxes)
        for i, actor in enumerate(actors):
            inboxes[i].append(heard[i])
            if k + 1 < rounds:
                states[i], outboxes[i] = actor.round(k + 1, states[i], heard[i])
    return states, outboxes, inboxes


class InProcessTrainer:
    """N agents and their learners on one EnvNode, stepped in lock step (see the module docstring).

    Args:
        config: The run's config (env, channel, algo, train.rollout_steps).
        policy_lag: Updates by which the actors' parameters trail the learners' (0 = on-policy).
    """

    def __init__(self, config: Config, policy_lag: int = 0) -> None:
        self.config = config
        self.joint = JointEnv(config, seed=config.seed, num_envs=config.env.num_envs)
        self.env = self.joint.node
        self.n = self.joint.num_agents
        self.channel = plugins.load("channels", config.channel.name)(config.channel)
        algo = plugins.load("algos", config.algo.name)()
        self.learners = [algo.build_learner(config, spec, self.channel) for spec in self.joint.specs]
        self.actors = self._actors()
        self.recorders = [
            RolloutRecorder(
                config.train.rollout_steps,
                self.joint.num_envs,
                spec.obs_shape,
                spec.action_space,
                self.channel.rounds,
                self.n,
                config.channel.message_dim,
            )
            for spec in self.joint.specs
        ]
        self.policy_lag = policy_lag
        self._history: list[collections.deque] = [collections.deque(maxlen=policy_lag + 1) for _ in range(self.n)]
        for i in range(self.n):
            self._history[i].append(policy_params(self.learners[i].policy))
        self.obs = self.joint.views
        self.version = 0

    def _actors(self) -> list[TorchRuntime]:
        """One actor per agent, acting with its learner's current parameters."""
        actors = []
        for spec, learner in zip(self.joint.specs, self.learners, strict=True):
            actor = TorchRuntime(self.channel.build_policy(spec))
            actor.load_params(policy_params(learner.policy))
            actors.append(actor)
        return actors

    def _decide(self, actors: list[TorchRuntime], views: list) -> tuple[list, list, list]:
        return ideal_rounds(actors, [np.asarray(v.obs, np.float32) for v in views], self.channel.rounds)

    def step(self) -> list[dict[str, np.ndarray]]:
        """One env step of every agent; returns the fragments completed before it (empty or one per agent)."""
        states, _, inboxes = self._decide(self.actors, self.obs)
        fragments = []
        if self.recorders[0].full:
            fragments = [rec.finish(self.obs[i].obs, inboxes[i]) for i, rec in enumerate(self.recorders)]
        actions = []
        for i, actor in enumerate(self.actors):
            out = actor.act(states[i], inboxes[i])
            action, logp = actor.sample(out, deterministic=False)
            self.recorders[i].add_decision(self.obs[i].obs, inboxes[i], action, logp, out.value, self.version)
            actions.append(action)
        self.obs = self.joint.step(actions)
        for rec, nxt in zip(self.recorders, self.obs, strict=True):
            rec.add_outcome(nxt.reward, nxt.terminated, nxt.truncated, nxt.final_obs, nxt.cost)
        return fragments

    def train(self, fragments: list[dict[str, np.ndarray]], progress: float = 0.0) -> dict[str, float]:
        """Update every learner on its fragment and hand the (possibly lagged) parameters to the actors.

        Args:
            fragments: One fragment per agent.
            progress: Share of the training budget used (anneals the learning rate with ``algo.ppo.anneal_lr``).
        """
        stats = {}
        for learner, frag in zip(self.learners, fragments, strict=True):
            lr = learner.set_progress(progress)
            stats = {**learner.update(frag), "lr": lr}
        gossip = self.config.algo.dgmappo.gossip  # config validation allows it only with algo dgmappo
        if gossip.enabled and (self.version + 1) % gossip.period == 0:
            self._mix(gossip.rounds)
        for i, learner in enumerate(self.learners):
            self._history[i].append(policy_params(learner.policy))
            self.actors[i].load_params(self._history[i][0])
        self.version += 1
        return stats

    def _mix(self, rounds: int) -> None:
        """Gossip on the complete graph: ``rounds`` times ``theta_i <- sum_j W_ij theta_j`` (Metropolis-Hastings)."""
        weights = metropolis_weights(np.ones((self.n, self.n), bool))
        own = [policy_params(learner.policy) for learner in self.learners]
        mixed = np.linalg.matrix_power(weights, rounds) @ np.stack([flatten(p) for p in own])
        for learner, theta, like in zip(self.learners, mixed, own, strict=True):
            load_policy_params(learner.policy, unflatten(theta.astype(np.float32), like))

    def recent_return(self, episodes: int = 200) -> float:
        """Mean summed return of the last ``episodes`` finished (training, sampled actions) episodes."""
        st = self.env.stats(episodes_from=max(0, self.env.stats(0, 0).episodes - episodes), max_episodes=episodes)
        return float(np.mean([e.return_sum for e in st.recent])) if st.recent else float("nan")

    def evaluate(self, episodes: int, num_envs: int, seed: int) -> tuple[float, float]:
        """Mean and std of the summed return of ``episodes`` greedy episodes with the learners' current weights.

        Runs on its own env copies (seeded ``seed + b``, as ``marlmesh eval`` does), so training is not
        disturbed.
        """
        actors = self._actors()
        joint = JointEnv(self.config, seed=seed, num_envs=num_envs)
        try:
            views = joint.views
            while joint.node.stats(0, 0).episodes < episodes:
                states, _, inboxes = self._decide(actors, views)
                actions = []
                for i, actor in enumerate(actors):
                    action, _ = actor.sample(actor.act(states[i], inboxes[i]), deterministic=True)
                    actions.append(action)
                views = joint.step(actions)
            returns = [e.return_sum for e in joint.node.stats(0, episodes).recent]
        finally:
            joint.close()
        return float(np.mean(returns)), float(np.std(returns))

    def save(self, run_dir: Path) -> None:
        """Write every learner's current policy as ``run_dir/checkpoints/agent-<i>``.

        The learners' checkpoint format, newest only, so that :mod:`marlmesh.spread_diagnostics` can play it.
        """
        for i, learner in enumerate(self.learners):
            save_checkpoint(
                run_dir / "checkpoints" / f"agent-{i}", self.version, {"policy": learner.policy.state_dict()}, 1
            )

    def close(self) -> None:
        """Stop the step threads and the env copies."""
        self.joint.close()


def main(argv: list[str] | None = None) -> int:
    """CLI: train in process and print one JSON line per ``--log-every`` env steps."""
    parser = argparse.ArgumentParser(prog="python -m learner_service.inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env-steps", type=int, default=600_000)
    parser.add_argument("--policy-lag", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50_000)
    parser.add_argument(
        "--eval-episodes", type=int, default=0, help="greedy evaluation episodes at every log line (0 = none)"
    )
    parser.add_argument(
        "--save-dir",
        type=Path,
        default=None,
        help="write config.yaml and, at every log line, the policies as checkpoints/agent-<i> (for "
        "python -m marlmesh.spread_diagnostics)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    if args.save_dir is not None:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        (args.save_dir / "config.yaml").write_text(dump_config(config))
    if (model := config.bus.links.resolved_model()) != "ideal":
        print(
            f"note: {args.config} sets bus link model {model!r}; "
            "this harness runs ideal links (every peer heard at once)",
            file=sys.stderr,
            flush=True,
        )
    torch.set_num_threads(1)
    trainer = InProcessTrainer(config, policy_lag=args.policy_lag)
    start = time.monotonic()
    next_log = args.log_every
    try:
        stats: dict[str, float] = {}
        while trainer.env.env_steps < args.env_steps:
            fragments = trainer.step()
            if fragments:
                stats = trainer.train(fragments, trainer.env.env_steps / args.env_steps)
            if trainer.env.env_steps >= next_log:
                next_log += args.log_every
                line = {
                    "env_steps": trainer.env.env_steps,
                    "seconds": round(time.monotonic() - start, 1),
                    "updates": trainer.version,
                    "train_return_recent": round(trainer.recent_return(), 2),
                    **{k: round(v, 4) for k, v in stats.items() if k != "samples"},
                }
                if args.eval_episodes:
                    mean, std = trainer.evaluate(
                        args.eval_episodes, config.eval.num_envs, config.seed + config.eval.seed_offset
                    )
                    line.update(eval_return_mean=round(mean, 2), eval_return_std=round(std, 2))
                if args.save_dir is not None:
                    trainer.save(args.save_dir)
                print(json.dumps(line), flush=True)
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

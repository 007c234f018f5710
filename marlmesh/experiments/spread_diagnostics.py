"""Where a simple_spread policy loses return: landmark coverage over the episode, next to the scripted controller.

``python -m marlmesh.spread_diagnostics RUN_DIR [--episodes 100]`` loads the newest checkpoint of every agent
of a finished run (``RUN_DIR/config.yaml``, ``RUN_DIR/checkpoints/agent-i``), plays greedy episodes in this
process through the staged loop over ideal links (an in-process exchange, every peer heard) and prints, per step, the
sum over landmarks of the distance to the nearest agent (what the shared reward penalises), plus how many
episodes end with a landmark uncovered and with two agents nearest the same landmark. ``RUN_DIR`` may also be
``scripted`` (the scripted controller of :mod:`marlmesh.experiments.baselines`, on ``--config``'s env), the
reference, or one of its variants ``scripted-priority`` and ``scripted-fixed``.

It also shows which landmark each agent ends at (its *assignment*), and so which convention the agents play:

- ``roles_share``: the share of episodes that end with the run's most frequent assignment. Near 1 means fixed
  roles (agent i always takes the same landmark, whatever the positions). No fixed-role policy can beat
  ``scripted-fixed``'s return (about -36 on simple_spread N=3), so a run that plays fixed roles is capped there.
- ``optimal_share``: the share of episodes that end with the assignment of least summed distance from the
  agents' start positions (what the Hungarian ``scripted`` controller plays, about 0.9).
- ``path_ratio_median``: the median over agents of the path travelled divided by the straight-line distance
  from its start to the landmark it ends at (1 = a straight line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from comm_bus.exchange import local_exchange
from marlmesh import plugins
from marlmesh.checkpoint import load_latest
from marlmesh.config import BusConfig, Config, load_config
from marlmesh.deploy.export import policy_specs
from marlmesh.envs import make_env
from marlmesh.experiments.baselines import SPREAD, best_assignment, make_policy
from marlmesh.policies.torch_runtime import TorchRuntime
from marlmesh.spaces import SpaceSpec
from marlmesh.staged_loop import StepView, act, communicate

COVERED = 0.2
"""A landmark counts as covered when an agent is within this distance (env units) at the episode's end."""


@dataclass
class SpreadReport:
    """Coverage statistics of greedy simple_spread episodes.

    Attributes:
        episodes: Episodes played.
        return_mean: Mean summed (over agents) return.
        return_std: Its standard deviation.
        collisions_mean: Agent pairs overlapping, summed over the steps of an episode.
        distance_by_step: Mean over episodes of ``sum over landmarks of min over agents distance`` after each step.
        uncovered_at_end: Episodes whose last step leaves a landmark farther than :data:`COVERED` from every agent.
        shared_at_end: Episodes whose last step has two agents nearest the same landmark.
        roles_share: Share of the episodes that end with the most frequent assignment (see the module docstring).
        common_assignment: That assignment: the landmark index each agent ends nearest to.
        optimal_share: Share of the episodes that end with the assignment of least summed start distance.
        path_ratio_median: Median of path length / straight-line distance to the landmark an agent ends at.
    """

    episodes: int
    return_mean: float
    return_std: float
    collisions_mean: float
    distance_by_step: list[float]
    uncovered_at_end: int
    shared_at_end: int
    roles_share: float
    common_assignment: list[int]
    optimal_share: float
    path_ratio_median: float


def load_actors(run_dir: Path, config: Config) -> list[TorchRuntime]:
    """One greedy runtime per agent with the newest valid checkpoint of ``run_dir``.

    Raises:
        FileNotFoundError: If an agent has no checkpoint.
    """
    channel = plugins.load("channels", config.channel.name)(config.channel)
    actors = []
    for spec in policy_specs(config):
        found = load_latest(run_dir / "checkpoints" / f"agent-{spec.agent_index}")
        if found is None:
            raise FileNotFoundError(f"no checkpoint of agent {spec.agent_index} in {run_dir / 'checkpoints'}")
        policy = channel.build_policy(spec)
        policy.load_state_dict(found[0]["policy"])
        actors.append(TorchRuntime(policy))
    return actors


def diagnose(
    config: Config, actors: list[TorchRuntime] | None, episodes: int, seed: int, baseline: str = "scripted"
) -> SpreadReport:
    """Play ``episodes`` greedy episodes (episode e reset with ``seed + e``) and measure landmark coverage.

    Args:
        config: The run's config (its env must be an mpe2 simple_spread).
        actors: Learned policies, one per agent; None = the scripted controller named by ``baseline``.
        episodes: Episodes to play.
        seed: Env seed of the first episode.
        baseline: ``scripted``, ``scripted-priority`` or ``scripted-fixed`` (used when ``actors`` is None).

    Raises:
        ValueError: If the env has no MPE world with landmarks.
    """
    env = make_env(config.env)
    world = getattr(env.unwrapped, "world", None)
    if world is None or not getattr(world, "landmarks", None):
        raise ValueError(f"env {config.env.name!r} has no MPE world with landmarks (simple_spread is needed)")
    agents = list(env.possible_agents)
    n = len(agents)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    exchange = local_exchange(n, config=BusConfig(), rounds=channel.rounds) if channel.rounds else None
    tick = 0
    scripted = (
        [
            make_policy(
                baseline,
                config.env.name,
                i,
                n,
                SpaceSpec.from_gym(env.action_space(a)),
                env.observation_space(a).shape[0],
                seed,
            )
            for i, a in enumerate(agents)
        ]
        if actors is None
        else []
    )
    horizon = int(getattr(env.unwrapped, "max_cycles", 25))
    distance = np.zeros(horizon)
    steps_seen = np.zeros(horizon)
    returns, collisions, uncovered, shared = [], [], 0, 0
    finals: Counter[tuple[int, ...]] = Counter()
    optimal, path_ratios = 0, []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        world = env.unwrapped.world
        start = np.array([ag.state.p_pos for ag in world.agents])
        marks = np.array([lm.state.p_pos for lm in world.landmarks])
        travelled = np.zeros(n)
        total, t, hits = 0.0, 0, 0
        dist = np.zeros((n, len(world.landmarks)))
        pos = start
        while env.agents:
            batch = [np.asarray(obs[a], np.float32)[None] for a in agents]
            if actors is None:
                acts = [policy.act(ob)[0] for policy, ob in zip(scripted, batch, strict=True)]
            else:
                views = {i: StepView(tick, batch[i], range(n)) for i in range(n)}
                staged = communicate(channel, dict(enumerate(actors)), views, exchange, num_agents=n)
                acts = [act(actor, staged[i], deterministic=True)[0][0] for i, actor in enumerate(actors)]
                tick += 1
            obs, rewards, _, _, _ = env.step({a: _env_action(x) for a, x in zip(agents, acts, strict=True)})
            total += float(sum(rewards.values()))
            world = env.unwrapped.world
            moved = np.array([ag.state.p_pos for ag in world.agents])
            travelled += np.linalg.norm(moved - pos, axis=1)
            pos = moved
            dist = np.linalg.norm(pos[:, None] - marks[None], axis=-1)
            if t < horizon:
                distance[t] += dist.min(0).sum()
                steps_seen[t] += 1
            sizes = [ag.size for ag in world.agents]
            hits += sum(
                np.linalg.norm(pos[x] - pos[y]) < sizes[x] + sizes[y] for x in range(n) for y in range(x + 1, n)
            )
            t += 1
        uncovered += int((dist.min(0) > COVERED).any())
        final = tuple(int(k) for k in dist.argmin(1))
        shared += int(len(set(final)) < n)
        finals[final] += 1
        start_dist = np.linalg.norm(start[:, None] - marks[None], axis=-1)
        optimal += int(final == tuple(best_assignment(start_dist).tolist()))
        path_ratios.extend(travelled / np.maximum(start_dist[range(n), final], 1e-3))
        returns.append(total)
        collisions.append(hits)
    env.close()
    if exchange is not None:
        exchange.close()
    return SpreadReport(
        episodes=episodes,
        return_mean=float(np.mean(returns)),
        return_std=float(np.std(returns)),
        collisions_mean=float(np.mean(collisions)),
        distance_by_step=[round(float(d), 4) for d in distance / np.maximum(steps_seen, 1)],
        uncovered_at_end=uncovered,
        shared_at_end=shared,
        roles_share=finals.most_common(1)[0][1] / episodes if episodes else 0.0,
        common_assignment=list(finals.most_common(1)[0][0]) if episodes else [],
        optimal_share=optimal / episodes if episodes else 0.0,
        path_ratio_median=round(float(np.median(path_ratios)), 3) if path_ratios else 0.0,
    )


def _env_action(action: np.ndarray) -> int | np.ndarray:
    return int(action) if np.ndim(action) == 0 else np.asarray(action)


def main(argv: list[str] | None = None) -> int:
    """CLI: print a coverage report of a run (or of the scripted controller)."""
    parser = argparse.ArgumentParser(prog="python -m marlmesh.spread_diagnostics", description=__doc__.split("\n")[0])
    scripted = list(SPREAD.baselines)
    parser.add_argument(
        "run", help=f"run directory with config.yaml and checkpoints/, or a scripted controller ({', '.join(scripted)})"
    )
    parser.add_argument(
        "-c", "--config", type=Path, default=Path("configs/dgmappo.yaml"), help="env for a scripted controller"
    )
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5000, help="env seed of the first episode")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if args.run in scripted:
            config, actors = load_config(args.config, []), None
        else:
            run_dir = Path(args.run)
            config = load_config(run_dir / "config.yaml", [])
            actors = load_actors(run_dir, config)
        report = diagnose(config, actors, args.episodes, args.seed, args.run if actors is None else "scripted")
    except (FileNotFoundError, ValueError) as exc:
        print(f"spread_diagnostics: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    print(
        f"{report.episodes} greedy episodes: return {report.return_mean:.2f} ± {report.return_std:.2f}, "
        f"{report.collisions_mean:.2f} collisions/episode"
    )
    print("sum over landmarks of the distance to the nearest agent, by step:")
    print("  " + " ".join(f"{d:.2f}" for d in report.distance_by_step))
    print(
        f"episodes ending with a landmark farther than {COVERED} from every agent: {report.uncovered_at_end}; "
        f"with two agents nearest the same landmark: {report.shared_at_end}"
    )
    print(
        f"landmark each agent ends at: {report.roles_share:.0%} of episodes end with the same assignment "
        f"{report.common_assignment} (fixed roles when near 100 %), {report.optimal_share:.0%} with the one of least "
        f"summed distance from the start; path / straight line (median): {report.path_ratio_median:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

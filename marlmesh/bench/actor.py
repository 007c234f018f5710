"""``marlmesh bench actor``: what the entity actor costs against the MLP actor, measured in the same run.

For one config (default ``configs/dgmappo.yaml``: dgmappo, two-stream D-GAT actor) it builds agent 0's policy
twice, with ``algo.ppo.actor_net`` ``mlp`` (the baseline) and ``entity``, and times on one thread:

- **decision**: every stage of one env step for ``env.num_envs`` copies, no gradient (what an agent process
  does per step);
- **update**: one PPO minibatch (``train.rollout_steps * env.num_envs / algo.ppo.minibatches`` samples):
  log-probabilities, entropy and values of recorded inputs, then the backward pass (what a learner does
  ``epochs * minibatches`` times per update).

The two actors alternate in rounds so that load on a shared machine hits both alike; the result holds the
median seconds of each and the ratios ``entity / mlp``. Observations and messages are random, the weights
freshly initialised: the cost does not depend on their values.

    marlmesh bench actor [-c CONFIG] [--set KEY=VALUE]... [--rounds 20] [--json] [--out FILE]
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from marlmesh.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "dgmappo.yaml"
ACTOR_NETS = ("mlp", "entity")


def add_arguments(p: Any) -> None:
    """Flags of ``marlmesh bench actor``."""
    p.add_argument("-c", "--config", type=Path, default=None, help=f"YAML config (default: {DEFAULT_CONFIG.name})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--rounds", type=int, default=20, help="alternating rounds (each times both actors)")
    p.add_argument("--repeats", type=int, default=10, help="decisions and minibatches timed per round and actor")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")


def _minibatch_size(config: Config) -> int:
    """Samples in one PPO minibatch: ``train.rollout_steps * env.num_envs / algo.ppo.minibatches``."""
    return max(1, config.train.rollout_steps * config.env.num_envs // config.algo.ppo.minibatches)


def _timers(config: Config, seed: int) -> tuple[Any, Any]:
    """(decision, update) callables for agent 0's policy under ``config``."""
    import torch

    from marlmesh import plugins
    from marlmesh.deploy.export import policy_specs

    torch.manual_seed(seed)
    spec = policy_specs(config)[0]
    policy = plugins.load("channels", config.channel.name)(config.channel).build_policy(spec)
    gen = torch.Generator().manual_seed(seed)

    def inputs(batch: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        obs = torch.randn((batch, *spec.obs_shape), generator=gen)
        inboxes = []
        for _ in range(policy.rounds):
            msgs = torch.randn((batch, spec.num_agents, spec.message_dim), generator=gen)
            if config.channel.name == "dgat":
                msgs[..., -1] = float(spec.num_agents)  # the sender's degree
            inboxes.append((msgs, torch.ones(batch, spec.num_agents)))
        return obs, inboxes

    step_obs, step_inboxes = inputs(config.env.num_envs)
    mb_obs, mb_inboxes = inputs(_minibatch_size(config))
    with torch.no_grad():
        actions = policy.actor.sample(policy.forward_all(mb_obs, mb_inboxes)[0], deterministic=False)

    def decide() -> None:
        with torch.no_grad():
            policy.forward_all(step_obs, step_inboxes)

    def update() -> None:
        policy.zero_grad(set_to_none=True)
        logp, entropy, value = policy.evaluate(mb_obs, mb_inboxes, actions)
        (logp.mean() + 0.01 * entropy.mean() + value.square().mean()).backward()

    return decide, update


def bench_actor(config_path: Path | None, sets: list[str], rounds: int, repeats: int) -> dict[str, Any]:
    """Median seconds per decision and per PPO minibatch of the MLP and the entity actor, and their ratios.

    Raises:
        ConfigError: If the config (with ``algo.ppo.actor_net`` set to either value) is invalid.
    """
    import torch

    if rounds < 1 or repeats < 1:
        raise ConfigError("--rounds and --repeats must be at least 1")
    torch.set_num_threads(1)
    path = config_path if config_path is not None else DEFAULT_CONFIG
    configs = {net: load_config(path, [*sets, f"algo.ppo.actor_net={net}"]) for net in ACTOR_NETS}
    timers = {net: _timers(cfg, seed=0) for net, cfg in configs.items()}
    samples: dict[str, dict[str, list[float]]] = {net: {"decision": [], "update": []} for net in ACTOR_NETS}
    for net in ACTOR_NETS:  # warm-up: first calls allocate
        for fn in timers[net]:
            fn()
    for r in range(rounds):
        order = ACTOR_NETS if r % 2 == 0 else ACTOR_NETS[::-1]
        for net in order:
            for kind, fn in zip(("decision", "update"), timers[net], strict=True):
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                samples[net][kind].append((time.perf_counter() - start) / repeats)
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    med = {net: {kind: statistics.median(v) for kind, v in kinds.items()} for net, kinds in samples.items()}
    cfg = configs["entity"]
    return {
        "bench": "actor",
        "config": str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path),
        "overrides": sets,
        "algo": cfg.algo.name,
        "channel": cfg.channel.name,
        "decision_batch": cfg.env.num_envs,
        "update_batch": _minibatch_size(cfg),
        "rounds": rounds,
        "repeats": repeats,
        "mlp_decision_ms": round(1e3 * med["mlp"]["decision"], 4),
        "entity_decision_ms": round(1e3 * med["entity"]["decision"], 4),
        "mlp_update_ms": round(1e3 * med["mlp"]["update"], 4),
        "entity_update_ms": round(1e3 * med["entity"]["update"], 4),
        "decision_ratio": round(med["entity"]["decision"] / med["mlp"]["decision"], 3),
        "update_ratio": round(med["entity"]["update"] / med["mlp"]["update"], 3),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(ns: Any) -> int:
    """``marlmesh bench actor``."""
    try:
        result = bench_actor(ns.config, ns.set, ns.rounds, ns.repeats)
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    for kind in ("decision", "update"):
        for key in (f"mlp_{kind}_ms", f"entity_{kind}_ms", f"{kind}_ratio"):
            print(f"{key:<20} {result[key]}")
    from marlmesh.bench import emit

    return emit(ns, result)

"""The references of the pursuit task, measured in process with the scripted predator.

The scripted predator (:mod:`marlmesh.experiments.pursuit_controller`) gives the references of docs/tasks.md on
three settings of the task (no communication, perfect communication with ``shared_vision``, full observability);
this command measures all three on the vectorized env, with the same seeds::

    python -m marlmesh.experiments.pursuit_baselines [--episodes 1000] [--seed 0] [--set KEY=VALUE]...
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from marlmesh.envs.vector.pursuit import PursuitEnv
from marlmesh.experiments.baselines import evaluate_vector_env

REFERENCES: dict[str, dict[str, object]] = {
    "none": {},
    "perfect": {"shared_vision": True},
    "full": {"vision_radius": None},
}
"""The reference settings of the scripted predator, as ``env.kwargs`` on top of the task's."""


def measure(kwargs: dict[str, object], episodes: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """The scripted predator in each reference setting.

    Returns:
        Per setting: the sum-over-agents return's mean and standard error, and the fraction of predator-steps in
        which a predator is shown the (first) prey.
    """
    rows: dict[str, tuple[float, float, float]] = {}
    for name, extra in REFERENCES.items():
        shown: list[float] = []
        returns = evaluate_vector_env(
            PursuitEnv(episodes, **{**kwargs, **extra}),
            "marlmesh.pursuit",
            "scripted",
            seed,
            lambda obs, shown=shown: shown.append(float(np.mean([o[:, 4] for o in obs]))),
        )
        sem = float(returns.std(ddof=1) / np.sqrt(len(returns)))
        rows[name] = (float(returns.mean()), sem, float(np.mean(shown)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the references' returns on the pursuit task (``--set`` sets ``env.kwargs`` keys)."""
    import yaml

    p = argparse.ArgumentParser(
        prog="python -m marlmesh.experiments.pursuit_baselines", description=__doc__.split("\n")[0]
    )
    p.add_argument("--episodes", type=int, default=1000, help="episodes per reference (one per vectorized copy)")
    p.add_argument("--seed", type=int, default=0, help="copy b is reset with seed + b")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an env.kwargs key (YAML value)")
    ns = p.parse_args(argv)
    kwargs: dict[str, object] = {}
    for item in ns.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"marlmesh: error: --set {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        kwargs[key.removeprefix("env.kwargs.")] = yaml.safe_load(value)
    try:
        rows = measure(kwargs, ns.episodes, ns.seed)
    except (TypeError, ValueError) as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    print(f"pursuit {kwargs or '(defaults)'}: {ns.episodes} episodes, seed {ns.seed}; sum-over-agents return")
    for label, (mean, sem, shown) in rows.items():
        print(
            f"  scripted, {label:<10} {mean:9.2f} +- {sem:.2f}   (a predator is shown the prey in {shown:.0%} of steps)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``marlmesh bench KIND``: benchmarks reported as ratios against a baseline measured in the same run.

Each kind is a module with ``add_arguments(parser)`` and ``main(namespace) -> exit code``; results are
committed as JSON under ``benchmarks/results/``. With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Kinds named in the contract that later work delivers (they fail with a clear message until then).
PLANNED_KINDS: dict[str, str] = {}


def _kinds() -> dict[str, tuple[str, Callable[[Any], None], Callable[[Any], int]]]:
    from marlmesh.bench import actor, bus, e2e, edge, env, fuzz, links, scale, sim, soak

    return {
        "bus": ("bus API vs raw pyzmq: throughput, round trip, emulation cost", bus.add_arguments, bus.main),
        "e2e": ("distributed rollout vs the same env and policies in one process", e2e.add_arguments, e2e.main),
        "scale": (
            "N = 3..32 agent processes, meanfield and dgat: steps/s, bus bytes, CPU",
            scale.add_arguments,
            scale.main,
        ),
        "edge": ("ONNX vs torch decision latency, edge agent memory", edge.add_arguments, edge.main),
        "soak": (soak.HELP, soak.add_arguments, soak.run),
        "actor": ("entity vs MLP actor: decision and PPO minibatch time", actor.add_arguments, actor.main),
        "fuzz": (fuzz.HELP, fuzz.add_arguments, fuzz.main),
        "links": (
            "saturated vs ideal links, in process: training steps/s, latency, held frames",
            links.add_arguments,
            links.main,
        ),
        "sim": ("mesh vs in-process launcher: training steps/s, identical trace", sim.add_arguments, sim.main),
        "env": ("vectorized simple_spread vs mpe2: env copy-steps/s at several B", env.add_arguments, env.main),
    }


def emit(ns: argparse.Namespace, result: dict[str, Any]) -> int:
    """Write ``result`` to ``--out`` (if given) and, with ``--json``, print it as the last line; returns 0."""
    import json

    if ns.out is not None:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(result, indent=2) + "\n")
    if ns.json:
        print(json.dumps(result))
    return 0


def run_in_work_dir(
    ns: argparse.Namespace,
    prefix: str,
    run: Callable[[argparse.Namespace, Any, Path, Callable[[str], None]], dict[str, Any]],
    config: Any,
    summary_keys: tuple[str, ...],
) -> int:
    """Run a mesh benchmark in ``--run-dir`` (or a temp dir), print its summary and :func:`emit` the result.

    Progress lines go to stdout, or to stderr with ``--json`` (so the last stdout line is the JSON).

    Args:
        ns: The parsed flags (``run_dir``, ``json``, ``out``).
        prefix: Temp dir prefix.
        run: ``(ns, config, root, log) -> result``.
        config: The benchmark's config.
        summary_keys: Result fields printed without ``--json`` (those present).

    Returns:
        0, or 1 (the error printed) if a mesh process failed.
    """
    import sys

    from marlmesh.launch.mesh import MeshError

    def log(line: str) -> None:
        print(line, file=sys.stderr if ns.json else sys.stdout, flush=True)

    try:
        with work_dir(ns.run_dir, prefix) as root:
            result = run(ns, config, root, log)
    except MeshError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 1
    if not ns.json:
        width = max(len(k) for k in summary_keys)
        for key in summary_keys:
            if key in result:
                print(f"{key:>{width}}: {result[key]}")
    return emit(ns, result)


@contextlib.contextmanager
def work_dir(run_dir: Path | None, prefix: str) -> Iterator[Path]:
    """``run_dir`` if given (kept), else a temporary directory removed on exit."""
    if run_dir is not None:
        yield run_dir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def add_parser(sub: Any) -> None:
    """Register ``marlmesh bench KIND ...`` on the CLI's subparsers."""
    b = sub.add_parser("bench", help="benchmarks (ratios against a baseline measured in the same run)")
    kinds = b.add_subparsers(dest="kind", required=True, metavar="KIND")
    for name, (what, add_arguments, main) in _kinds().items():
        p = kinds.add_parser(name, help=what)
        add_arguments(p)
        p.set_defaults(func=main)
    for name, what in PLANNED_KINDS.items():
        p = kinds.add_parser(name, help=f"{what} (not in this version yet)")
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda ns, what=what: _planned(ns.kind, what))


def _planned(kind: str, what: str) -> int:
    import sys

    print(f"marlmesh: error: 'marlmesh bench {kind}' ({what}) is not implemented in this version yet", file=sys.stderr)
    return 2

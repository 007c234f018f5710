"""Argument parsing and entry points of ``marlmesh sweep`` and ``marlmesh report`` (wired in :mod:`marlmesh.cli`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

ErrorFn = Callable[..., int]


def add_sweep_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``sweep`` subcommand's parser."""
    p = sub.add_parser(
        "sweep",
        help="run a grid of training/baseline cells (resumable), write results.csv",
        description="Run every cell of a sweep file as a subprocess; finished cells are skipped on a rerun.",
    )
    p.add_argument("-c", "--config", required=True, metavar="SWEEP.yaml", help="sweep file (configs/sweeps/)")
    p.add_argument("--out", default=None, help="output folder (default: sweeps/<name>-<time>)")
    p.add_argument("--parallel", type=int, default=1, metavar="K", help="cells running at once (default 1)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the cells, run nothing")
    p.add_argument(
        "--launcher",
        choices=("mesh", "inprocess"),
        default=None,
        help="how training cells run (default: the sweep file's `launcher`, else mesh)",
    )
    p.add_argument(
        "--cells",
        action="append",
        default=[],
        metavar="GLOB",
        help="run only the cells whose id matches (shell-style, repeatable), e.g. to rerun a sample on the mesh",
    )
    return p


def add_report_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``report`` subcommand's parser."""
    p = sub.add_parser(
        "report",
        help="plots and report.md from a sweep folder",
        description="Write SWEEP_DIR/report/*.png and SWEEP_DIR/report.md from SWEEP_DIR/results.csv.",
    )
    p.add_argument("sweep_dir")
    p.add_argument(
        "--compare",
        default=None,
        metavar="OTHER_DIR",
        help="another run of some of the same cells (e.g. rerun with --launcher mesh): add a table of both",
    )
    return p


def run_sweep_command(ns: argparse.Namespace, error: ErrorFn) -> int:
    """Validate the sweep, then run it (or list its cells with ``--dry-run``)."""
    from marlmesh.experiments.sweep import SweepRunner
    from marlmesh.experiments.sweep_spec import SweepError, load_sweep

    if ns.parallel < 1:
        return error(f"--parallel must be >= 1, got {ns.parallel}")
    sweep_file = Path(ns.config)
    try:
        name = load_sweep(sweep_file).name
        out = Path(ns.out) if ns.out else Path("sweeps") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        runner = SweepRunner(sweep_file, out, ns.parallel, launcher=ns.launcher, only=ns.cells)
        runner.validate()
    except SweepError as exc:
        return error(str(exc))
    if ns.dry_run:
        for cell in runner.cells:
            what = f"baseline {cell.baseline}" if cell.baseline else "train"
            print(f"{cell.cell_id}  [{what}]  {' '.join(cell.set_args())}")
        print(f"{len(runner.cells)} cells, training cells on the {runner.launcher} launcher")
        return 0
    failed = runner.run()
    print(out / "results.csv")
    return 130 if runner.interrupted else (1 if failed else 0)


def run_report_command(ns: argparse.Namespace, error: ErrorFn) -> int:
    """Write the figures and ``report.md``; print their paths."""
    from marlmesh.experiments.report import write_report

    try:
        report, figures, notes = write_report(Path(ns.sweep_dir), Path(ns.compare) if ns.compare else None)
    except FileNotFoundError as exc:
        return error(str(exc))
    for path in figures:
        print(path)
    for note in notes:
        print(f"note: {note}")
    print(report)
    return 0

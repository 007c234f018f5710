"""``marlmesh sweep -c SWEEP.yaml [--out DIR] [--parallel K]``: run every cell of a sweep, resumably.

Each cell runs as a subprocess into ``DIR/cells/<cell-id>/``: ``marlmesh train`` for a learning cell, the
evaluation-only baseline runner (:mod:`marlmesh.experiments.baselines`) for a baseline cell. Output folder::

    DIR/sweep.yaml          the sweep file as given
    DIR/sweep.json          the expanded cells (id, axis labels, seed, overrides)
    DIR/cells/<id>/         the cell's run directory (summary.json, logs, ...) and cell.log (its stdout/stderr)
    DIR/cells/<id>/cell.json  how the cell ended (done/failed/interrupted, exit code, wall time, log tail)
    DIR/results.csv         one row per cell (rewritten whenever a cell ends)

A cell whose ``summary.json`` has status ``done`` is skipped on a rerun; any other cell folder is wiped and the
cell runs again from scratch (so a cell's numbers never mix two partial runs). A failed cell is recorded
and the sweep goes on.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from marlmesh.experiments.results import collect_rows, read_summary, write_csv
from marlmesh.experiments.sweep_spec import (
    Cell,
    SweepError,
    expand_cells,
    load_sweep,
    read_base_data,
    resolve_base_config,
    validate_cells,
)

LOG_TAIL_LINES = 30


def fmt_time(seconds: float) -> str:
    """``mm:ss`` or ``h:mm:ss``."""
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


#: A training cell runs in lockstep (reproducible under the sim clock) unless the sweep sets this key itself.
WEIGHT_SYNC_KEY = "train.weight_sync"


def select_cells(cells: list[Cell], patterns: Sequence[str]) -> list[Cell]:
    """The cells whose id matches one of the shell-style ``patterns`` (all cells without patterns).

    Raises:
        SweepError: If a pattern matches no cell (a typo would otherwise run nothing, silently).
    """
    if not patterns:
        return cells
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.cell_id, pattern) for c in cells):
            raise SweepError(f"--cells {pattern!r} matches no cell of the sweep (see --dry-run for the ids)")
    return [c for c in cells if any(fnmatch.fnmatchcase(c.cell_id, p) for p in patterns)]


def cell_command(cell: Cell, base_config: Path | None, run_dir: Path, launcher: str = "mesh") -> list[str]:
    """The argv that runs one cell (training cells with ``train.weight_sync=lockstep`` unless overridden).

    Args:
        cell: The cell.
        base_config: The sweep's base run config, or None.
        run_dir: The cell's run directory.
        launcher: ``mesh`` or ``inprocess`` (``marlmesh train --launcher``) for a training cell.
    """
    if cell.baseline is None:
        argv = [sys.executable, "-m", "marlmesh.cli", "train", "--run-dir", str(run_dir), "--launcher", launcher]
    else:
        argv = [sys.executable, "-m", "marlmesh.experiments.baselines", cell.baseline, "--run-dir", str(run_dir)]
    if base_config is not None:
        argv += ["-c", str(base_config)]
    if cell.baseline is None and WEIGHT_SYNC_KEY not in cell.overrides:
        argv += ["--set", f"{WEIGHT_SYNC_KEY}=lockstep"]
    for item in cell.set_args():
        argv += ["--set", item]
    return argv


def is_done(run_dir: Path) -> bool:
    """True if the cell's ``summary.json`` says ``done``."""
    summary = read_summary(run_dir)
    return bool(summary) and summary.get("status") == "done"


@dataclass
class _Running:
    cell: Cell
    popen: subprocess.Popen
    started: float
    log: TextIO


class SweepRunner:
    """Runs the cells of one sweep, ``parallel`` at a time, with a progress line on ``err``.

    Args:
        sweep_file: The sweep YAML.
        out_dir: Output folder (created).
        parallel: Cells running at once.
        err: Where progress goes (stderr).
    """

    def __init__(
        self,
        sweep_file: Path,
        out_dir: Path,
        parallel: int = 1,
        err: TextIO = sys.stderr,
        launcher: str | None = None,
        only: Sequence[str] = (),
    ) -> None:
        self.sweep_file = sweep_file
        self.spec = load_sweep(sweep_file)
        self.launcher = launcher or self.spec.launcher
        self.base_config = resolve_base_config(self.spec, sweep_file)
        self.all_cells = expand_cells(self.spec, read_base_data(self.base_config))
        """Every cell of the sweep: ``sweep.json`` and ``results.csv`` list them all, run or not."""
        self.cells = select_cells(self.all_cells, only)
        """The cells this run runs (``--cells`` selects some)."""
        self.out_dir = out_dir
        self.parallel = max(1, parallel)
        self.err = err
        self.tty = err.isatty()
        self.done: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[str] = []
        self.durations: list[float] = []
        self.start = time.monotonic()
        self._last_print = 0.0
        self._last_state: tuple[int, int, int] = (0, 0, 0)
        self.interrupted = False

    def cell_dir(self, cell: Cell) -> Path:
        """Run directory of one cell."""
        return self.out_dir / "cells" / cell.cell_id

    def validate(self) -> None:
        """Check every cell's config and plugins (raises :class:`~marlmesh.experiments.sweep_spec.SweepError`)."""
        validate_cells(self.cells, self.base_config)

    def write_manifest(self) -> None:
        """Write ``sweep.yaml`` and ``sweep.json`` into the output folder."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "sweep.yaml").write_text(self.sweep_file.read_text())
        manifest = {
            "name": self.spec.name,
            "sweep_file": str(self.sweep_file),
            "base_config": str(self.base_config) if self.base_config else None,
            "axes": self.spec.axis_names(),
            "cells": [c.to_json() for c in self.all_cells],
        }
        (self.out_dir / "sweep.json").write_text(json.dumps(manifest, indent=2))

    def write_results(self) -> Path:
        """(Re)write ``results.csv`` from every cell folder (a row per cell of the sweep, also with ``--cells``)."""
        path = self.out_dir / "results.csv"
        write_csv(collect_rows(self.out_dir, self.all_cells, self.spec.axis_names()), path)
        return path

    # -- running -----------------------------------------------------------------------------------
    def _launch(self, cell: Cell) -> _Running:
        run_dir = self.cell_dir(cell)
        if run_dir.exists():  # a partial or failed earlier attempt: start clean
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        log = open(run_dir / "cell.log", "w")  # noqa: SIM115 (closed in _finish)
        argv = cell_command(cell, self.base_config, run_dir, self.launcher)
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return _Running(cell, popen, time.monotonic(), log)

    def _finish(self, r: _Running, code: int | None, reason: str | None = None) -> None:
        r.log.close()
        run_dir = self.cell_dir(r.cell)
        wall = time.monotonic() - r.started
        ok = code == 0 and is_done(run_dir)
        interrupted = not ok and self.interrupted
        record: dict[str, object] = {
            "cell_id": r.cell.cell_id,
            "status": "done" if ok else "interrupted" if interrupted else "failed",
            "returncode": code,
            "wall_seconds": round(wall, 2),
            "command": cell_command(r.cell, self.base_config, run_dir, self.launcher),
        }
        if not ok:
            lines = (run_dir / "cell.log").read_text(errors="replace").splitlines()
            record["error"] = reason or (f"exit code {code}" if code else "no summary with status 'done'")
            record["log_tail"] = "\n".join(lines[-LOG_TAIL_LINES:])
            if interrupted:
                self._line(f"cell {r.cell.cell_id} interrupted (it runs again on a rerun)", force=True)
            else:
                self.failed.append(r.cell.cell_id)
                self._line(f"cell {r.cell.cell_id} FAILED ({record['error']}); see {run_dir / 'cell.log'}", force=True)
        else:
            self.done.append(r.cell.cell_id)
            self.durations.append(wall)
        (run_dir / "cell.json").write_text(json.dumps(record, indent=2))
        self.write_results()

    def _progress(self, running: list[_Running], pending: int) -> None:
        finished = len(self.done) + len(self.failed)
        total = len(self.cells)
        elapsed = time.monotonic() - self.start
        eta = ""
        if self.durations and (pending or running):
            mean = sum(self.durations) / len(self.durations)
            in_flight = sum(max(0.0, mean - (time.monotonic() - r.started)) for r in running)
            left = (pending * mean + in_flight) / self.parallel
            eta = f", ETA ~{fmt_time(left)}"
        names = ", ".join(r.cell.cell_id for r in running)
        line = (
            f"[sweep {self.spec.name}] {len(self.done) + len(self.skipped)}/{total} done "
            f"({len(self.skipped)} skipped), {len(running)} running, {len(self.failed)} failed, {pending} pending"
            f" | {fmt_time(elapsed)} elapsed{eta}" + (f" | running: {names}" if names else "")
        )
        state = (len(self.done), len(self.failed), len(running))
        if finished or running or pending:
            self._line(line, newline=state != self._last_state)
        self._last_state = state

    def _line(self, line: str, force: bool = False, newline: bool = False) -> None:
        """Print a status line: in place on a terminal, else at most every 10 s (or when forced/changed)."""
        if self.tty:
            self.err.write("\r\033[K" + line + ("\n" if force else ""))
        elif force or newline or time.monotonic() - self._last_print >= 10.0:
            self.err.write(line + "\n")
            self._last_print = time.monotonic()
        self.err.flush()

    def run(self) -> int:
        """Run every cell that is not done yet; return the number of failed cells.

        SIGINT/SIGTERM stop the running cells (each stops its own processes) and end the sweep.
        """
        self.write_manifest()
        todo = []
        for cell in self.cells:
            if is_done(self.cell_dir(cell)):
                self.skipped.append(cell.cell_id)
            else:
                todo.append(cell)
        self._line(
            f"[sweep {self.spec.name}] {len(self.cells)} cells: {len(self.skipped)} already done, "
            f"{len(todo)} to run, {self.parallel} at a time; output in {self.out_dir}",
            force=True,
        )
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, _frame: object) -> None:
            self.interrupted = True

        for s in previous:
            signal.signal(s, on_signal)
        running: list[_Running] = []
        try:
            while (todo or running) and not self.interrupted:
                while todo and len(running) < self.parallel and not self.interrupted:
                    running.append(self._launch(todo.pop(0)))
                time.sleep(0.25)
                for r in list(running):
                    code = r.popen.poll()
                    timeout = self.spec.cell_timeout_s
                    if code is None and timeout is not None and time.monotonic() - r.started > timeout:
                        self._terminate(r)
                        running.remove(r)
                        self._finish(r, r.popen.returncode, f"timed out after {timeout:.0f}s")
                    elif code is not None:
                        running.remove(r)
                        self._finish(r, code)
                self._progress(running, len(todo))
        finally:
            for r in running:
                self._terminate(r)
                self._finish(r, r.popen.returncode, "sweep interrupted")
            for s, h in previous.items():
                signal.signal(s, h)
        self._progress([], len(todo))
        path = self.write_results()
        self._line(
            f"[sweep {self.spec.name}] finished: {len(self.done)} ran, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed in {fmt_time(time.monotonic() - self.start)}; results: {path}",
            force=True,
        )
        if self.interrupted:
            self._line(f"[sweep {self.spec.name}] interrupted; rerun the same command to resume", force=True)
        return len(self.failed)

    @staticmethod
    def _terminate(r: _Running, grace_s: float = 60.0) -> None:
        """SIGTERM the cell's launcher (it stops its own children), SIGKILL after ``grace_s``."""
        if r.popen.poll() is None:
            r.popen.send_signal(signal.SIGTERM)
            try:
                r.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                r.popen.kill()
                r.popen.wait()

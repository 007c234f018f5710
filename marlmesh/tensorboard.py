"""TensorBoard event files of a run, written with ``tensorboardX`` (``tensorboard --logdir runs/`` reads them).

Layout under the run directory (``train.tensorboard``; docs/runs.md)::

    RUN_DIR/tensorboard/learner-<i>/   learner i's update statistics (tags ``learner/*``) by update
    RUN_DIR/tensorboard/team/          the team's return and evaluation (tags ``team/*``, ``eval/*``) by env step

Every learner writes the same tags into its own folder, so TensorBoard draws the N learners as N runs on one chart.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
"""Folder of the event files under the run directory."""
TEAM_RUN = "team"
"""The launcher's run (team return and evaluation) under :data:`TENSORBOARD_DIR`."""

FLUSH_SECONDS = 5
"""Longest time a scalar stays in memory before it is written (a killed process loses at most this much)."""

TEAM_RECORD_KEYS = (
    "return_sum_recent_mean",
    "return_sum_recent_std",
    "collisions_recent_mean",
    "steps_per_second",
    "episodes",
)
"""Keys of a ``metrics.jsonl`` record written as ``team/<key>``."""
EVAL_KEYS = ("return_sum_mean", "return_sum_std", "collisions_mean", "episodes")
"""Keys of an evaluation result (``summary.json``'s ``eval``) written as ``eval/<key>``; each agent's mean
return goes to ``eval/agent_return_mean/<agent name>``."""


def learner_run(agent_id: int) -> str:
    """The run name (folder under :data:`TENSORBOARD_DIR`) of learner ``agent_id``."""
    return f"learner-{agent_id}"


def tensorboard_root(run_dir: Path) -> Path:
    """``RUN_DIR/tensorboard``."""
    return run_dir / TENSORBOARD_DIR


@contextlib.contextmanager
def _torch_unimportable() -> Iterator[None]:
    """Make ``import torch`` fail inside the block unless torch is already imported.

    ``tensorboardX`` imports torch if it can (only to accept tensors, never needed for scalars): that costs a
    process without torch (the mesh launcher) about 2 s and 200 MB. A process that has torch keeps it.
    """
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


class ScalarLog:
    """Scalars of one TensorBoard run, safe to call from several threads; writes after :meth:`close` are ignored.

    Args:
        directory: The run's folder (created); a process that restarts adds a new event file beside the old.

    Raises:
        RuntimeError: If ``tensorboardX`` is not installed (it is in the ``train`` extra).
    """

    def __init__(self, directory: Path) -> None:
        try:
            with _torch_unimportable():
                from tensorboardX import SummaryWriter
        except ImportError as exc:
            raise RuntimeError(
                f"writing TensorBoard events to {directory} needs tensorboardX (pip install 'marlmesh[train]'), "
                "or turn them off with train.tensorboard=false"
            ) from exc
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._lock = threading.Lock()
        self._writer: Any = SummaryWriter(logdir=str(directory), flush_secs=FLUSH_SECONDS)

    def scalars(self, prefix: str, values: Mapping[str, object], step: int) -> None:
        """Write ``prefix/<key>`` for every finite number in ``values`` at ``step`` (None, NaN and text skipped)."""
        with self._lock:
            if self._writer is None:
                return
            for key, value in values.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    continue
                self._writer.add_scalar(f"{prefix}/{key}", float(value), global_step=step)

    def flush(self) -> None:
        """Write what is buffered now."""
        with self._lock:
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


class TeamLog:
    """The launcher's TensorBoard run: ``metrics.jsonl`` records and the evaluation, by env step.

    Args:
        run_dir: The run directory; events go to ``RUN_DIR/tensorboard/team``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.log = ScalarLog(tensorboard_root(run_dir) / TEAM_RUN)

    def record(self, rec: Mapping[str, Any]) -> None:
        """Write one ``metrics.jsonl`` record as ``team/*`` scalars at its ``env_steps``."""
        self.log.scalars("team", {k: rec.get(k) for k in TEAM_RECORD_KEYS}, int(rec["env_steps"]))

    def evaluation(self, result: Mapping[str, Any], env_steps: int) -> None:
        """Write an evaluation result (``summary.json``'s ``eval``) as ``eval/*`` scalars at ``env_steps``."""
        self.log.scalars("eval", {k: result.get(k) for k in EVAL_KEYS}, env_steps)
        names = result.get("agent_names") or []
        means = result.get("agent_return_means") or []
        self.log.scalars("eval/agent_return_mean", dict(zip(names, means, strict=False)), env_steps)

    def close(self) -> None:
        """Flush and close the event file."""
        self.log.close()


def team_log(enabled: bool, run_dir: Path) -> TeamLog | None:
    """The launcher's :class:`TeamLog` when ``train.tensorboard`` is on, else None."""
    return TeamLog(run_dir) if enabled else None

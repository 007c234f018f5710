"""Fragment ledgers: a process's rollout-fragment counters on disk after every change.

A process's stats file (``--stats-file``) is written when it exits, so a ``kill -9`` takes its counters with
it. An agent and a learner therefore also keep a *ledger*: the few counters that say where every fragment went
(created / sent / dropped by the agent; received / trained / dropped by the learner), rewritten atomically
each time one of them changes (a fragment is a rollout of ``train.rollout_steps`` steps, so this is a small
write every few hundred milliseconds at most). The learner writes it before it acknowledges a fragment, so an
acknowledged fragment is always in the learner's ledger.

When the launcher restarts a process it *retires* the ledger of the incarnation that exited
(``stats/ledgers/<name>.incarnation-<k>.json``), and the run's summary lists the retired ledgers of each
process under ``earlier_incarnations``. The fragments a killed incarnation still held (queued in a learner,
unsent in an agent) are then known exactly: what it received or created minus what it trained, sent or
counted as dropped. :func:`marlmesh.bench.soak.fragment_accounting` counts them as ``lost_in_kill``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from marlmesh.process import write_json

LEDGER_DIR = "ledgers"
"""Folder of the ledgers, beside the stats files (outside the stats files' ``<tag>-*.json`` pattern)."""


def ledger_path(stats_file: Path) -> Path:
    """The ledger of the process whose stats file is ``stats_file`` (its current incarnation)."""
    return stats_file.parent / LEDGER_DIR / f"{stats_file.stem}.json"


def retired_path(stats_file: Path, incarnation: int) -> Path:
    """Where the ledger of incarnation ``incarnation`` (0 = the first) goes once it exited."""
    return stats_file.parent / LEDGER_DIR / f"{stats_file.stem}.incarnation-{incarnation}.json"


def retire(stats_file: Path, incarnation: int) -> Path | None:
    """Move the current ledger aside as incarnation ``incarnation``'s; None if the process wrote none."""
    current = ledger_path(stats_file)
    if not current.is_file():
        return None
    target = retired_path(stats_file, incarnation)
    current.replace(target)
    return target


def retired_ledgers(stats_file: Path) -> list[dict[str, object]]:
    """The retired ledgers of a process, oldest incarnation first (unreadable ones skipped)."""
    out = []
    folder = stats_file.parent / LEDGER_DIR
    paths = sorted(
        folder.glob(f"{stats_file.stem}.incarnation-*.json"),
        key=lambda p: int(p.stem.rsplit("-", 1)[1]),
    )
    for path in paths:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError):
            continue
    return out


class FragmentLedger:
    """Writes ``read()`` to the ledger file each time :meth:`write` is called (thread-safe, atomic).

    Args:
        stats_file: The process's stats file (the ledger goes beside it, see :func:`ledger_path`); None
            disables the ledger (a process started by hand without ``--stats-file``).
        read: Returns the counters to record (JSON-ready); called under the ledger's lock.
    """

    def __init__(self, stats_file: Path | None, read: Callable[[], dict[str, object]]) -> None:
        self.path = None if stats_file is None else ledger_path(stats_file)
        self._read = read
        self._lock = threading.Lock()
        self._last: dict[str, object] | None = None

    def write(self) -> None:
        """Record the counters now (no write when they are as last recorded)."""
        if self.path is None:
            return
        with self._lock:
            counts = self._read()
            if counts != self._last:  # callers may call after every event that could change a count
                write_json(self.path, counts)
                self._last = counts

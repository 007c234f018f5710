"""Recorded link conditions replayed by the ``trace`` link model.

Format: CSV with a header row, or JSONL (one object per line), with the columns

==============  ===============================================================================
``time_s``      bus-clock time (seconds) from which the record holds (required)
``src``         sender agent index or ``*`` (required)
``dst``         receiver agent index or ``*`` (required)
``latency_ms``  one-way delay (optional)
``jitter_ms``   delay variation (optional)
``loss``        loss probability in [0, 1] (optional)
``rate_bps``    link rate in bit/s; empty or ``inf`` = unlimited (optional)
==============  ===============================================================================

A record changes only the columns it sets; a link's parameters at time t are its netem parameters updated,
in time order, by every record for that link (or ``*``) with ``time_s <= t``. Example::

    time_s,src,dst,latency_ms,loss
    0,*,*,20,0
    5.0,0,1,250,0.3
    9.0,0,1,20,0
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from marlmesh.config.bus import LinkConfig

FIELDS = ("latency_ms", "jitter_ms", "loss", "rate_bps")


@dataclass(frozen=True)
class TraceRecord:
    """One row of a link trace."""

    time_s: float
    src: int | None  # None = any
    dst: int | None
    changes: dict[str, float | None]


def _endpoint(value: object, where: str) -> int | None:
    if value in ("*", None, ""):
        return None
    try:
        idx = int(str(value))
    except ValueError:
        raise ValueError(f"{where}: agent index or '*' expected, got {value!r}") from None
    if idx < 0:
        raise ValueError(f"{where}: negative agent index {idx}")
    return idx


def _record(raw: dict[str, object], where: str) -> TraceRecord:
    unknown = set(raw) - {"time_s", "src", "dst", *FIELDS}
    if unknown:
        raise ValueError(f"{where}: unknown columns {sorted(unknown)}; allowed: time_s, src, dst, {', '.join(FIELDS)}")
    for key in ("time_s", "src", "dst"):
        if raw.get(key) in (None, ""):
            raise ValueError(f"{where}: column {key!r} is required")
    try:
        time_s = float(str(raw["time_s"]))
    except ValueError:
        raise ValueError(f"{where}: time_s {raw['time_s']!r} is not a number") from None
    changes: dict[str, float | None] = {}
    for key in FIELDS:
        value = raw.get(key)
        if value in (None, ""):
            continue
        try:
            num = float(str(value))
        except ValueError:
            raise ValueError(f"{where}: {key} {value!r} is not a number") from None
        if key == "rate_bps" and math.isinf(num):
            changes[key] = None
            continue
        if not math.isfinite(num) or num < 0 or (key == "loss" and num > 1) or (key == "rate_bps" and num == 0):
            raise ValueError(f"{where}: {key} {value!r} out of range")
        changes[key] = num
    return TraceRecord(time_s, _endpoint(raw["src"], where), _endpoint(raw["dst"], where), changes)


class LinkTrace:
    """A parsed link trace; :meth:`at` gives a link's parameters at a time."""

    def __init__(self, records: list[TraceRecord]) -> None:
        self.records = sorted(records, key=lambda r: r.time_s)
        self._per_link: dict[tuple[int, int], tuple[list[float], list[dict[str, float | None]]]] = {}

    @classmethod
    def load(cls, path: str | Path) -> LinkTrace:
        """Read a CSV (``.csv``) or JSONL (anything else) trace file.

        Raises:
            ValueError: If the file is missing or a line is malformed (the message names file and line).
        """
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"bus.links.trace_file: {str(p)!r} not found")
        records = []
        if p.suffix.lower() == ".csv":
            with open(p, newline="") as fh:
                for lineno, row in enumerate(csv.DictReader(fh), start=2):
                    records.append(_record(dict(row), f"{p}:{lineno}"))
        else:
            for lineno, line in enumerate(p.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{p}:{lineno}: not JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{p}:{lineno}: expected a JSON object")
                records.append(_record(obj, f"{p}:{lineno}"))
        if not records:
            raise ValueError(f"bus.links.trace_file: {str(p)!r} has no records")
        return cls(records)

    def _series(self, src: int, dst: int) -> tuple[list[float], list[dict[str, float | None]]]:
        key = (src, dst)
        found = self._per_link.get(key)
        if found is None:
            times: list[float] = []
            states: list[dict[str, float | None]] = []
            state: dict[str, float | None] = {}
            for r in self.records:
                if r.src in (None, src) and r.dst in (None, dst):
                    state = {**state, **r.changes}
                    times.append(r.time_s)
                    states.append(state)
            found = self._per_link[key] = (times, states)
        return found

    def at(self, base: LinkConfig, src: int, dst: int, now: float) -> LinkConfig:
        """``base`` updated by the records for ``src -> dst`` in force at ``now``."""
        times, states = self._series(src, dst)
        i = bisect.bisect_right(times, now) - 1
        if i < 0 or not states[i]:
            return base
        return base.model_copy(update=states[i])

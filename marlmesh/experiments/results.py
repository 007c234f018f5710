"""One tidy row per sweep cell, from the cell's ``summary.json`` (and ``cell.json`` when it failed).

Columns of ``results.csv`` (in this order):

- ``cell_id``, ``status`` (``done``, ``failed``, ``interrupted``, or ``running``/``pending`` for a cell
  without a result yet)
- one column per sweep axis (the label of the cell's value), then ``env`` (the label of an axis named ``env``,
  else ``env.name``), ``method`` (``<algo>+<channel>`` or ``baseline:<name>``), ``link`` (the label of an axis
  named ``link``, else the link overrides written out, ``ideal`` without any), ``algo_name``, ``channel_name``,
  ``baseline``, ``link_rate_bps``, ``link_latency_ms``, ``link_jitter_ms``, ``link_loss``, ``link_range``,
  ``seed`` (the link values are the cell's overrides; empty = the base config's value, i.e. unlimited / 0)
- ``env_steps``, ``eval_episodes``, ``return_sum_mean``, ``return_sum_std`` (sum over agents of the episode
  return, mean and std over the evaluation episodes), ``collisions_mean``
- ``messages_per_episode``, ``bytes_per_episode``: bus totals of training divided by training episodes
- ``latency_p50_s`` (bus delivery latency), ``drops_total`` and ``drops_<cause>`` for every cause seen
- ``wall_seconds`` (training + evaluation as the cell measured it), ``error``

Bus fields may be missing or None in a summary (a silent channel, a baseline, an older run): the cells are
left empty rather than guessed.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from marlmesh.experiments.sweep_spec import LATENCY_KEY, LOSS_KEY, RATE_KEY, Cell

JITTER_KEY = "bus.links.default.jitter_ms"
RANGE_KEY = "bus.links.default.range"
#: Link override -> its short name in the ``link`` column when no axis is named ``link``.
LINK_NAMES = {
    RATE_KEY: "rate_bps",
    LATENCY_KEY: "latency_ms",
    JITTER_KEY: "jitter_ms",
    LOSS_KEY: "loss",
    RANGE_KEY: "range",
}

FIXED_COLUMNS = [
    "env",
    "method",
    "link",
    "algo_name",
    "channel_name",
    "baseline",
    "link_rate_bps",
    "link_latency_ms",
    "link_jitter_ms",
    "link_loss",
    "link_range",
    "seed",
]
METRIC_COLUMNS = [
    "env_steps",
    "eval_episodes",
    "return_sum_mean",
    "return_sum_std",
    "collisions_mean",
    "messages_per_episode",
    "bytes_per_episode",
    "latency_p50_s",
    "drops_total",
]
TAIL_COLUMNS = ["wall_seconds", "error"]


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The cell's ``summary.json``, or None if it is missing or unreadable."""
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _per(total: Any, episodes: Any) -> float | None:
    t, e = _num(total), _num(episodes)
    if t is None or not e:
        return None
    return t / e


def summary_metrics(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metric columns of one cell from its summary (None where the summary has no value)."""
    bus = _get(summary, "bus")
    dropped = _get(bus, "dropped")
    drops = {str(k): int(v) for k, v in dropped.items()} if isinstance(dropped, Mapping) else None
    row: dict[str, Any] = {
        "env_steps": _get(summary, "env_steps"),
        "eval_episodes": _get(summary, "eval", "episodes"),
        "return_sum_mean": _num(_get(summary, "eval", "return_sum_mean")),
        "return_sum_std": _num(_get(summary, "eval", "return_sum_std")),
        "collisions_mean": _num(_get(summary, "eval", "collisions_mean")),
        "messages_per_episode": _per(_get(bus, "messages_sent"), _get(summary, "episodes")),
        "bytes_per_episode": _per(_get(bus, "bytes_sent"), _get(summary, "episodes")),
        "latency_p50_s": _num(_get(bus, "delivery_latency_p50_seconds")),
        "drops_total": sum(drops.values()) if drops is not None else None,
        "wall_seconds": _num(_get(summary, "wall_seconds")),
    }
    eval_wall = _num(_get(summary, "eval", "wall_seconds"))
    if row["wall_seconds"] is not None and eval_wall is not None and _get(summary, "baseline") is None:
        row["wall_seconds"] = round(row["wall_seconds"] + eval_wall, 2)
    for cause, n in (drops or {}).items():
        row[f"drops_{cause}"] = n
    return row


def link_label(overrides: Mapping[str, Any]) -> str:
    """``ideal``, or the cell's link overrides that constrain the link, e.g. ``rate_bps=8000,loss=0.1``."""
    parts = [f"{name}={overrides[key]}" for key, name in LINK_NAMES.items() if overrides.get(key) not in (None, 0, 0.0)]
    return ",".join(parts) or "ideal"


def cell_row(cell: Cell, axes: list[str], cell_dir: Path) -> dict[str, Any]:
    """One CSV row: the cell's identity, its overrides and its results."""
    summary = read_summary(cell_dir)
    try:
        outcome = json.loads((cell_dir / "cell.json").read_text())
    except (OSError, json.JSONDecodeError):
        outcome = {}
    if summary is not None and summary.get("status") == "done":
        status = "done"
    elif outcome.get("status") in ("failed", "interrupted"):
        status = outcome["status"]
    else:
        status = "running" if cell_dir.exists() else "pending"
    o = cell.overrides
    row: dict[str, Any] = {"cell_id": cell.cell_id, "status": status}
    row.update({a: cell.axes.get(a, "") for a in axes})
    row.update(
        {
            "env": cell.axes.get("env") or o.get("env.name", _get(summary, "config", "env")),
            "method": cell.method,
            "link": cell.axes.get("link") or link_label(o),
            "algo_name": None if cell.baseline else o.get("algo.name", _get(summary, "config", "algo")),
            "channel_name": None if cell.baseline else o.get("channel.name", _get(summary, "config", "channel")),
            "baseline": cell.baseline,
            "link_rate_bps": o.get(RATE_KEY),
            "link_latency_ms": o.get(LATENCY_KEY),
            "link_jitter_ms": o.get(JITTER_KEY),
            "link_loss": o.get(LOSS_KEY),
            "link_range": o.get(RANGE_KEY),
            "seed": cell.seed,
        }
    )
    row.update(summary_metrics(summary) if status == "done" else {})
    if status in ("failed", "interrupted"):
        row["error"] = outcome.get("error")
        row["wall_seconds"] = outcome.get("wall_seconds")
    return row


def collect_rows(out_dir: Path, cells: Iterable[Cell], axes: list[str]) -> list[dict[str, Any]]:
    """A row per cell of the sweep in ``out_dir``."""
    return [cell_row(c, axes, out_dir / "cells" / c.cell_id) for c in cells]


def columns_for(rows: list[dict[str, Any]]) -> list[str]:
    """Column order: identity, axes, fixed, metrics, one ``drops_<cause>`` per cause seen, tail."""
    axes: list[str] = []
    causes: set[str] = set()
    known = {"cell_id", "status", *FIXED_COLUMNS, *METRIC_COLUMNS, *TAIL_COLUMNS}
    for row in rows:
        for k in row:
            if k.startswith("drops_") and k != "drops_total":
                causes.add(k)
            elif k not in known and k not in axes:
                axes.append(k)
    return ["cell_id", "status", *axes, *FIXED_COLUMNS, *METRIC_COLUMNS, *sorted(causes), *TAIL_COLUMNS]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the rows atomically (None -> empty cell)."""
    cols = columns_for(rows)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if row.get(k) is None else row.get(k) for k in cols})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``results.csv`` as strings (empty = no value).

    Raises:
        FileNotFoundError: If there is no such file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a folder written by 'marlmesh sweep'?")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

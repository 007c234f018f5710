"""``marlmesh report SWEEP_DIR``: figures and a markdown table from a sweep's ``results.csv``.

Writes into ``SWEEP_DIR/report/`` one PNG per figure and ``SWEEP_DIR/report.md``:

- ``return_vs_bandwidth.png``, ``return_vs_latency.png``, ``return_vs_jitter.png``, ``return_vs_loss.png``,
  ``return_vs_range.png``: evaluation return (sum over agents) against one link parameter, the other link
  parameters held at their most ideal value in the sweep; one line per method (``<algo>+<channel>`` or
  baseline; with a suffix for other varied axes), error bars = the 95 % confidence interval of the IQM over
  seeds. Baselines (which do not communicate) are drawn as flat lines.
- ``learning_curves.png``: training return (mean of the last 100 episodes, ``metrics.jsonl``) against env
  steps of every learning method on the ideal link, the mean over seeds with the seeds' range shaded.
- ``bytes_per_episode.png`` and ``collisions.png``: a bar per cell group (mean ± std over seeds).

A sweep with several envs (the ``env`` column) gets each return figure once per env, ``<stem>-<env>.png``.
Returns are aggregated over seeds as the MARL evaluation protocol asks: the interquartile mean with a
stratified bootstrap 95 % confidence interval (:mod:`marlmesh.experiments.estimates`, rliable). A
figure whose x axis the sweep does not vary is skipped, with a note in the report. Only cells with status
``done`` are plotted; failed cells are listed.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path

import numpy as np

from marlmesh.experiments.estimates import Interval, iqm_interval
from marlmesh.experiments.results import FIXED_COLUMNS, METRIC_COLUMNS, TAIL_COLUMNS, read_csv

NOT_AXIS = {"cell_id", "status", *FIXED_COLUMNS, *METRIC_COLUMNS, *TAIL_COLUMNS}

#: (figure file stem, CSV column of the x value, x-axis label, value of an empty cell: the unconstrained default)
LINK_FIGURES = [
    ("return_vs_bandwidth", "link_rate_bps", "link rate (kbit/s; ∞ = unlimited)", math.inf),
    ("return_vs_latency", "link_latency_ms", "link latency (ms)", 0.0),
    ("return_vs_jitter", "link_jitter_ms", "link jitter (ms)", 0.0),
    ("return_vs_loss", "link_loss", "message loss probability", 0.0),
    ("return_vs_range", "link_range", "radio range (env units; ∞ = unlimited)", math.inf),
]
#: Link columns whose most ideal value is the largest (the others are best at their smallest).
LARGER_IS_BETTER = {"link_rate_bps", "link_range"}
RETURN = "return_sum_mean"


BASELINE_STYLES = (("black", "--"), ("tab:gray", ":"), ("tab:brown", "-."), ("tab:olive", "--"))
"""Colour and line style of each horizontal baseline line, in turn (so random and scripted differ)."""


@dataclass
class Group:
    """Cells that differ only in their seed."""

    key: tuple[str, ...]
    label: str
    method: str
    baseline: bool
    link: dict[str, float]
    rows: list[dict[str, str]]
    line_label: str = ""
    """The group's line in the link figures: method plus the axes that are not link settings."""
    env: str = ""
    _intervals: dict[str, Interval | None] = field(default_factory=dict, repr=False)

    def stat(self, column: str) -> tuple[float | None, float | None, int]:
        """Mean, std (population; 0 for one seed) and count of a numeric column over the seeds."""
        vals = [float(r[column]) for r in self.rows if r.get(column) not in (None, "")]
        vals = [v for v in vals if not math.isnan(v)]
        if not vals:
            return None, None, 0
        return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0, len(vals)

    def interval(self, column: str) -> Interval | None:
        """IQM over the seeds of a numeric column with its 95 % bootstrap interval (None without values)."""
        if column not in self._intervals:
            vals = [float(r[column]) for r in self.rows if r.get(column) not in (None, "")]
            vals = [v for v in vals if math.isfinite(v)]
            self._intervals[column] = iqm_interval(vals) if vals else None
        return self._intervals[column]

    @property
    def ideal_link(self) -> bool:
        """Every link parameter at its unconstrained value."""
        return all(self.link[col] == ideal for _, col, _, ideal in LINK_FIGURES)


def _link_value(row: dict[str, str], column: str, ideal: float) -> float:
    raw = row.get(column, "")
    return ideal if raw in ("", "None", "null") else float(raw)


def varied_axes(rows: list[dict[str, str]]) -> list[str]:
    """Axis columns of the CSV (everything that is not a fixed or metric column)."""
    if not rows:
        return []
    return [c for c in rows[0] if c not in NOT_AXIS and not c.startswith("drops_")]


def group_rows(rows: list[dict[str, str]]) -> list[Group]:
    """Group the done cells by env, link and every axis (and link value) except the seed, in first-seen order.

    A label names the env when the sweep has several, and the link (its ``link`` column) when it has several
    that no other shown axis already names.
    """
    axes = varied_axes(rows)
    link_axes = link_axis_names(rows)
    method_axes = axes_determined_by(rows, ("method",))
    done = [r for r in rows if r.get("status") == "done"]
    several = {c for c in ("env", "link") if len({r.get(c, "") for r in done}) > 1}
    groups: dict[tuple[str, ...], Group] = {}
    for row in rows:
        if row.get("status") != "done":
            continue
        link = {col: _link_value(row, col, ideal) for _, col, _, ideal in LINK_FIGURES}
        key = (
            row.get("env", ""),
            row["method"],
            row.get("link", ""),
            *(row.get(a, "") for a in axes),
            *(repr(v) for v in link.values()),
        )
        if key not in groups:
            shown = [a for a in axes if row.get(a) not in ("", "-") and a not in method_axes]
            prefix = f"{row['env']}: " if "env" in several else ""
            parts = [row["method"]] + [f"{a}={row[a]}" for a in shown]
            parts += [f"link={row['link']}"] if "link" in several and not link_axes else []
            line = [row["method"]] + [f"{a}={row[a]}" for a in shown if a not in link_axes]
            groups[key] = Group(
                key,
                prefix + ", ".join(parts),
                row["method"],
                bool(row.get("baseline")),
                link,
                [],
                ", ".join(line),
                row.get("env", ""),
            )
        groups[key].rows.append(row)
    return list(groups.values())


def _fmt(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def _fmt_interval(interval: Interval | None) -> str:
    return "–" if interval is None else str(interval)


def markdown_table(groups: Sequence[Group]) -> str:
    """Per cell group: the return as IQM [95 % CI] over seeds, the other columns mean ± std."""
    head = (
        "| cell group | seeds | return (sum over agents) | collisions / ep | messages / ep | bytes / ep "
        "| latency p50 (ms) | drops | wall (s) |"
    )
    lines = [head, "|" + "---|" * 9]
    for g in groups:
        lat = g.stat("latency_p50_s")
        lat_ms = (lat[0] * 1000, lat[1] * 1000, lat[2]) if lat[0] is not None else lat
        lines.append(
            f"| {g.label} | {len(g.rows)} | {_fmt_interval(g.interval(RETURN))} "
            f"| {_fmt(*g.stat('collisions_mean')[:2])} "
            f"| {_fmt(*g.stat('messages_per_episode')[:2], 1)} | {_fmt(*g.stat('bytes_per_episode')[:2], 0)} "
            f"| {_fmt(*lat_ms[:2], 1)} | {_fmt(*g.stat('drops_total')[:2], 0)} "
            f"| {_fmt(*g.stat('wall_seconds')[:2], 0)} |"
        )
    return "\n".join(lines)


def _save(fig: object, path: Path) -> Path:
    """Write a figure as a PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def _env_suffix(env: str) -> str:
    """``-<env as a slug>`` for a per-env figure, empty for a sweep with one env."""
    return "-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", env) if env else ""


def references_under_links(groups: Sequence[Group]) -> list[Group]:
    """The reference (baseline) groups evaluated under a learner's worse link.

    A baseline ignores the bus, but it can model a link itself (e.g. the speaker-listener reference that loses the
    goal at the link's rate, ``env.kwargs.goal_loss``): it is under a link when its ``link`` label is the label of a
    learner group on a non-ideal link. The link figures draw it as a curve beside the learners, not as a flat line.
    """
    worse = {g.rows[0].get("link", "") for g in groups if not g.baseline and not g.ideal_link}
    return [g for g in groups if g.baseline and g.rows[0].get("link", "") in worse]


def plot_link_figure(
    groups: Sequence[Group], stem: str, x_column: str, x_label: str, out_dir: Path, env: str = ""
) -> tuple[Path | None, str | None]:
    """One "return vs <link parameter>" figure of one env's groups; returns (path, None) or (None, why not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learners = [g for g in groups if not g.baseline]
    xs = sorted({g.link[x_column] for g in learners})
    if len(xs) < 2:
        return None, f"{stem}{_env_suffix(env)}: skipped, the sweep does not vary `{x_column}`"
    # hold the other link parameters at their most ideal value in the sweep (largest rate, least latency/loss)
    others = {
        c: (max if c in LARGER_IS_BETTER else min)(g.link[c] for g in learners)
        for _, c, _, _ in LINK_FIGURES
        if c != x_column
    }
    sliced = [g for g in learners if all(g.link[c] == v for c, v in others.items())]
    finite = [x for x in xs if not math.isinf(x)]
    inf_pos = max(finite) * (4 if x_column == "link_rate_bps" else 1.5) if finite else 1.0

    def pos(x: float) -> float:
        if math.isinf(x):
            return inf_pos if inf_pos is not None else x
        return x / 1000.0 if x_column == "link_rate_bps" else x

    # a reference evaluated under a worse link is a curve at the x values of the learners on that link
    learner_link = {g.rows[0].get("link", ""): g for g in learners if not g.ideal_link}
    under_link = references_under_links(groups)
    x_of = {id(g): learner_link[g.rows[0].get("link", "")].link[x_column] for g in under_link}
    x_of.update({id(g): g.link[x_column] for g in sliced})
    held = {id(g) for g in sliced}
    along = [g for g in under_link if id(learner_link[g.rows[0].get("link", "")]) in held]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict[str, list[Group]] = defaultdict(list)
    for g in [*sliced, *along]:
        lines[g.line_label].append(g)
    for label, gs in lines.items():
        gs = sorted(gs, key=lambda g: x_of[id(g)])
        pts = [(pos(x_of[id(g)]), g.interval(RETURN)) for g in gs]
        pts = [(x, i) for x, i in pts if i is not None]
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [p[1].iqm for p in pts]
        err = [[p[1].iqm - p[1].low for p in pts], [p[1].high - p[1].iqm for p in pts]]
        reference = gs[0].baseline
        ax.errorbar(
            x,
            y,
            yerr=err,
            marker="s" if reference else "o",
            linestyle="--" if reference else "-",
            capsize=4,
            label=label + (" (reference, same link)" if reference else ""),
        )
    curves = {id(g) for g in under_link}
    baselines = [g for g in groups if g.baseline and id(g) not in curves and g.interval(RETURN) is not None]
    for g, (color, style) in zip(baselines, cycle(BASELINE_STYLES), strict=False):
        est = g.interval(RETURN)
        assert est is not None
        ax.axhline(est.iqm, color=color, linestyle=style, linewidth=1.2, label=g.line_label)
        if est.high > est.low:
            ax.axhspan(est.low, est.high, alpha=0.08, color=color)
    if x_column == "link_rate_bps":
        ax.set_xscale("log")
    if any(math.isinf(x) for x in xs):
        ax.set_xticks([pos(x) for x in xs])
        scale = 1000 if x_column == "link_rate_bps" else 1
        ax.set_xticklabels(["∞" if math.isinf(x) else f"{x / scale:g}" for x in xs])
    ax.set_xlabel(x_label)
    ax.set_ylabel("evaluation return (sum over agents), IQM and 95 % CI")
    held = ", ".join(f"{c}={'∞' if math.isinf(v) else f'{v:g}'}" for c, v in others.items())
    title = stem.replace("_", " ") + (f" — {env}" if env else "")
    ax.set_title(title + (f"\n({held})" if held else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out_dir / f"{stem}{_env_suffix(env)}.png"
    return _save(fig, path), None


def axes_determined_by(rows: list[dict[str, str]], columns: Sequence[str]) -> set[str]:
    """Axes whose label fixes the values of ``columns``, which vary (so showing the axis would be redundant).

    Rows where the axis does not apply (empty label, or ``-`` for a baseline) are ignored.
    """
    out = set()
    for a in varied_axes(rows):
        by_label: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for r in rows:
            if r.get(a) not in (None, "", "-"):
                by_label[r[a]].add(tuple(r.get(c, "") for c in columns))
        distinct = {v for vs in by_label.values() for v in vs}
        if len(distinct) > 1 and all(len(v) == 1 for v in by_label.values()):
            out.add(a)
    return out


def link_axis_names(rows: list[dict[str, str]]) -> set[str]:
    """Axes whose label fixes the link settings (redundant with a link figure's x value)."""
    return axes_determined_by(rows, [c for _, c, _, _ in LINK_FIGURES])


def plot_bar_figure(
    groups: Sequence[Group], stem: str, column: str, y_label: str, out_dir: Path
) -> tuple[Path | None, str | None]:
    """A bar per cell group (mean ± std over seeds) of one metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(g.label, *g.stat(column)[:2]) for g in groups if g.stat(column)[0] is not None]
    if not pts:
        return None, f"{stem}: skipped, no cell reports `{column}`"
    labels, means, stds = zip(*pts, strict=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(pts) + 2), 4.5))
    ax.bar(range(len(pts)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(pts)))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
    ax.set_xlabel("cell group")
    ax.set_ylabel(y_label)
    ax.set_title(stem.replace("_", " ") + " (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    path = out_dir / f"{stem}.png"
    return _save(fig, path), None


def training_curve(cell_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(env steps, mean return of the last 100 training episodes) from a cell's ``metrics.jsonl``, or None."""
    path = cell_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    pts = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("return_sum_recent_mean") is not None and "env_steps" in rec:
            pts.append((float(rec["env_steps"]), float(rec["return_sum_recent_mean"])))
    if len(pts) < 2:
        return None
    steps, returns = np.array(pts).T
    return steps, returns


def plot_learning_curves(
    groups: Sequence[Group], cells_dir: Path, out_dir: Path, env: str = ""
) -> tuple[Path | None, str | None]:
    """Training return vs env steps of every learning group on the ideal link: mean over seeds, range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = f"learning_curves{_env_suffix(env)}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for g in groups:
        if g.baseline or not g.ideal_link:
            continue
        curves = [c for c in (training_curve(cells_dir / r["cell_id"]) for r in g.rows) if c is not None]
        if not curves:
            continue
        end = min(float(c[0][-1]) for c in curves)
        grid = np.linspace(max(float(c[0][0]) for c in curves), end, 100)
        ys = np.stack([np.interp(grid, c[0], c[1]) for c in curves])
        (line,) = ax.plot(grid, ys.mean(axis=0), label=f"{g.line_label} ({len(curves)} seeds)")
        if len(curves) > 1:
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.15, color=line.get_color())
        drawn += 1
    under_link = {id(g) for g in references_under_links(groups)}
    baselines = [g for g in groups if g.baseline and id(g) not in under_link and g.interval(RETURN) is not None]
    for g, (color, style) in zip(baselines, cycle(BASELINE_STYLES), strict=False):
        est = g.interval(RETURN)
        assert est is not None
        ax.axhline(est.iqm, color=color, linestyle=style, linewidth=1.2, label=g.line_label)
    if not drawn:
        plt.close(fig)
        return None, f"{stem}: skipped, no learning cell on the ideal link has a training curve"
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return (sum over agents, last 100 episodes)")
    ax.set_title(
        "learning curves" + (f" — {env}" if env else "") + "\n(ideal link; mean over seeds, their range shaded)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out_dir / f"{stem}.png"
    return _save(fig, path), None


COMPARED_COLUMNS = ("return_sum_mean", "collisions_mean", "env_steps", "bytes_per_episode")
"""What a rerun must reproduce to count as the same result."""


def comparison_table(rows: list[dict[str, str]], other_rows: list[dict[str, str]], other_name: str) -> str:
    """Markdown table of the cells done in both sweeps: the compared columns side by side and whether all equal.

    Values are compared as written in ``results.csv`` (the same float prints the same digits), so "same" means
    bit-identical results, which in-process and mesh cells give in lockstep with the sim clock.
    """
    other = {r["cell_id"]: r for r in other_rows if r.get("status") == "done"}
    pairs = [(r, other[r["cell_id"]]) for r in rows if r.get("status") == "done" and r["cell_id"] in other]
    if not pairs:
        return f"No cell is done in both this sweep and {other_name}."
    lines = [
        f"| cell | return here | return in {other_name} | collisions here / there "
        f"| same {', '.join(COMPARED_COLUMNS)} |",
        "|---|---|---|---|---|",
    ]
    for mine, theirs in pairs:
        same = all(mine.get(c, "") == theirs.get(c, "") for c in COMPARED_COLUMNS)
        lines.append(
            f"| `{mine['cell_id']}` | {mine.get('return_sum_mean', '')} | {theirs.get('return_sum_mean', '')} "
            f"| {mine.get('collisions_mean', '')} / {theirs.get('collisions_mean', '')} | {'yes' if same else 'NO'} |"
        )
    identical = sum(all(m.get(c, "") == t.get(c, "") for c in COMPARED_COLUMNS) for m, t in pairs)
    lines += ["", f"{identical} of {len(pairs)} cells done in both give the same results."]
    return "\n".join(lines)


def write_report(sweep_dir: Path, compare_dir: Path | None = None) -> tuple[Path, list[Path], list[str]]:
    """Write the figures and ``report.md``.

    Args:
        sweep_dir: The sweep's output folder.
        compare_dir: Another run of (some of) the same cells, e.g. a sample rerun on the other launcher: the
            report gains a table comparing the cells done in both.

    Returns:
        The report path, the figure paths and the notes about skipped figures.

    Raises:
        FileNotFoundError: If ``sweep_dir/results.csv`` (or ``compare_dir``'s) does not exist.
    """
    rows = read_csv(sweep_dir / "results.csv")
    if compare_dir is not None:
        read_csv(compare_dir / "results.csv")  # fail before drawing anything
    groups = group_rows(rows)
    fig_dir = sweep_dir / "report"
    fig_dir.mkdir(exist_ok=True)
    figures: list[Path] = []
    notes: list[str] = []
    envs = list(dict.fromkeys(g.env for g in groups))
    for env in envs:
        env_groups = [g for g in groups if g.env == env]
        shown = env if len(envs) > 1 else ""
        for stem, col, label, _ in LINK_FIGURES:
            path, note = plot_link_figure(env_groups, stem, col, label, fig_dir, shown)
            figures += [path] if path else []
            notes += [note] if note else []
        path, note = plot_learning_curves(env_groups, sweep_dir / "cells", fig_dir, shown)
        figures += [path] if path else []
        notes += [note] if note else []
    for stem, col, label in (
        ("bytes_per_episode", "bytes_per_episode", "bus bytes / training episode (all agents)"),
        ("collisions", "collisions_mean", "collisions per evaluation episode"),
    ):
        path, note = plot_bar_figure(groups, stem, col, label, fig_dir)
        figures += [path] if path else []
        notes += [note] if note else []
    failed = [r for r in rows if r.get("status") == "failed"]
    missing = [r for r in rows if r.get("status") not in ("done", "failed")]
    md = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"{len(rows)} cells: {len(rows) - len(failed) - len(missing)} done, {len(failed)} failed, "
        f"{len(missing)} not run yet. Return: interquartile mean over seeds with its stratified "
        "bootstrap 95 % confidence interval in brackets (rliable; one seed shows its value alone); the other "
        "columns: mean ± std over seeds. Return = sum over agents of the episode return, averaged over the "
        "evaluation episodes. Messages and bytes are bus totals of training (all agents) per training episode.",
        "",
        markdown_table(groups),
        "",
        "## Figures",
        "",
    ]
    md += [f"- [{p.name}](report/{p.name})" for p in figures] or ["- (none)"]
    if notes:
        md += ["", "Skipped:", ""] + [f"- {n}" for n in notes]
    if compare_dir is not None:
        md += [
            "",
            f"## Compared with {compare_dir}",
            "",
            comparison_table(rows, read_csv(compare_dir / "results.csv"), compare_dir.name),
        ]
    if failed:
        md += ["", "## Failed cells", ""] + [f"- `{r['cell_id']}`: {r.get('error') or 'failed'}" for r in failed]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(md) + "\n")
    return report, figures, notes

"""The sweep file (``marlmesh sweep -c SWEEP.yaml``): a validated model and its expansion into cells.

A sweep file names a base run config, fixed ``--set``-style overrides, and a grid of named axes. Every axis
is a list of *override sets* (``{config.key: value, ...}``); the cells are the cartesian product of the axes
and the seeds::

    name: quick
    base_config: ../smoke.yaml          # relative to the sweep file
    fixed: {train.total_env_steps: 20000}
    axes:
      algorithm:
        - {algo.name: ippo, channel.name: none}
        - {algo.name: ippo, channel.name: broadcast}
        - {baseline: scripted}
      bandwidth:
        - {label: unlimited, bus.links.default.rate_bps: null}
        - {label: 64kbit, bus.links.default.rate_bps: 64000}
    seeds: [0, 1, 2]
    budgets:
      - when: {channel.name: broadcast}
        set: {train.total_env_steps: 30000}

Two keys of an override set are not config keys: ``label`` (how the value is shown in cell ids, tables and
plots; default: the values joined by ``-``) and ``baseline`` (one of
:data:`~marlmesh.experiments.baselines.BASELINES`, e.g. ``random`` or ``scripted``; which scripted ones fit
depends on ``env.name``: the cell trains nothing and evaluates that policy; see
:mod:`marlmesh.experiments.baselines`). A baseline cell ignores the overrides that only matter to learning and
communication (``algo.*``, ``channel.*``, ``bus.*``, ``train.*``), and ``env.num_envs`` (it evaluates with
``eval.num_envs``), so grid points that differ only in those collapse into one cell. Its other overrides apply,
so a reference can change the env: ``{label: perfect-comm, baseline: scripted, env.obs_radius: null}`` evaluates
the scripted controller with full observation in a sweep whose cells observe partially (the ``label`` names the
cell's method, which would otherwise be ``baseline:scripted`` like the partial-observation cell's).

``grids:`` lists sub-grids whose axes are crossed with the top-level axes (a "star" design: vary bandwidth
in one sub-grid and latency in another); see ``configs/sweeps/full.yaml``.

A cell id is ``<axis labels and seed, as a slug>-<8 hex digits>``; the hex digits hash the cell's resolved
config (built-in defaults + base config + overrides, unvalidated) and baseline, so two override sets that
describe the same run (``latency_ms: 0`` written out or left at its default) are one cell. The id is stable
as long as that resolved config is: a new config key or a changed default changes the ids, and a resumed
sweep then reruns its cells (which is what reproducibility asks for).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from marlmesh.config import ConfigError
from marlmesh.experiments.baselines import BASELINES

#: Keys of an override set that are not config keys.
LABEL_KEY = "label"
BASELINE_KEY = "baseline"
#: Config keys a baseline cell does not use (dropped from its overrides, so its cell id ignores them): the
#: learning and communication sections, and ``env.num_envs`` (a baseline evaluates with ``eval.num_envs``).
BASELINE_IGNORED_PREFIXES = ("algo.", "channel.", "bus.", "train.", "env.num_envs")
#: Settings that change how a cell's processes start, never what it computes: left out of the cell id, so that
#: adding one (with a default) keeps every existing sweep folder resumable.
RESULT_NEUTRAL_KEYS = ("runtime.agent_start",)
#: The link keys the report plots against.
RATE_KEY = "bus.links.default.rate_bps"
LATENCY_KEY = "bus.links.default.latency_ms"
LOSS_KEY = "bus.links.default.loss"


class SweepError(ValueError):
    """The sweep file is invalid; the message is one line naming the key path to fix."""


class BudgetRule(BaseModel):
    """Extra overrides for the cells whose resolved overrides match ``when`` (e.g. a bigger training budget)."""

    model_config = ConfigDict(extra="forbid")

    when: dict[str, Any] = Field(default_factory=dict)
    """Override key -> value that a cell must have (``baseline`` works too); empty = every cell."""
    set: dict[str, Any]
    """Overrides applied to the matching cells, after the axes (later rules win)."""


#: Names an axis may not have (they are columns of results.csv). Axes named ``env`` and ``link`` are allowed:
#: their labels become those columns.
RESERVED_COLUMNS = {"cell_id", "status", "method", "algo_name", "channel_name", "baseline", "seed"} | {
    "link_rate_bps",
    "link_latency_ms",
    "link_jitter_ms",
    "link_loss",
    "link_range",
}


def _check_axes(axes: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    for name, values in axes.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"axis name {name!r} must be a word (letters, digits, _)")
        if name in RESERVED_COLUMNS:
            raise ValueError(f"axis name {name!r} is a results column; pick another")
        if not values:
            raise ValueError(f"axis {name!r} has no values")
        for i, value in enumerate(values):
            if not value:
                raise ValueError(f"axis {name!r} value #{i} is empty")
            if BASELINE_KEY in value and value[BASELINE_KEY] not in BASELINES:
                raise ValueError(
                    f"axis {name!r} value #{i}: baseline {value[BASELINE_KEY]!r} is unknown "
                    f"(known: {', '.join(BASELINES)})"
                )
        labels = [value_label(v) for v in values]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"axis {name!r} has values with the same label {dup}; add a 'label' key")
    return axes


class GridSpec(BaseModel):
    """One sub-grid: its axes are crossed with the sweep's top-level axes."""

    model_config = ConfigDict(extra="forbid")

    axes: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    """Axis name -> list of override sets."""
    seeds: list[int] | None = Field(None, min_length=1)
    """Seeds of this sub-grid; unset = the sweep's ``seeds``."""

    @field_validator("axes")
    @classmethod
    def _valid_axes(cls, axes: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        return _check_axes(axes)


class SweepSpec(BaseModel):
    """A whole sweep file.

    Attributes:
        name: Shown in progress lines and the report title.
        base_config: Run config every cell starts from (path relative to the sweep file); unset = the
            built-in defaults.
        fixed: ``--set``-style overrides applied to every cell (before the axes).
        axes: Axis name -> list of override sets; cells are the cartesian product (times the seeds).
        seeds: The ``seed`` of each cell; every grid point runs once per seed.
        grids: Optional sub-grids, e.g. one that varies bandwidth and one that varies latency (a "star"
            design instead of a full factorial). Each sub-grid's axes are crossed with the top-level
            ``axes``; without sub-grids the top-level axes alone form the grid. Cells with the same resolved
            config and seed are run once.
        budgets: Per-cell budget overrides.
        cell_timeout_s: Longest a cell may run before it is stopped and recorded as failed; unset = no limit.
        launcher: How a training cell runs: ``mesh`` (``marlmesh train``'s default, one OS process per env, agent
            and learner) or ``inprocess`` (the same program in one process, the same links emulated; with the
            sweep's lockstep weights and sim clock it gives the mesh's results bit for bit, see
            docs/reproducibility.md, and saves the processes' start-up and memory). Not part of a cell's id, so
            a sample of an in-process sweep rerun on the mesh (``marlmesh sweep --launcher mesh --cells ...``)
            has the same cell ids to compare.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    base_config: str | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    grids: list[GridSpec] = Field(default_factory=list)
    budgets: list[BudgetRule] = Field(default_factory=list)
    cell_timeout_s: float | None = Field(None, gt=0)
    launcher: Literal["mesh", "inprocess"] = "mesh"

    @field_validator("axes")
    @classmethod
    def _valid_axes(cls, axes: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        return _check_axes(axes)

    def axis_names(self) -> list[str]:
        """Every axis name, top-level first, then the sub-grids' in order of appearance."""
        names = list(self.axes)
        for grid in self.grids:
            names += [n for n in grid.axes if n not in names]
        return names


def value_label(value: dict[str, Any]) -> str:
    """How an axis value is shown: its ``label`` key, else its values joined by ``-`` (None = ``none``)."""
    if LABEL_KEY in value:
        return str(value[LABEL_KEY])
    return "-".join("none" if v is None else str(v) for v in value.values())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_+-]+", "-", text).strip("-") or "x"


@dataclass
class Cell:
    """One run of the sweep.

    Attributes:
        cell_id: ``<readable slug>-<8 hex of the overrides hash>``; the cell's folder name.
        axes: Axis name -> label of this cell's value (``-`` for an axis a baseline cell ignores).
        seed: The cell's seed.
        overrides: Every config override of the cell (fixed, axes, budgets, seed), in order.
        baseline: ``random``/``scripted`` for an evaluation-only cell, else None.
    """

    cell_id: str
    axes: dict[str, str]
    seed: int
    overrides: dict[str, Any]
    baseline: str | None = None
    method: str = field(default="")

    def set_args(self) -> list[str]:
        """The overrides as ``key=value`` strings for ``--set`` (values in JSON, which YAML reads back)."""
        return [f"{k}={json.dumps(v)}" for k, v in self.overrides.items()]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (written to ``sweep.json``)."""
        return {
            "cell_id": self.cell_id,
            "axes": self.axes,
            "seed": self.seed,
            "baseline": self.baseline,
            "method": self.method,
            "overrides": self.overrides,
        }


def method_label(overrides: dict[str, Any], baseline: str | None) -> str:
    """The line a cell belongs to in plots: ``baseline:<name>``, ``<algo>+<channel>`` or ``<algo>``.

    An explicit ``label`` on the axis value that sets ``algo.name`` or ``baseline`` replaces it.
    """
    if baseline:
        return f"baseline:{baseline}"
    algo = overrides.get("algo.name", "algo")
    channel = overrides.get("channel.name")
    if _centralized(algo):  # its agents exchange nothing; the label says what it is
        return mark_centralized(algo, algo)
    return algo if channel is None else f"{algo}+{channel}"


def _centralized(algo: str) -> bool:
    from marlmesh.centralized.plugin import is_centralized

    return is_centralized(algo)


def mark_centralized(method: str, algo: str) -> str:
    """``method`` with `` (CENTRALIZED REFERENCE)`` appended when ``algo`` is a centralized reference."""
    from marlmesh.centralized import CENTRALIZED_LABEL

    if not _centralized(algo) or CENTRALIZED_LABEL in method:
        return method
    return f"{method} ({CENTRALIZED_LABEL})"


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file.

    Raises:
        SweepError: One line with the file, the key path and what is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SweepError(f"sweep file {str(p)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise SweepError(f"sweep file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                valid = _valid_keys(err["loc"])
                near = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1, cutoff=0.5)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                msg = f"unknown key{hint} (valid keys here: {', '.join(valid)})"
            problems.append(f"{loc}: {msg}")
        raise SweepError(f"sweep file {str(p)!r}: {'; '.join(problems)}") from None


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    if len(loc) >= 3 and loc[0] == "budgets":
        return sorted(BudgetRule.model_fields)
    if len(loc) >= 3 and loc[0] == "grids":
        return sorted(GridSpec.model_fields)
    return sorted(SweepSpec.model_fields)


def resolve_base_config(spec: SweepSpec, sweep_file: Path) -> Path | None:
    """The absolute base config path (relative paths are relative to the sweep file's folder).

    Raises:
        SweepError: If the file does not exist.
    """
    if spec.base_config is None:
        return None
    p = Path(spec.base_config)
    if not p.is_absolute():
        p = (sweep_file.parent / p).resolve()
    if not p.is_file():
        raise SweepError(f"base_config: {spec.base_config!r} not found (looked at {p})")
    return p


def read_base_data(path: Path | None) -> dict[str, Any]:
    """The base config file's content as a dict (empty without a base config).

    Raises:
        SweepError: If it is not a YAML mapping.
    """
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SweepError(f"base_config {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise SweepError(f"base_config {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def _matches(when: dict[str, Any], overrides: dict[str, Any], baseline: str | None) -> bool:
    for key, want in when.items():
        have = baseline if key == BASELINE_KEY else overrides.get(key)
        if have != want:
            return False
    return True


def resolved_config_data(base_data: dict[str, Any], set_args: list[str]) -> dict[str, Any]:
    """Built-in defaults, then the base config, then the overrides, as a plain dict (not validated).

    Used to recognise cells that are the same run although their override sets differ (``rate_bps: null``
    written out or left at its default).
    """
    from marlmesh.config import Config, apply_overrides

    merged = _deep_merge(Config().model_dump(mode="json"), base_data)
    return apply_overrides(merged, set_args)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def expand_cells(spec: SweepSpec, base_data: dict[str, Any] | None = None) -> list[Cell]:
    """The cells of a sweep, in grid order (first axis slowest, seeds fastest).

    Cells whose resolved config (defaults + ``base_data`` + overrides, without the sections a baseline
    ignores) and baseline are equal are one cell; it keeps the first id and gains the axis labels of the
    duplicates.

    Args:
        spec: The sweep.
        base_data: The base config file's content (a dict), for recognising equal cells.
    """
    grids = spec.grids or [GridSpec()]
    cells: list[Cell] = []
    by_digest: dict[str, Cell] = {}
    for grid in grids:
        axes = {**spec.axes, **grid.axes}
        names = list(axes)
        for combo in itertools.product(*(axes[n] for n in names)):
            baseline = next((v[BASELINE_KEY] for v in combo if BASELINE_KEY in v), None)
            for seed in grid.seeds or spec.seeds:
                cell = _make_cell(spec, names, combo, baseline, seed, base_data or {})
                twin = by_digest.get(cell.cell_id.rsplit("-", 1)[1])
                if twin is not None:
                    for name, label in cell.axes.items():
                        twin.axes.setdefault(name, label)
                    continue
                by_digest[cell.cell_id.rsplit("-", 1)[1]] = cell
                cells.append(cell)
    return cells


def _canonical(x: Any) -> Any:
    """Integral floats as ints (``0`` and ``0.0`` are the same setting), recursively."""
    if isinstance(x, dict):
        return {k: _canonical(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_canonical(v) for v in x]
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def _without(data: dict[str, Any], dotted_keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of nested ``data`` without the ``a.b.c`` keys given (the rest shared, not copied)."""
    out = dict(data)
    for dotted in dotted_keys:
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                break
            node[part] = dict(node[part])
            node = node[part]
        else:
            node.pop(last, None)
    return out


def _make_cell(
    spec: SweepSpec,
    names: list[str],
    combo: tuple[dict[str, Any], ...],
    baseline: str | None,
    seed: int,
    base_data: dict[str, Any],
) -> Cell:
    overrides: dict[str, Any] = dict(spec.fixed)
    labels: dict[str, str] = {}
    for name, value in zip(names, combo, strict=True):
        keys = {k: v for k, v in value.items() if k not in (LABEL_KEY, BASELINE_KEY)}
        if baseline and BASELINE_KEY not in value and keys and all(_ignored(k) for k in keys):
            labels[name] = "-"
        else:
            labels[name] = value_label(value)
        overrides.update(keys)
    for rule in spec.budgets:
        if _matches(rule.when, overrides, baseline):
            overrides.update(rule.set)
    if baseline:
        overrides = {k: v for k, v in overrides.items() if not _ignored(k)}
    overrides["seed"] = seed
    resolved = resolved_config_data(base_data, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    kept = _without(resolved, RESULT_NEUTRAL_KEYS)
    if baseline:
        kept = {k: v for k, v in kept.items() if f"{k}." not in BASELINE_IGNORED_PREFIXES}
        kept["env"] = {k: v for k, v in kept.get("env", {}).items() if k != "num_envs"}
    digest = hashlib.sha256(
        json.dumps(_canonical({"config": kept, "baseline": baseline}), sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    readable = "_".join(f"{n}={labels[n]}" for n in names if labels[n] != "-")
    cell_id = f"{_slug(readable + f'_seed={seed}')}-{digest}"
    method = method_label(
        {
            "algo.name": resolved.get("algo", {}).get("name", "algo"),
            "channel.name": resolved.get("channel", {}).get("name"),
        },
        baseline,
    )
    for value in combo:  # an explicit label on the value that picks the algorithm names the method
        if LABEL_KEY in value and ("algo.name" in value or BASELINE_KEY in value):
            method = str(value[LABEL_KEY])
    method = mark_centralized(method, str(resolved.get("algo", {}).get("name", "")))  # even under a custom label
    return Cell(cell_id, labels, seed, overrides, baseline, method)


def _ignored(key: str) -> bool:
    return key.startswith(BASELINE_IGNORED_PREFIXES)


def validate_cells(cells: list[Cell], base_config: Path | None, check_plugins: bool = True) -> None:
    """Validate every cell's resolved run config (and plugin names) before anything runs.

    Raises:
        SweepError: Naming the first bad cell and the config key to fix.
    """
    from marlmesh.config import load_config
    from marlmesh.plugins import PluginError

    for cell in cells:
        try:
            config = load_config(base_config, cell.set_args())
            if check_plugins:
                from marlmesh import plugins
                from marlmesh.launch.train import check_plugins as check_train_plugins

                if cell.baseline is None:
                    check_train_plugins(config)  # the same checks as `marlmesh train`
                else:
                    plugins.load("envs", config.env.name)
        except (ConfigError, PluginError) as exc:
            raise SweepError(f"cell {cell.cell_id}: {exc}") from None

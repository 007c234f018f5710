"""Sweep files, cell expansion, the runner (with fake cells), results.csv and the report, on synthetic data."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from marlmesh.config import load_config
from marlmesh.experiments import sweep as sweep_mod
from marlmesh.experiments.baselines import BASELINES
from marlmesh.experiments.report import write_report
from marlmesh.experiments.results import read_csv, summary_metrics
from marlmesh.experiments.sweep import SweepRunner
from marlmesh.experiments.sweep_spec import (
    SweepError,
    expand_cells,
    load_sweep,
    read_base_data,
    resolve_base_config,
    validate_cells,
)

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- the sweep file --------------------------------------------------------------------------------
def test_unknown_key_names_the_key_path(tmp_path):
    p = _write(tmp_path, "axes: {a: [{seed: 1}]}\nbudgets: [{when: {}, set: {}, sett: {}}]\n")
    with pytest.raises(
        SweepError, match=r"budgets\.0\.sett: unknown key; did you mean .set.\? \(valid keys here: set, when\)"
    ):
        load_sweep(p)
    with pytest.raises(SweepError, match=r": axis: unknown key; did you mean 'axes'\?"):
        load_sweep(_write(tmp_path, "axis: {}\n", "b.yaml"))


def test_bad_axis_values_are_rejected(tmp_path):
    known = re.escape(f"(known: {', '.join(BASELINES)})")
    assert known.startswith(re.escape("(known: random, scripted, scripted-priority, scripted-fixed, "))
    with pytest.raises(SweepError, match=r"baseline 'greedy' is unknown " + known):
        load_sweep(_write(tmp_path, "axes: {m: [{baseline: greedy}]}\n"))
    with pytest.raises(SweepError, match=r"same label.*add a 'label' key"):
        load_sweep(_write(tmp_path, "axes: {m: [{seed: 1}, {env.num_envs: 1}]}\n"))
    with pytest.raises(SweepError, match=r"'seed' is a results column"):
        load_sweep(_write(tmp_path, "axes: {seed: [{seed: 1}]}\n"))
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "missing.yaml")


def test_cells_are_the_cartesian_product_with_stable_readable_ids(tmp_path):
    spec = load_sweep(
        _write(
            tmp_path,
            """
fixed: {train.total_env_steps: 100}
axes:
  channel: [{channel.name: none}, {channel.name: broadcast}]
  envs: [{env.num_envs: 2}, {label: four, env.num_envs: 4}]
seeds: [0, 1]
budgets: [{when: {channel.name: broadcast}, set: {train.total_env_steps: 200}}]
""",
        )
    )
    cells = expand_cells(spec)
    assert len(cells) == 8
    assert len({c.cell_id for c in cells}) == 8
    first = cells[0]
    assert first.cell_id.startswith("channel=none_envs=2_seed=0-") and len(first.cell_id.rsplit("-", 1)[1]) == 8
    assert [c.cell_id for c in expand_cells(spec)] == [c.cell_id for c in cells]  # stable
    four = [c for c in cells if c.axes["envs"] == "four"]
    assert len(four) == 4 and all(c.overrides["env.num_envs"] == 4 for c in four)
    for c in cells:
        want = 200 if c.overrides["channel.name"] == "broadcast" else 100
        assert c.overrides["train.total_env_steps"] == want
        assert c.method == f"ippo+{c.overrides['channel.name']}"
    assert 'channel.name="none"' in first.set_args()


def test_cell_ids_ignore_how_processes_start_but_not_what_cells_compute(tmp_path):
    def ids(fixed: str) -> list[str]:
        spec = load_sweep(_write(tmp_path, f"fixed: {{{fixed}}}\naxes: {{m: [{{algo.name: ippo}}]}}\nseeds: [0]\n"))
        return [c.cell_id for c in expand_cells(spec)]

    plain = ids("train.total_env_steps: 100")
    assert ids("train.total_env_steps: 100, runtime.agent_start: exec") == plain
    assert ids("train.total_env_steps: 100, runtime.agent_start: fork") == plain
    assert ids("train.total_env_steps: 100, train.graph_engine: onnxruntime") != plain
    assert ids("train.total_env_steps: 200") != plain


def test_baseline_cells_ignore_learning_and_link_axes(tmp_path):
    spec = load_sweep(
        _write(
            tmp_path,
            """
axes:
  algorithm: [{algo.name: ippo}, {baseline: random}, {label: greedy, baseline: scripted}]
  bandwidth: [{bus.links.default.rate_bps: null}, {bus.links.default.rate_bps: 64000}]
seeds: [0, 1]
""",
        )
    )
    cells = expand_cells(spec)
    learners = [c for c in cells if c.baseline is None]
    baselines = [c for c in cells if c.baseline]
    assert len(learners) == 4 and len(baselines) == 4  # 2 baselines x 2 seeds, bandwidth collapsed
    assert {c.method for c in baselines} == {"baseline:random", "greedy"}
    assert all(c.axes["bandwidth"] == "-" for c in baselines)
    assert all(not any(k.startswith("bus.") for k in c.overrides) for c in baselines)


def test_equal_configs_are_one_cell_across_sub_grids(tmp_path):
    spec = load_sweep(
        _write(
            tmp_path,
            """
axes: {algorithm: [{algo.name: ippo}]}
grids:
  - axes: {bandwidth: [{bus.links.default.rate_bps: null}, {bus.links.default.rate_bps: 1000}]}
  - axes: {latency: [{bus.links.default.latency_ms: 0}, {bus.links.default.latency_ms: 100}]}
    seeds: [5]
seeds: [5]
""",
        )
    )
    cells = expand_cells(spec)
    assert len(cells) == 3  # the ideal point appears in both sub-grids
    assert cells[0].axes == {"algorithm": "ippo", "bandwidth": "none", "latency": "0"}


def test_shipped_sweep_files_expand():
    counts = {}
    for name in ("quick", "full", "study"):
        path = ROOT / "configs" / "sweeps" / f"{name}.yaml"
        spec = load_sweep(path)
        counts[name] = expand_cells(spec, read_base_data(resolve_base_config(spec, path)))
    assert len(counts["quick"]) == 6
    # 3 tasks x (6 learners + random + 2 references) x 3 seeds, plus 2 tasks x 13 links x dgmappo x 3 seeds
    assert len(counts["study"]) == 3 * 9 * 3 + (13 + 6) * 3 + 2 * 3 * 3  # methods, links, references under loss
    validate_cells(counts["study"], ROOT / "configs" / "ippo.yaml")  # every task, method and reference exists
    assert len(counts["full"]) == 138  # 6 learners x 7 link points x 3 seeds + 6 stress + 2 baselines x 3 seeds
    methods = {c.method for c in counts["full"]}
    assert {"ippo", "ippo+broadcast", "dgmappo", "co2po", "mfppo", "mappo-central (CENTRALIZED REFERENCE)"} <= methods


def test_validation_names_the_cell_and_the_config_key(tmp_path):
    spec = load_sweep(_write(tmp_path, "axes: {envs: [{env.num_envs: 2}, {env.nmu_envs: 3}]}\n"))
    with pytest.raises(SweepError, match=r"cell envs=3_seed=0-\w+: unknown config key 'env.nmu_envs'"):
        validate_cells(expand_cells(spec), None)
    spec = load_sweep(_write(tmp_path, "axes: {a: [{algo.name: nosuchalgo}]}\n", "b.yaml"))
    with pytest.raises(SweepError, match="nosuchalgo"):
        validate_cells(expand_cells(spec), None)


# -- the runner with fake cells ---------------------------------------------------------------------
FAKE_CELL = """
import json, sys, pathlib
run_dir = pathlib.Path(sys.argv[1]); args = sys.argv[2:]
if any("fail" in a for a in args):
    print("something broke in this cell"); sys.exit(3)
log = run_dir.parent.parent / "runs.log"
with open(log, "a") as f: f.write(run_dir.name + "\\n")
seed = int([a for a in args if a.startswith("seed=")][0].split("=")[1])
summary = {"status": "done", "env_steps": 100, "episodes": 10, "wall_seconds": 1.0,
           "eval": {"episodes": 4, "return_sum_mean": -50.0 - seed, "return_sum_std": 1.0,
                    "collisions_mean": 0.5, "wall_seconds": 0.5},
           "bus": {"messages_sent": 300, "bytes_sent": 30000, "dropped": {"expired": 2},
                   "delivery_latency_p50_seconds": 0.01}}
(run_dir / "summary.json").write_text(json.dumps(summary))
"""


def _fake_command(cell, base_config, run_dir, launcher="mesh"):
    return [sys.executable, "-c", FAKE_CELL, str(run_dir), *cell.set_args()]


def test_runner_runs_in_parallel_records_failures_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "cell_command", _fake_command)
    sweep_file = _write(
        tmp_path,
        """
name: fake
axes:
  channel: [{channel.name: none}, {channel.name: broadcast}, {label: bad, channel.name: fail}]
seeds: [0, 1]
""",
    )
    out = tmp_path / "out"
    runner = SweepRunner(sweep_file, out, parallel=3, err=open(tmp_path / "progress.txt", "w"))  # noqa: SIM115
    assert runner.run() == 2
    rows = read_csv(out / "results.csv")
    assert len(rows) == 6
    by_status = {r["cell_id"]: r["status"] for r in rows}
    assert sorted(by_status.values()) == ["done"] * 4 + ["failed"] * 2
    failed = [r for r in rows if r["status"] == "failed"]
    assert all(r["error"] == "exit code 3" for r in failed)
    record = json.loads((out / "cells" / failed[0]["cell_id"] / "cell.json").read_text())
    assert "something broke in this cell" in record["log_tail"]
    done = [r for r in rows if r["status"] == "done"]
    assert {float(r["return_sum_mean"]) for r in done} == {-50.0, -51.0}
    assert all(float(r["messages_per_episode"]) == 30.0 and r["drops_expired"] == "2" for r in done)
    progress = (tmp_path / "progress.txt").read_text()
    assert "6 cells: 0 already done, 6 to run, 3 at a time" in progress and "2 failed" in progress
    assert len((out / "runs.log").read_text().split()) == 4
    # rerun: finished cells are skipped, failed ones run again (and fail again)
    runner = SweepRunner(sweep_file, out, parallel=1, err=open(tmp_path / "progress2.txt", "w"))  # noqa: SIM115
    assert runner.run() == 2
    assert sorted(runner.skipped) == sorted(r["cell_id"] for r in done)
    assert len((out / "runs.log").read_text().split()) == 4  # nothing that was done ran again
    assert json.loads((out / "sweep.json").read_text())["axes"] == ["channel"]


# -- results and report -----------------------------------------------------------------------------
def test_summary_metrics_tolerate_missing_bus_fields():
    assert summary_metrics(None)["return_sum_mean"] is None
    m = summary_metrics({"eval": {"return_sum_mean": -3.0}, "bus": None, "episodes": 0})
    assert m["return_sum_mean"] == -3.0 and m["messages_per_episode"] is None and m["drops_total"] is None
    m = summary_metrics(
        {
            "episodes": 4,
            "bus": {"messages_sent": 8, "bytes_sent": None, "dropped": {"loss": 3, "range": 1}},
            "eval": {"return_sum_mean": float("nan")},
        }
    )
    assert m["messages_per_episode"] == 2.0 and m["bytes_per_episode"] is None
    assert m["drops_total"] == 4 and m["drops_loss"] == 3 and m["return_sum_mean"] is None


def _synthetic_sweep(tmp_path: Path, axes_yaml: str, ret) -> Path:
    """A sweep folder whose cells hold synthetic summaries (no processes)."""
    sweep_file = _write(tmp_path, axes_yaml)
    out = tmp_path / "out"
    runner = SweepRunner(sweep_file, out, err=open(tmp_path / "p.txt", "w"))  # noqa: SIM115
    runner.write_manifest()
    for cell in runner.cells:
        d = runner.cell_dir(cell)
        d.mkdir(parents=True)
        summary = {
            "status": "done",
            "episodes": 100,
            "wall_seconds": 10.0,
            "eval": {"return_sum_mean": ret(cell), "return_sum_std": 2.0, "collisions_mean": 1.0},
            "bus": {"messages_sent": 600, "bytes_sent": 60000 if cell.baseline is None else 0, "dropped": {}},
        }
        if cell.baseline:
            summary.update({"baseline": cell.baseline, "bus": None})
        (d / "summary.json").write_text(json.dumps(summary))
        if cell.baseline is None:  # a training curve that rises to the cell's return
            curve = [{"env_steps": t * 1000, "return_sum_recent_mean": ret(cell) - 10 + t} for t in range(11)]
            (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in curve) + "\n")
    runner.write_results()
    return out


def test_report_plots_link_figures_with_error_bars_and_a_table(tmp_path, monkeypatch):
    monkeypatch.setattr("marlmesh.experiments.estimates.BOOTSTRAP_REPS", 200)  # the bounds, not their precision

    def ret(cell):
        o = cell.overrides
        rate = o.get("bus.links.default.rate_bps") or 1e9
        return -30.0 - 10.0 * (rate < 10_000) - o.get("bus.links.default.latency_ms", 0) / 50 - cell.seed

    out = _synthetic_sweep(
        tmp_path,
        """
axes:
  algorithm: [{label: ippo, algo.name: ippo, channel.name: none}, {label: bc, channel.name: broadcast},
              {baseline: scripted}]
grids:
  - axes: {bandwidth: [{bus.links.default.rate_bps: null}, {bus.links.default.rate_bps: 64000},
                       {bus.links.default.rate_bps: 1000}]}
  - axes: {latency: [{bus.links.default.latency_ms: 0}, {bus.links.default.latency_ms: 500}]}
seeds: [0, 1, 2]
""",
        ret,
    )
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 * 4 * 3 + 3
    report, figures, notes = write_report(out)
    names = sorted(p.name for p in figures)
    assert names == [
        "bytes_per_episode.png",
        "collisions.png",
        "learning_curves.png",
        "return_vs_bandwidth.png",
        "return_vs_latency.png",
    ]
    assert all(p.stat().st_size > 5000 for p in figures)
    assert [n.split(":")[0] for n in notes] == ["return_vs_jitter", "return_vs_loss", "return_vs_range"]
    md = report.read_text()
    # returns are the IQM over the 3 seeds (their mean) with a bootstrap interval inside the seeds' range
    low, high = map(float, re.search(r"\| ippo, bandwidth=1000 \| 3 \| -41\.00 \[(\S+), (\S+)\] \|", md).groups())
    assert -42.0 <= low < -41.0 < high <= -40.0
    assert re.search(r"\| baseline:scripted \| 3 \| -31\.00 \[-3\d\.\d\d, -3\d\.\d\d\] \|", md)
    assert "- [return_vs_bandwidth.png](report/return_vs_bandwidth.png)" in md
    assert "return_vs_loss: skipped" in md


def test_report_groups_and_plots_each_env_apart(tmp_path, monkeypatch):
    monkeypatch.setattr("marlmesh.experiments.estimates.BOOTSTRAP_REPS", 200)

    def ret(cell):
        return -10.0 * int(cell.overrides["env.kwargs.N"]) - cell.overrides.get("bus.links.default.loss", 0) * 10

    out = _synthetic_sweep(
        tmp_path,
        """
axes:
  env: [{label: small, env.kwargs.N: 2}, {label: big, env.kwargs.N: 4}]
  algorithm: [{label: ippo, algo.name: ippo}, {label: bc, channel.name: broadcast}]
  link: [{label: ideal}, {label: lossy, bus.links.default.loss: 0.5}]
seeds: [0, 1]
""",
        ret,
    )
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["env"], r["link"]) for r in rows} == {(e, k) for e in ("small", "big") for k in ("ideal", "lossy")}
    report, figures, _ = write_report(out)
    md = report.read_text()
    assert "| small: ippo, link=ideal | 2 | -20.00" in md and "| big: ippo+broadcast, link=lossy | 2 | -45.00" in md
    names = {p.name for p in figures}
    assert {"learning_curves-small.png", "learning_curves-big.png", "return_vs_loss-big.png"} <= names


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the spies draw nothing for the legend
def test_report_draws_a_reference_evaluated_under_a_learners_link_as_a_curve(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    monkeypatch.setattr("marlmesh.experiments.estimates.BOOTSTRAP_REPS", 200)
    curves: dict[str, list[float]] = {}
    flat: list[str] = []
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, **kw: curves.setdefault(kw["label"], list(x)))
    monkeypatch.setattr(Axes, "axhline", lambda self, y, **kw: flat.append(kw["label"]))

    def ret(cell):
        return -20.0 - 10 * cell.overrides.get("env.kwargs.goal_loss", cell.overrides.get("bus.links.default.loss", 0))

    out = _synthetic_sweep(
        tmp_path,
        """
grids:
  - axes:
      algorithm: [{label: ippo, algo.name: ippo}, {label: perfect, baseline: scripted}]
      link: [{label: ideal}, {label: loss0.2, bus.links.default.loss: 0.2},
             {label: loss0.5, bus.links.default.loss: 0.5}]
  - axes:
      algorithm: [{label: perfect-lossy, baseline: scripted}]
      link: [{label: loss0.2, bus.links.default.loss: 0.2, env.kwargs.goal_loss: 0.2},
             {label: loss0.5, bus.links.default.loss: 0.5, env.kwargs.goal_loss: 0.5}]
seeds: [0]
""",
        ret,
    )
    _, figures, _ = write_report(out)
    assert "return_vs_loss.png" in {p.name for p in figures}
    # the learners and the reference under the same links share the x axis; the ideal-link reference is flat
    assert curves["ippo"] == [0.0, 0.2, 0.5]
    assert curves["perfect-lossy (reference, same link)"] == [0.2, 0.5]
    assert "perfect" in flat and not any(label.startswith("perfect-lossy") for label in flat)


def test_report_compares_a_rerun_cell_by_cell(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr("marlmesh.experiments.estimates.BOOTSTRAP_REPS", 200)
    axes = "axes: {algorithm: [{label: ippo, algo.name: ippo}, {label: bc, channel.name: broadcast}]}\nseeds: [0, 1]\n"
    out = _synthetic_sweep(tmp_path, axes, lambda cell: -40.0 - cell.seed)
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    rows = list(csv.DictReader(open(out / "results.csv")))
    with open(rerun / "results.csv", "w", newline="") as f:  # two cells rerun: one the same, one not
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerow(rows[0])
        w.writerow({**rows[1], "return_sum_mean": "-39.5"})
    report, _, _ = write_report(out, rerun)
    md = report.read_text()
    assert f"| `{rows[0]['cell_id']}` | -40.0 | -40.0 |" in md and md.count("| yes |") == 1
    assert md.count("| NO |") == 1 and "1 of 2 cells done in both give the same results." in md
    shutil.rmtree(rerun)
    with pytest.raises(FileNotFoundError, match="results.csv not found"):
        write_report(out, rerun)


def test_report_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv not found"):
        write_report(tmp_path)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from marlmesh.cli import main

    bad = _write(tmp_path, "axes: {a: [{env.num_envs: 0}]}\n")
    assert main(["sweep", "-c", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("marlmesh: error: cell a=0_seed=0-") and "'env.num_envs'" in err and "\n" not in err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "results.csv not found" in capsys.readouterr().err
    good = _write(tmp_path, "axes: {a: [{env.num_envs: 2}, {baseline: random}]}\n", "good.yaml")
    assert main(["sweep", "-c", str(good), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "[baseline random]" in out
    assert out.strip().endswith("2 cells, training cells on the mesh launcher")


def test_launcher_and_cell_selection(tmp_path, capsys):
    from marlmesh.cli import main
    from marlmesh.experiments.sweep import SweepRunner, cell_command

    sweep = _write(
        tmp_path, "launcher: inprocess\naxes: {a: [{env.num_envs: 2}, {env.num_envs: 3}, {baseline: random}]}\n"
    )
    runner = SweepRunner(sweep, tmp_path / "out", only=["a=3*"])
    assert [c.axes["a"] for c in runner.cells] == ["3"] and runner.launcher == "inprocess"
    runner.write_manifest()  # the manifest and results.csv of a selection still list the whole sweep
    assert len(json.loads((tmp_path / "out" / "sweep.json").read_text())["cells"]) == 3
    rows = list(csv.DictReader(open(runner.write_results())))
    assert [(r["a"], r["status"]) for r in rows] == [("2", "pending"), ("3", "pending"), ("random", "pending")]
    argv = cell_command(runner.cells[0], None, tmp_path / "run", runner.launcher)
    assert argv[argv.index("--launcher") + 1] == "inprocess"
    base = cell_command(SweepRunner(sweep, tmp_path / "o2").cells[-1], None, tmp_path / "b")
    assert "--launcher" not in base  # a baseline cell trains nothing
    # the flag overrides the file; cell ids do not depend on the launcher
    assert main(["sweep", "-c", str(sweep), "--dry-run", "--launcher", "mesh", "--cells", "a=2*"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("1 cells, training cells on the mesh launcher") and runner.cells[0].cell_id not in out
    assert main(["sweep", "-c", str(sweep), "--dry-run", "--cells", "nope*"]) == 2
    assert "--cells 'nope*' matches no cell" in capsys.readouterr().err
    with pytest.raises(Exception, match="launcher"):
        SweepRunner(_write(tmp_path, "launcher: cluster\naxes: {a: [{seed: 1}]}\n", "bad.yaml"), tmp_path / "o3")


def test_a_baseline_cell_carries_an_env_override(tmp_path):
    # the partial-observation task's references: the scripted controller on the partial observation (no
    # communication) and the same controller with full observation (perfect communication)
    spec = load_sweep(
        _write(
            tmp_path,
            """
fixed: {env.obs_radius: 0.5, eval.episodes: 2, eval.num_envs: 2}
axes:
  reference:
    - {algo.name: ippo, channel.name: broadcast}
    - {label: no-comm, baseline: scripted}
    - {label: perfect-comm, baseline: scripted, env.obs_radius: null}
""",
        )
    )
    cells = expand_cells(spec)
    validate_cells(cells, None)
    by_method = {c.method: c for c in cells}
    assert set(by_method) == {"ippo+broadcast", "no-comm", "perfect-comm"}
    assert load_config(None, by_method["no-comm"].set_args()).env.obs_radius == 0.5
    perfect = by_method["perfect-comm"]
    assert load_config(None, perfect.set_args()).env.obs_radius is None
    # the cell's command evaluates the overridden env through a real env service
    run_dir = tmp_path / "runs" / perfect.cell_id
    done = subprocess.run(
        sweep_mod.cell_command(perfect, None, run_dir), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["baseline"] == "scripted"
    assert load_config(run_dir / "config.yaml").env.obs_radius is None
    assert summary["eval"]["episodes"] == 2

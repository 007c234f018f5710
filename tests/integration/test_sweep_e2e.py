"""`marlmesh sweep` + `marlmesh report` end to end: a tiny grid of two real `marlmesh train` subprocesses on
the smoke config (plus one scripted-baseline cell through a real env service), resume, and the same-seed
reproducibility check of the issue. Grid expansion over several axes is covered by tests/unit/test_sweep.py;
every training cell here costs a whole mesh (seven processes), so the grid is as small as the checks allow."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marlmesh.experiments.sweep import cell_command
from marlmesh.experiments.sweep_spec import expand_cells, load_sweep, read_base_data, resolve_base_config

# the module fixture runs three cells (two trainings): allow more than the default per-test timeout
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parents[2]
MARLMESH = [sys.executable, "-m", "marlmesh.cli"]

TINY = f"""
name: tiny
base_config: {ROOT / "configs" / "smoke.yaml"}
fixed: {{train.total_env_steps: 400, eval.episodes: 4, eval.num_envs: 4}}
axes:
  channel:
    - {{channel.name: none}}
    - {{channel.name: broadcast}}
    - {{baseline: scripted}}
  envs:
    - {{env.num_envs: 2}}
seeds: [0]
cell_timeout_s: 600
"""


def _sweep(sweep_file: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [*MARLMESH, "sweep", "-c", str(sweep_file), "--out", str(out), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=1500, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_file = tmp / "tiny.yaml"
    sweep_file.write_text(TINY)
    out = tmp / "out"
    start = time.monotonic()
    res = _sweep(sweep_file, out, "--parallel", "2")
    return sweep_file, out, res, time.monotonic() - start


def test_tiny_sweep_writes_one_row_per_cell(tiny_sweep):
    _, out, res, _ = tiny_sweep
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 cells: 0 already done, 3 to run, 2 at a time" in res.stderr
    assert "finished: 3 ran, 0 skipped, 0 failed" in res.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3
    assert all(r["status"] == "done" for r in rows)
    learners = [r for r in rows if not r["baseline"]]
    assert sorted((r["channel"], r["envs"]) for r in learners) == [("broadcast", "2"), ("none", "2")]
    for r in learners:
        assert int(r["env_steps"]) >= 400 and int(r["eval_episodes"]) == 4
        assert float(r["return_sum_mean"]) < 0 and float(r["return_sum_std"]) >= 0 and r["collisions_mean"] != ""
        assert float(r["wall_seconds"]) > 0 and r["method"] == f"ippo+{r['channel']}"
        if r["channel"] == "broadcast":
            assert float(r["messages_per_episode"]) > 0 and float(r["bytes_per_episode"]) > 0
            assert r["latency_p50_s"] != ""
        else:
            assert float(r["messages_per_episode"]) == 0
    (scripted,) = [r for r in rows if r["baseline"]]
    assert scripted["method"] == "baseline:scripted" and scripted["envs"] == "-"
    assert int(scripted["eval_episodes"]) == 4 and float(scripted["return_sum_mean"]) > -60


def test_report_writes_pngs_and_markdown(tiny_sweep):
    _, out, res, _ = tiny_sweep
    assert res.returncode == 0
    rep = subprocess.run([*MARLMESH, "report", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert rep.returncode == 0, rep.stderr
    for name in ("bytes_per_episode.png", "collisions.png"):
        png = out / "report" / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    for row in ("| ippo+broadcast, envs=2 | 1 |", "| ippo+none, envs=2 | 1 |", "| baseline:scripted | 1 |"):
        assert row in md, row
    assert "return_vs_bandwidth: skipped, the sweep does not vary `link_rate_bps`" in md


def test_rerun_skips_finished_cells(tiny_sweep):
    sweep_file, out, res, _ = tiny_sweep
    assert res.returncode == 0
    summaries = sorted(out.glob("cells/*/summary.json"))
    before = {p: p.stat().st_mtime_ns for p in summaries}
    start = time.monotonic()
    again = _sweep(sweep_file, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 cells: 3 already done, 0 to run" in again.stderr
    assert "finished: 0 ran, 3 skipped, 0 failed" in again.stderr
    assert time.monotonic() - start < 60
    assert {p: p.stat().st_mtime_ns for p in summaries} == before
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 3


def test_rerunning_a_cell_with_the_same_seed_reproduces_its_numbers(tiny_sweep, tmp_path):
    sweep_file, out, res, _ = tiny_sweep
    assert res.returncode == 0
    spec = load_sweep(sweep_file)
    cells = expand_cells(spec, read_base_data(resolve_base_config(spec, sweep_file)))
    cell = next(c for c in cells if c.overrides.get("channel.name") == "broadcast")
    first = json.loads((out / "cells" / cell.cell_id / "summary.json").read_text())
    rerun = subprocess.run(
        cell_command(cell, resolve_base_config(spec, sweep_file), tmp_path / "again"),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    second = json.loads((tmp_path / "again" / "summary.json").read_text())
    # lockstep (the sweep's default for training cells): the run ends at an exact tick, 400 / B rounded up to
    # whole fragments of T=50 (B=2: 200 ticks, 4 fragments; B=4: 100 ticks, 2), each trained in order
    fragments = 400 // (cell.overrides["env.num_envs"] * 50)
    assert first["config"]["weight_sync"] == second["config"]["weight_sync"] == "lockstep"
    assert second["env_steps"] == first["env_steps"] == 400
    assert [a["policy_version"] for a in first["agents"]] == [fragments] * 3
    for run in (first, second):
        assert all(a["finished"] and not a["fragments_dropped"] for a in run["agents"])
        assert [lr["fragments_trained"] for lr in run["learners"]] == [fragments] * 3
        assert all(not lr["fragments_dropped"] and lr["last_losses"]["policy_lag"] == 0 for lr in run["learners"])
        assert run["reproducibility"] == {"exact": True, "broken_by": []}
    assert second["eval"]["return_sum_mean"] == first["eval"]["return_sum_mean"]
    assert second["eval"]["return_sum_std"] == first["eval"]["return_sum_std"]
    assert second["eval"]["collisions_mean"] == first["eval"]["collisions_mean"]
    for key in ("messages_sent", "bytes_sent", "messages_received", "bytes_received", "dropped"):
        assert second["bus"][key] == first["bus"][key], key
    assert "round_timeout" not in first["bus"]["dropped"]
    assert first["bus"]["messages_sent"] > 0
    for agent in range(3):
        a = _final_weights(out / "cells" / cell.cell_id, agent)
        b = _final_weights(tmp_path / "again", agent)
        assert a[0] == b[0] == fragments
        assert a[1].keys() == b[1].keys()
        for name in a[1]:
            assert a[1][name].numpy().tobytes() == b[1][name].numpy().tobytes(), (agent, name)


def _final_weights(run_dir: Path, agent: int) -> tuple[int, dict]:
    """(version, policy state dict) of an agent's newest checkpoint."""
    from marlmesh.checkpoint import load_latest

    found = load_latest(run_dir / "checkpoints" / f"agent-{agent}")
    assert found is not None, run_dir
    return int(found[0]["version"]), found[0]["policy"]

"""`marlmesh bench soak` on a short budget: a real N=3 mesh, fragment accounting that adds up, RSS samples."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_accounts_for_every_fragment(tmp_path):
    run = tmp_path / "soak"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "marlmesh.cli",
            "bench",
            "soak",
            "--minutes",
            "0.25",  # 15 s of training after start-up: a dozen fragments per agent and memory samples
            "-c",
            str(ROOT / "configs/smoke.yaml"),
            "--sample-every",
            "1",
            "--run-dir",
            str(run),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == json.loads((run / "soak.json").read_text())
    assert report["status"] == "trained" and report["num_agents"] == 3 and report["env_steps"] > 0
    assert set(report["restarts"].values()) == {0}
    frag = report["fragments"]
    assert frag["created"] > 0 and frag["trained"] > 0
    assert frag["unaccounted"] == 0, frag
    assert frag["created"] == frag["trained"] + frag["dropped_total"]
    assert frag["complete"]
    assert sorted(report["memory"]) == ["agent-0", "agent-1", "agent-2", "env", "learner-0", "learner-1", "learner-2"]
    for m in report["memory"].values():
        assert m["samples"] >= 3 and m["rss_end_mb"] > 10 and len(m["series_mb"]) == m["samples"]
        assert m["growth_after_warmup_pct"] is not None

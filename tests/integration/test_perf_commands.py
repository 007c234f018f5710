"""``marlmesh bench e2e``, ``bench scale`` and ``top`` against real meshes on 127.0.0.1 (tiny budgets).

Only correctness is checked (keys present, values positive, every agent shown); timings are never asserted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MARLMESH = [sys.executable, "-m", "marlmesh.cli"]
TINY = ["--seconds", "0.5", "--warmup", "0.2"]


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_bench_e2e_tiny(tmp_path: Path) -> None:
    # --no-learning keeps it to one mesh; the learning side is the same measured mesh in train mode
    cmd = [
        *MARLMESH,
        "bench",
        "e2e",
        *TINY,
        "--repeats",
        "2",
        "--num-envs",
        "4",
        "--no-learning",
        "--json",
        "--run-dir",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = _last_json(out.stdout)
    for key in ("distributed_steps_per_s", "single_process_steps_per_s", "ratio"):
        assert result[key] > 0, key
    assert "ratio_learning" not in result
    assert len(result["windows"]["rollout"]) == len(result["windows"]["single_process_during_rollout"]) == 2
    assert (result["num_agents"], result["num_envs"], result["channel"], result["hops"]) == (3, 4, "dgat", 2)
    assert len(result["load_average"]) == 3
    cpu = result["cpu_ms_per_tick"]["rollout"]
    assert cpu["env"] > 0 and cpu["agent"] > 0 and cpu["single_process"] > 0 and result["cpu_ratio"] > 0
    assert cpu["mesh_total"] >= cpu["env"] + 3 * cpu["agent"] - 0.01


def test_bench_scale_tiny_meanfield_bytes_constant_in_n(tmp_path: Path) -> None:
    out_file = tmp_path / "scale.json"
    cmd = [
        *MARLMESH,
        "bench",
        "scale",
        *TINY,
        "--agents",
        "2,4",
        "--channels",
        "meanfield",
        "--modes",
        "eval,train",
        "--num-envs",
        "2",
        "--json",
        "--out",
        str(out_file),
        "--run-dir",
        str(tmp_path / "runs"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = _last_json(out.stdout)
    assert json.loads(out_file.read_text()) == result
    assert [(p["mode"], p["num_agents"]) for p in result["points"]] == [
        ("eval", 2),
        ("eval", 4),
        ("train", 2),
        ("train", 4),
    ]
    for p in result["points"]:
        assert p["steps_per_s"] > 0 and p["bus_bytes_per_agent_env_step"] > 0 and p["cpu_agent_mean"] > 0
        roles = p["roles"]
        assert sorted(roles) == (["agent", "env", "learner"] if p["mode"] == "train" else ["agent", "env"])
        assert roles["agent"]["processes"] == p["num_agents"] and roles["env"]["processes"] == 1
        for f in roles.values():
            assert f["rss_mb"] >= f["private_mb"] > 0 and f["start_s"] > 0 and f["start_cpu_s"] > 0
        # eval: the exported policies with the onnx runtime; train: the default agent runtime (onnx)
        assert roles["agent"]["torch_imported"] is False
        assert roles["agent"]["started_by"] == "fork" and "started_by" not in roles["env"]  # runtime.agent_start
        if p["mode"] == "train":  # a learner has torch: it outweighs its agent
            assert roles["learner"]["rss_mb"] > roles["agent"]["rss_mb"]
    # shared medium: one transmission per agent, step and env copy, whatever N
    assert result["agent_start"] == "fork"
    assert result["eval_meanfield_bytes_max_over_min"] == 1.0
    assert result["train_meanfield_bytes_max_over_min"] == 1.0
    assert (tmp_path / "scale.png").stat().st_size > 1000


def _wait_for_mesh(proc: subprocess.Popen, run: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"launcher exited early:\n{proc.stderr.read()[-3000:]}"
        try:
            table = json.loads((run / "processes.json").read_text())
            lines = (run / "metrics.jsonl").read_text().splitlines()
        except (OSError, json.JSONDecodeError):
            lines = []
        if (
            lines
            and json.loads(lines[-1])["env_steps"] > 0
            and all(p["metrics_port"] for p in table if p["role"] in ("agent", "env"))
        ):
            return
        time.sleep(0.3)
    pytest.fail("the smoke mesh did not start stepping in time")


def test_top_once_shows_every_agent_of_a_running_mesh(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train = [
        *MARLMESH,
        "train",
        "-c",
        "configs/smoke.yaml",
        "--run-dir",
        str(run),
        "--no-eval",
        "--set",
        "train.total_env_steps=100000000",
    ]
    proc = subprocess.Popen(train, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_for_mesh(proc, run)
        top = subprocess.run(
            [*MARLMESH, "top", str(run), "--once", "--interval", "0.5"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    assert top.returncode == 0, top.stderr
    rows = {line.split()[0]: line.split() for line in top.stdout.splitlines()[2:]}
    assert set(rows) == {"env", "agent-0", "agent-1", "agent-2"}, top.stdout
    for name in ("agent-0", "agent-1", "agent-2"):
        steps, sent, version = float(rows[name][2]), float(rows[name][3]), float(rows[name][6])
        assert steps > 0 and sent > 0 and version >= 0 and rows[name][-1] == "up", top.stdout
    assert float(rows["env"][2]) > 0

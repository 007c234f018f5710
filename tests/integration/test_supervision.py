"""Supervision as real processes on 127.0.0.1: kill -9 agents, learners and the env mid-run; the run goes on."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from service_procs import MARLMESH, ROOT, alive

from marlmesh.bench.soak import fragment_accounting
from marlmesh.launch.supervise import TICK_JUMP, newest_checkpoint_version

pytestmark = pytest.mark.integration
# Short barrier deadline and round timeout so a dead agent costs seconds, not half a minute.
FAST = ("env.step_deadline_ms=1000", "bus.round_timeout_ms=500", "runtime.restart.backoff_s=0.2")


def _start(run: Path, config: Path, *overrides: str) -> subprocess.Popen:
    args = [*MARLMESH, "train", "-c", str(config), "--run-dir", str(run), "--no-eval"]
    for o in (*FAST, *overrides):
        args += ["--set", o]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _env_steps(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().strip().splitlines()
    except OSError:
        return 0
    return json.loads(lines[-1])["env_steps"] if lines else 0


def _wait_until(proc: subprocess.Popen, ready, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"launcher exited ({proc.returncode}) before {what}:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def _pids(run: Path) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in json.loads((run / "processes.json").read_text())}


def _finish(proc: subprocess.Popen, run: Path, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out[-2000:], err[-3000:])
    summary = json.loads((run / "summary.json").read_text())
    every_pid = [p["pid"] for p in summary["processes"] + summary["replaced_processes"]]
    assert not any(alive(pid) for pid in every_pid)
    return summary


def test_kill9_agent_and_learner_are_restarted_and_the_learner_resumes_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, ROOT / "configs/smoke.yaml", "train.total_env_steps=3200")
    ckpts = run / "checkpoints" / "agent-0"
    _wait_until(proc, lambda: (newest_checkpoint_version(ckpts) or 0) >= 1, "learner 0's first checkpoint")
    pids = _pids(run)
    os.kill(pids["agent-1"], signal.SIGKILL)
    os.kill(pids["learner-0"], signal.SIGKILL)
    summary = _finish(proc, run)
    assert summary["status"] == "trained" and summary["env_steps"] >= 3200
    assert summary["restarts"] == {
        "env": 0,
        "learner-0": 1,
        "learner-1": 0,
        "learner-2": 0,
        "agent-0": 0,
        "agent-1": 1,
        "agent-2": 0,
    }
    events = {e["process"]: e for e in summary["restart_events"]}
    assert events["agent-1"]["cause"] == "crash" and events["agent-1"]["exit_code"] == -9
    ckpt_version = events["learner-0"]["checkpoint_version"]
    assert ckpt_version >= 1
    learner0 = next(lr for lr in summary["learners"] if lr["agent_id"] == 0)
    # resumed from its newest checkpoint (never back to 0), then kept training
    assert learner0["resumed_from_version"] >= ckpt_version
    assert learner0["version"] > learner0["resumed_from_version"] and learner0["fragments_trained"] > 0
    env_stats = json.loads((run / "stats" / "train-env.json").read_text())
    assert env_stats["rejoins"] >= 1  # the new agent-1 process joined the slot of the old one
    agent1 = next(a for a in summary["agents"] if a["agent_id"] == 1)
    assert agent1["steps"] > 0 and agent1["policy_version"] >= 1
    assert {p["pid"] for p in summary["replaced_processes"]} == {pids["agent-1"], pids["learner-0"]}
    # every fragment is trained, dropped with a cause, or counted as held by a killed process (its ledger)
    assert len(agent1["earlier_incarnations"]) == 1 and len(learner0["earlier_incarnations"]) == 1
    acc = fragment_accounting(summary)
    assert acc["complete"] and acc["trained"] > 0
    assert 0 <= acc["unaccounted"] <= acc["in_flight_at_kill"], acc


def test_fault_schedule_kills_an_agent_and_the_env_and_restarts_them(tmp_path):
    config = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    config["train"]["total_env_steps"] = 3200
    config["faults"] = [
        {"kind": "kill", "role": "agent", "agent": 2, "at_env_steps": 400, "restart_after_env_steps": 200},
        {"kind": "kill", "role": "env", "at_env_steps": 1600, "restart_after_env_steps": 0},
    ]
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    summary = _finish(_start(run, path), run)
    assert summary["env_steps"] >= 3200
    assert summary["restarts"]["agent-2"] == 1 and summary["restarts"]["env"] == 1
    assert sum(summary["restarts"].values()) == 2
    assert [f["fired"] for f in summary["faults"]] == [True, True]
    assert all(e["cause"] == "fault" for e in summary["restart_events"])
    env_stats = json.loads((run / "stats" / "train-env.json").read_text())
    assert env_stats["start_tick"] >= TICK_JUMP and env_stats["env_steps"] > 0  # the new env stepped
    # every agent found the restarted env again and kept stepping
    assert all(a["rejoins"] >= 1 for a in summary["agents"] if a["agent_id"] != 2)
    assert all(a["steps"] > 0 for a in summary["agents"])


def test_exhausted_restarts_fail_the_run_naming_the_process_and_its_log(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, ROOT / "configs/smoke.yaml", "train.total_env_steps=100000000", "runtime.restart.max_restarts=0")
    _wait_until(proc, lambda: _env_steps(run) > 0, "first progress")
    pids = _pids(run)
    os.kill(pids["agent-0"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "agent-0" in err and "runtime.restart.max_restarts=0" in err and "train-agent-0.log" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "agent-0" in summary["error"]
    assert not any(alive(pid) for pid in pids.values())

"""Mistakes a user can make end with a non-zero exit and one line that says what to fix."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ("env.nmu_envs=4", "did you mean 'env.num_envs'"),
        ("train.total_env_steps=-5", "config key 'train.total_env_steps'"),
        ("channel.name=telepathy", "unknown channel 'telepathy'; installed channels: blackboard, broadcast, dgat"),
        ("env.name=mpe2.simple_sprad_v3", "unknown env 'mpe2.simple_sprad_v3'; installed envs:"),
        ("algo.name=magic", "unknown algo 'magic'; installed algos: co2po, dgmappo, ippo, mappo-central, mfppo"),
    ],
)
def test_train_rejects_bad_config_before_starting_anything(tmp_path, override, expect):
    res = _run(
        "-m", "marlmesh.cli", "train", "-c", "configs/smoke.yaml", "--set", override, "--run-dir", str(tmp_path / "run")
    )
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert line.startswith("marlmesh: error: ") and expect in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["agent_service", "learner_service"])
def test_unreachable_env_address(module):
    res = _run(
        "-m",
        module,
        "-c",
        "configs/smoke.yaml",
        "--agent-id",
        "0",
        "--env-addr",
        "127.0.0.1:1",
        "--set",
        "runtime.startup_timeout_s=1.5",
        "--port",
        "0",
    )
    assert res.returncode == 3
    line = _one_line(res.stderr)
    assert f"{module}: error:" in line and "127.0.0.1:1" in line


def test_service_rejects_bad_config():
    res = _run("-m", "agent_service", "-c", "configs/smoke.yaml", "--agent-id", "0", "--set", "bus.clok=sim")
    assert res.returncode == 2
    assert "did you mean 'bus.clock'" in _one_line(res.stderr)


def test_eval_on_a_directory_that_is_no_run(tmp_path):
    res = _run("-m", "marlmesh.cli", "eval", str(tmp_path))
    assert res.returncode == 2
    assert "config.yaml not found" in _one_line(res.stderr)


def test_plugins_lists_every_group():
    res = _run("-m", "marlmesh.cli", "plugins")
    assert res.returncode == 0
    for word in ("mpe2.simple_spread_v3", "broadcast", "ideal", "ippo", "marlmesh.links"):
        assert word in res.stdout

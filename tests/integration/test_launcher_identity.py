"""Both launchers run the same program: under lockstep and the sim clock, the in-process launcher gives the mesh's
bus trace byte for byte and byte-identical final weights, over constrained links (rate, latency, jitter, loss,
queue, range)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from marlmesh.checkpoint import load_latest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

CONFIG = """
seed: 5
env:
  name: mpe2.simple_spread_v3
  kwargs: {{N: 3, max_cycles: 25}}
  num_envs: 4
algo:
  name: {algo}
  ppo: {{epochs: 2, minibatches: 2}}
channel:
  name: {channel}
  message_dim: 8
bus:
  links:
    default: {{rate_bps: 20000, latency_ms: 30, jitter_ms: 10, loss: 0.1, queue_limit: 4, range: 1.0}}
train:
  total_env_steps: 800
  rollout_steps: 50
  weight_sync: lockstep
  agent_runtime: {runtime}
runtime:
  progress_interval_s: 0.5
"""


def _train(config: Path, run_dir: Path, launcher: str) -> dict:
    cmd = [sys.executable, "-m", "marlmesh.cli", "train", "-c", str(config), "--run-dir", str(run_dir), "--no-eval"]
    res = subprocess.run([*cmd, "--launcher", launcher], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize(
    ("algo", "channel", "runtime"),
    [
        ("dgmappo", "dgat", "torch"),
        ("co2po", "blackboard", "torch"),
        ("mfppo", "meanfield", "torch"),
        ("dgmappo", "dgat", "onnx"),  # agents acting over their learners' graphs, without torch
    ],
)
def test_inprocess_launcher_reproduces_the_mesh(tmp_path, algo, channel, runtime):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(algo=algo, channel=channel, runtime=runtime))
    mesh = _train(config, tmp_path / "mesh", "mesh")
    inproc = _train(config, tmp_path / "inprocess", "inprocess")
    assert (mesh["launcher"], inproc["launcher"]) == ("mesh", "inprocess")
    for run in (mesh, inproc):
        assert run["reproducibility"] == {"exact": True, "broken_by": []}
        assert run["env_steps"] == 800
        assert set(run["rejected"]) == {"fragments", "updates", "weights"}  # every cause listed, none hit
        assert all(part and not any(part.values()) for part in run["rejected"].values()), run["rejected"]
        assert {a["runtime"] for a in run["agents"]} == {runtime}
    assert inproc["rejected"] == mesh["rejected"]
    # the links did something: every constraint of the config shows in the drop causes
    dropped = mesh["bus"]["dropped"]
    assert dropped.get("loss", 0) > 0 and dropped.get("out_of_range", 0) > 0, dropped
    for key in ("messages_sent", "bytes_sent", "messages_received", "bytes_received", "dropped"):
        assert inproc["bus"][key] == mesh["bus"][key], key
    trace = (tmp_path / "mesh" / "bus_trace.bin").read_bytes()
    assert mesh["bus"]["trace"]["records"] > 0
    assert (tmp_path / "inprocess" / "bus_trace.bin").read_bytes() == trace
    for agent in range(3):
        a = load_latest(tmp_path / "mesh" / "checkpoints" / f"agent-{agent}")[0]
        b = load_latest(tmp_path / "inprocess" / "checkpoints" / f"agent-{agent}")[0]
        assert a["version"] == b["version"] == 800 // (4 * 50)
        assert a["policy"].keys() == b["policy"].keys()
        for name in a["policy"]:
            assert a["policy"][name].numpy().tobytes() == b["policy"][name].numpy().tobytes(), (agent, name)

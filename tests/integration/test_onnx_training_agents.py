"""``train.agent_runtime: onnx``: a real training run whose agent processes act without ever importing torch."""

from __future__ import annotations

import json

import pytest
from service_procs import train

pytestmark = pytest.mark.integration


def test_training_agents_act_over_their_learners_graphs_without_torch(tmp_path):
    run = tmp_path / "run"
    res = train(run, "train.agent_runtime=onnx", "train.total_env_steps=3000", extra=["--no-eval"])
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "trained" and summary["env_steps"] >= 3000
    agents = {a["agent_id"]: a for a in summary["agents"]}
    assert sorted(agents) == [0, 1, 2]
    for a in agents.values():
        assert a["runtime"] == "onnx" and a["graph_engine"] == "numpy" and a["torch_imported"] is False, a
        assert a["steps"] > 0 and a["bus"]["messages_received"] > 0
        assert a["weights_loaded"] >= 2 and a["policy_version"] >= 1, "the agent never acted with a new version"
    for lr in summary["learners"]:
        assert lr["version"] >= 1 and lr["samples_trained"] > 0
    for i in range(3):
        assert "policy graphs for the onnx runtime" in (run / "logs" / f"train-learner-{i}.log").read_text()

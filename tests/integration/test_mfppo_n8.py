"""mfppo trains at N=8 as real processes (env + 8 agents + 8 learners): every agent steps, no NaN, and each
agent's bus bytes per step are one fixed-size summary per env copy (radio links), as at N=4
(tests/unit/test_mfppo_scaling.py)."""

import json
import math

import pytest
from service_procs import smoke_train

pytestmark = pytest.mark.integration


def test_mfppo_trains_at_n8_with_constant_bytes_per_agent_step(tmp_path):
    run = tmp_path / "run"
    sets = [
        "env.kwargs.N=8",
        "algo.name=mfppo",
        "channel.name=meanfield",
        "bus.links.shared_medium=true",  # one transmission per step reaches every neighbour
        "train.total_env_steps=800",
    ]
    res = smoke_train(run, sets, evaluate=False, timeout=280)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 800
    agents = {a["agent_id"]: a for a in summary["agents"]}
    learners = {lr["agent_id"]: lr for lr in summary["learners"]}
    assert sorted(agents) == sorted(learners) == list(range(8))
    row_bytes = 8 * 4 + 32  # smoke: message_dim 8 floats + 32 header bytes, whatever N is
    for a in agents.values():
        assert a["steps"] > 0
        # meanfield sends one round per step; a stop can end the last step after its send (the step is not counted),
        # and an agent whose peers all stopped first steps alone, sending nothing (not counted as a round sent)
        assert 0 < a["rounds_sent"] <= a["steps"] + 1
        assert a["bus"]["bytes_sent"] == a["rounds_sent"] * 4 * row_bytes  # B=4 rows per send, counted once per send
        assert len(a["bus"]["received_from"]) == 7
    for lr in learners.values():
        assert lr["updates"] >= 1
        assert all(math.isfinite(v) for v in lr["last_losses"].values())
    returns = [json.loads(x)["return_sum_recent_mean"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r is not None for r in returns) and all(r is None or math.isfinite(r) for r in returns)

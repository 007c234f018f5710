"""`marlmesh train` with learned communication as real processes: dgmappo over the dgat channel."""

import json
import subprocess
from pathlib import Path

import pytest
from service_procs import train

pytestmark = pytest.mark.integration
# Half the smoke budget: 300 ticks at B=4 are six rollout fragments per agent, enough for every learner to
# publish and every agent to act with a new version; the checks below are per step or per update.
HALF_BUDGET = ("train.total_env_steps=1200",)


def _train(run_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return train(run_dir, *overrides, extra=("--no-eval",), timeout=timeout)


def test_dgmappo_messages_flow_in_every_round_and_learners_publish(tmp_path):
    run = tmp_path / "run"
    hops = 3
    res = _train(run, "channel.name=dgat", "algo.name=dgmappo", f"channel.dgat.hops={hops}", *HALF_BUDGET)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["algo"] == "dgmappo" and summary["config"]["channel"] == "dgat"
    n, b = 3, 4
    for a in summary["agents"]:
        heard = a["heard_rows_per_round"]
        assert len(heard) == hops, heard
        # every round of every step: both peers heard in every env copy (ideal links, nobody leaves)
        full = a["steps"] * b * (n - 1)
        assert all(h >= 0.9 * full for h in heard), (heard, full)
        assert a["bus"]["messages_sent"] >= a["steps"] * hops * (n - 1) * 0.9
        assert a["rejected_messages"] == 0
        assert a["policy_version"] >= 1, "agent never acted with a newer weights version"
    for lr in summary["learners"]:
        assert lr["version"] >= 1 and lr["samples_trained"] > 0
        assert not lr["fragments_dropped"].get("invalid")


def test_wrong_channel_for_algo_fails_before_starting(tmp_path):
    run = tmp_path / "run"
    res = _train(run, "algo.name=dgmappo", "channel.name=broadcast", timeout=60)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "algo.name=dgmappo needs channel.name=dgat" in err[0], res.stderr
    assert not (run / "summary.json").exists()


def test_co2po_under_partial_observability_trains_with_costs(tmp_path):
    """blackboard + co2po with env.obs_radius: grown observations over gRPC, costs reach the learners."""
    run = tmp_path / "run"
    res = _train(
        run, "channel.name=blackboard", "algo.name=co2po", "channel.message_dim=6", "env.obs_radius=0.8", *HALF_BUDGET
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    for a in summary["agents"]:
        assert a["policy_version"] >= 1 and a["rejected_messages"] == 0
    for lr in summary["learners"]:
        assert lr["version"] >= 1 and not lr["fragments_dropped"].get("invalid")
        losses = lr["last_losses"]
        for key in ("lagrange", "send_rate", "threshold", "hazard_bce", "mean_cost"):
            assert key in losses, key
        assert 0.0 < losses["threshold"] < 1.0 and losses["lagrange"] >= 0.0

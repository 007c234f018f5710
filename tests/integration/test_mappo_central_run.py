"""mappo-central (the CENTRALIZED REFERENCE): trains in one process and writes the usual summary contract."""

import json

import pytest
from service_procs import read_scalars, smoke_train

pytestmark = pytest.mark.integration


def test_mappo_central_trains_on_the_smoke_budget_and_writes_the_summary(tmp_path):
    run = tmp_path / "run"
    res = smoke_train(run, ["algo.name=mappo-central", "channel.name=none"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("CENTRALIZED REFERENCE") >= 2  # banner at start and end, progress lines
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done"
    assert summary["centralized"] is True and summary["label"] == "CENTRALIZED REFERENCE"
    assert summary["config"]["algo"] == "mappo-central" and summary["config"]["centralized"] is True
    assert summary["env_steps"] >= 2400
    assert summary["eval"]["episodes"] == 8
    assert isinstance(summary["eval"]["return_sum_mean"], float)
    assert summary["eval"]["collisions_mean"] is not None
    assert summary["bus"]["messages_sent"] == 0  # agents exchange nothing
    # the evaluation ran decentralized: an env and one agent process per saved actor
    roles = sorted(p["role"] for p in summary["eval"]["processes"])
    assert roles == ["agent", "agent", "agent", "env"]
    for i in range(3):
        assert list((run / "checkpoints" / f"agent-{i}").glob("ckpt-*.pt"))
    assert list((run / "checkpoints" / "central-critic").glob("ckpt-*.pt"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and lines[-1]["env_steps"] >= 2400
    # TensorBoard: the trainer's update statistics by update, the team's return and the evaluation by env step
    trainer = read_scalars(run / "tensorboard" / "central-trainer")
    assert {"learner/policy_loss", "learner/value_loss", "learner/entropy", "learner/lr"} <= set(trainer)
    assert [s for s, _ in trainer["learner/version"]] == list(range(1, len(lines) + 1))
    team = read_scalars(run / "tensorboard" / "team")
    assert [s for s, _ in team["team/episodes"]] == [rec["env_steps"] for rec in lines]
    assert [s for s, _ in team["eval/return_sum_mean"]] == [summary["env_steps"]]

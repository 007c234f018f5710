"""TensorBoard events of a training run, read back with TensorBoard's own reader (both launchers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_procs import read_scalars, train

pytestmark = pytest.mark.integration

TINY = ("train.total_env_steps=1200", "eval.episodes=4")
LEARNER_TAGS = {
    "learner/policy_loss",
    "learner/value_loss",
    "learner/entropy",
    "learner/approx_kl",
    "learner/lr",
    "learner/update_seconds",
    "learner/policy_lag",
    "learner/version",
    "learner/samples_trained",
}


def assert_increasing(points: list[tuple[int, float]], tag: str) -> None:
    steps = [s for s, _ in points]
    assert len(steps) >= 2 and steps == sorted(steps) and steps[-1] > steps[0], (tag, steps)


def assert_learners_and_team(run_dir: Path, num_agents: int = 3) -> dict[str, list[tuple[int, float]]]:
    """Checks each learner's update statistics and the team's return; returns the team's scalars."""
    board = run_dir / "tensorboard"
    assert sorted(p.name for p in board.iterdir()) == sorted([*(f"learner-{i}" for i in range(num_agents)), "team"])
    for i in range(num_agents):
        learner = read_scalars(board / f"learner-{i}")
        assert LEARNER_TAGS <= set(learner), sorted(LEARNER_TAGS - set(learner))
        for tag in LEARNER_TAGS:
            assert_increasing(learner[tag], f"learner-{i} {tag}")
        versions = learner["learner/version"]
        assert [int(v) for _, v in versions] == [s for s, _ in versions]  # a fresh run: one version per update
    team = read_scalars(board / "team")
    for tag in ("team/return_sum_recent_mean", "team/steps_per_second", "team/episodes"):
        assert tag in team, sorted(team)
        assert_increasing(team[tag], tag)
    assert team["team/episodes"][-1][0] >= 1200  # by env step, up to the budget
    return team


def test_a_mesh_run_writes_learner_team_and_eval_events(tmp_path):
    run = tmp_path / "run"
    res = train(run, *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    team = assert_learners_and_team(run)
    (step, value), *more = team["eval/return_sum_mean"]
    assert not more and step == team["team/episodes"][-1][0]
    assert {f"eval/agent_return_mean/agent_{i}" for i in range(3)} <= set(team)


def test_an_inprocess_run_writes_the_same_layout(tmp_path):
    run = tmp_path / "run"
    res = train(run, *TINY, extra=("--launcher", "inprocess", "--no-eval"))
    assert res.returncode == 0, res.stderr[-3000:]
    team = assert_learners_and_team(run)
    assert not any(tag.startswith("eval/") for tag in team)


def test_train_tensorboard_false_writes_no_events(tmp_path):
    run = tmp_path / "run"
    res = train(run, "train.total_env_steps=400", "train.tensorboard=false", extra=("--no-eval",))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints").is_dir()
    assert not (run / "tensorboard").exists()

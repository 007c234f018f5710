"""The in-process launcher: settings it refuses, lockstep training per agent, the mesh's run directory."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from learner_service.node import policy_params
from marlmesh.checkpoint import load_latest
from marlmesh.config import ConfigError, load_config
from marlmesh.launch.inprocess import InProcessTeam, check_inprocess, train_inprocess

TINY = ["train.rollout_steps=5", "env.num_envs=2", "algo.ppo.epochs=1", "algo.ppo.minibatches=1"]


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["bus.clock=wall"], "bus.clock"),
        (["algo.name=dgmappo", "channel.name=dgat", "algo.dgmappo.gossip.enabled=true"], "algo.dgmappo.gossip"),
        (
            ["algo.name=dgmappo", "channel.name=dgat", "algo.dgmappo.reward_sharing.enabled=true"],
            "algo.dgmappo.reward_sharing",
        ),
    ],
)
def test_settings_only_the_mesh_has_are_refused_naming_the_key(sets, key):
    config = load_config("configs/smoke.yaml", sets)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        check_inprocess(config)
    assert "--launcher mesh" in str(err.value)


def test_a_kill_fault_is_refused():
    config = load_config("configs/smoke.yaml", [])
    kill = {"kind": "kill", "role": "agent", "agent": 0, "at_env_steps": 10}
    config = config.model_validate({**config.model_dump(), "faults": [kill]})
    with pytest.raises(ConfigError, match=r"faults\.0"):
        check_inprocess(config)


def test_each_learner_trains_on_its_own_agent_and_the_agent_acts_with_the_new_version():
    # the torch runtime shows the parameters it acts with; the onnx runtime's are checked by the launcher
    # identity test (tests/integration/test_launcher_identity.py), which compares the actions
    config = load_config("configs/smoke.yaml", [*TINY, "train.total_env_steps=40", "train.agent_runtime=torch"])
    team = InProcessTeam(config, run_dir=None)
    try:
        initial = [policy_params(learner.policy) for learner in team.learners]
        while not team.finished:
            team.step()
        assert team.env_steps == 40  # the final tick: 40 / B=2 = 20 ticks, 4 fragments of T=5
        for i, learner in enumerate(team.learners):
            status = learner.status()
            assert status["fragments_received"] == status["fragments_trained"] == 4
            assert status["fragments_dropped"] == {}  # a foreign agent's fragment would be rejected
            assert status["last_losses"]["policy_lag"] == 0  # lockstep
            learned = policy_params(learner.policy)
            assert any(not np.array_equal(learned[k], initial[i][k]) for k in learned)
            acting = {k: v.numpy() for k, v in team.runtimes[i].policy.state_dict().items()}
            assert all(np.array_equal(acting[k], learned[k]) for k in learned)
            assert team.counters[i].policy_version == 4
        stats = team.agent_stats()
        # broadcast, one round per tick: 20 acting ticks plus the final one, whose inbox bootstraps the last fragment
        assert [a["rounds_sent"] for a in stats] == [21, 21, 21]
        assert all(a["bus"]["messages_sent"] == 21 * 2 * 2 for a in stats)  # x B=2 rows x 2 peers
    finally:
        team.close()


def test_train_writes_the_mesh_run_directory(tmp_path):
    from marlmesh.spread_diagnostics import main as diagnostics

    config = load_config("configs/dgmappo.yaml", [*TINY, "train.total_env_steps=40", "train.max_wall_seconds=null"])
    out = io.StringIO()
    summary = train_inprocess(config, tmp_path, out=out, evaluate=False)
    assert "launcher inprocess" in out.getvalue()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["launcher"] == summary["launcher"] == "inprocess"
    assert on_disk["status"] == "trained" and on_disk["env_steps"] == 40
    assert on_disk["config"]["weight_sync"] == "lockstep"  # the in-process launcher always syncs in lockstep
    assert on_disk["reproducibility"] == {"exact": True, "broken_by": []}
    assert on_disk["bus"]["trace"]["records"] > 0 and (tmp_path / "bus_trace.bin").is_file()
    assert [lr["fragments_trained"] for lr in on_disk["learners"]] == [4, 4, 4]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] == 40 and [lr["version"] for lr in records[-1]["learners"]] == [4, 4, 4]
    for i in range(3):
        found = load_latest(tmp_path / "checkpoints" / f"agent-{i}")
        assert found is not None and int(found[0]["version"]) == 4
    assert diagnostics([str(tmp_path), "--episodes", "2"]) == 0

"""dgmappo with reward sharing and gossip parameter mixing, as real processes (env + 2 agents + 2 learners)."""

import json

import pytest
from service_procs import smoke_train

pytestmark = pytest.mark.integration


def test_dgmappo_shares_rewards_and_gossips_parameters_over_the_bus(tmp_path):
    run = tmp_path / "run"
    sets = [
        "env.kwargs.N=2",  # fewer processes to start; one neighbour each
        "algo.name=dgmappo",
        "channel.name=dgat",
        "train.total_env_steps=1200",
        "algo.dgmappo.reward_sharing.enabled=true",
        "algo.dgmappo.gossip.enabled=true",
        "bus.links.default.rate_bps=2000000",  # gossip and rewards go through the netem emulation
    ]
    res = smoke_train(run, sets, evaluate=False, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    agents = {a["agent_id"]: a for a in summary["agents"]}
    for a in agents.values():
        # every step: 2 dgat rounds + 1 reward message to the peer x 4 env copies; the peer's reward heard
        assert a["bus"]["messages_sent"] == pytest.approx(a["steps"] * 4 * 3, abs=4 * 3)
        assert a["reward_sharing_rows_heard"] == pytest.approx(a["steps"] * 4, abs=4)
    gossip = summary["bus"]["gossip"]
    learners = {lr["agent_id"]: lr for lr in summary["learners"]}
    assert sorted(learners) == [0, 1]
    for lr in learners.values():
        g = lr["gossip"]
        assert lr["updates"] >= 2 and g["mixings"] == lr["updates"]  # period 1: a mixing after every update
        assert g["params_mixed"] > 0 and g["bus"]["bytes_sent"] > 0
    assert gossip["mixings"] == sum(lr["gossip"]["mixings"] for lr in learners.values())
    assert gossip["bytes_sent"] == sum(lr["gossip"]["bus"]["bytes_sent"] for lr in learners.values())
    assert gossip["params_mixed"] > 0

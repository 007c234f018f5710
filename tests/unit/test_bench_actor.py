"""``marlmesh bench actor``: the command runs both actors and reports consistent figures (not their speed)."""

from __future__ import annotations

import json

from marlmesh.cli import main


def test_bench_actor_times_both_actors_and_writes_the_result(tmp_path, capsys):
    out = tmp_path / "actor.json"
    assert main(["bench", "actor", "--rounds", "2", "--repeats", "1", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["algo"] == "dgmappo" and printed["decision_batch"] == 32 and printed["update_batch"] == 800
    for kind in ("decision", "update"):
        mlp, entity = printed[f"mlp_{kind}_ms"], printed[f"entity_{kind}_ms"]
        assert mlp > 0 and entity > 0
        assert abs(printed[f"{kind}_ratio"] - entity / mlp) < 0.01 * printed[f"{kind}_ratio"] + 1e-3


def test_bench_actor_refuses_a_config_the_entity_actor_does_not_fit(capsys):
    assert main(["bench", "actor", "--rounds", "1", "--set", "channel.name=broadcast", "--set", "algo.name=ippo"]) == 2
    assert "algo.ppo.actor_net=entity" in capsys.readouterr().err

"""``marlmesh bench env``: the command times the three ways at every B and reports consistent figures (not speed)."""

from __future__ import annotations

import json

from marlmesh.cli import main


def test_bench_env_times_mpe2_and_the_vector_env_and_writes_the_result(tmp_path, capsys):
    out = tmp_path / "env.json"
    args = ["bench", "env", "--num-envs", "2,5", "--seconds", "0.02", "--rounds", "1", "--set", "env.kwargs.N=4"]
    assert main([*args, "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["num_agents"] == 4 and [r["num_envs"] for r in printed["results"]] == [2, 5]
    for row in printed["results"]:
        for way in ("mpe2", "vector", "vector_raw"):
            assert row[f"{way}_copy_steps_per_s"] > 0 and row[f"{way}_copy_steps_per_cpu_s"] > 0
        ratio = row["vector_copy_steps_per_s"] / row["mpe2_copy_steps_per_s"]
        assert abs(row["vector_ratio"] - ratio) < 0.01 * ratio + 0.01


def test_bench_env_refuses_bad_sizes(capsys):
    assert main(["bench", "env", "--num-envs", "0"]) == 2
    assert "--num-envs" in capsys.readouterr().err
    assert main(["bench", "env", "--num-envs", "a,b"]) == 2

"""spread_diagnostics: coverage of greedy simple_spread episodes, for the scripted controller and saved runs."""

import numpy as np
import pytest

from marlmesh import plugins
from marlmesh.checkpoint import save_checkpoint
from marlmesh.config import load_config
from marlmesh.envs import make_env
from marlmesh.experiments.baselines import evaluate_in_process
from marlmesh.experiments.spread_diagnostics import diagnose, load_actors, main
from marlmesh.policy_spec import build_policy_spec
from marlmesh.spaces import SpaceSpec


def _config(*extra: str):
    return load_config("configs/dgmappo.yaml", ["env.kwargs.max_cycles=10", *extra])


def test_scripted_returns_match_the_baseline_evaluation_and_coverage_improves():
    config = _config()
    report = diagnose(config, None, episodes=3, seed=7)
    assert report.return_mean == pytest.approx(np.mean(evaluate_in_process(config, "scripted", 3, seed=7)))
    assert len(report.distance_by_step) == 10
    assert report.distance_by_step[-1] < report.distance_by_step[0]
    assert 0 <= report.uncovered_at_end <= 3 and 0 <= report.shared_at_end <= 3


def test_the_assignment_statistics_tell_fixed_roles_from_coordination(capsys):
    config = load_config("configs/dgmappo.yaml", [])
    fixed = diagnose(config, None, episodes=20, seed=3, baseline="scripted-fixed")
    optimal = diagnose(config, None, episodes=20, seed=3)
    assert fixed.roles_share >= 0.8 and fixed.common_assignment == [0, 1, 2]
    assert optimal.optimal_share >= 0.8 and optimal.roles_share < 0.5
    assert fixed.optimal_share < optimal.optimal_share
    assert 1.0 <= optimal.path_ratio_median < 1.3
    assert main(["scripted-fixed", "--episodes", "2"]) == 0
    assert "of episodes end with the same assignment [" in capsys.readouterr().out


def test_a_saved_run_is_loaded_and_played(tmp_path, capsys):
    config = _config()
    (tmp_path / "config.yaml").write_text("".join(open("configs/dgmappo.yaml")))  # the run's own config
    env = make_env(config.env)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    for i, name in enumerate(env.possible_agents):
        spec = build_policy_spec(
            config,
            i,
            len(env.possible_agents),
            SpaceSpec.from_gym(env.observation_space(name)),
            SpaceSpec.from_gym(env.action_space(name)),
        )
        save_checkpoint(
            tmp_path / "checkpoints" / f"agent-{i}", 3, {"policy": channel.build_policy(spec).state_dict()}, 1
        )
    actors = load_actors(tmp_path, config)
    first = diagnose(config, actors, episodes=2, seed=1)
    assert first == diagnose(config, actors, episodes=2, seed=1)  # greedy and seeded: repeatable
    assert np.isfinite(first.return_mean) and len(first.distance_by_step) == 10
    assert main([str(tmp_path), "--episodes", "1"]) == 0
    assert "greedy episodes: return" in capsys.readouterr().out


def test_missing_checkpoints_and_other_envs_fail_clearly(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("".join(open("configs/dgmappo.yaml")))
    assert main([str(tmp_path), "--episodes", "1"]) == 2
    assert "no checkpoint of agent 0" in capsys.readouterr().err
    other = load_config(
        None, ["env.name=marlmesh.testing.envs:heterogeneous_env", "channel.name=none", "algo.name=ippo"]
    )
    with pytest.raises(ValueError, match="no MPE world with landmarks"):
        diagnose(other, None, episodes=1, seed=0)

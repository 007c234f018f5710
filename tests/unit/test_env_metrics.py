"""The env's windowed-mean episode gauges: absent before the first episode, means over the last episodes only."""

import math

import pytest
from prometheus_client import CollectorRegistry

from env_service.metrics import EpisodeWindow
from env_service.node import EpisodeRecord


def _episode(seq: int, returns: list[float], length: int = 25, collisions: float = math.nan) -> EpisodeRecord:
    return EpisodeRecord(seq, env_index=0, end_tick=seq, agent_returns=returns, length=length, collisions=collisions)


def test_gauges_appear_with_the_first_episode_and_average_the_window() -> None:
    registry = CollectorRegistry()
    window = EpisodeWindow(size=2, registry=registry)
    window.add([])
    assert registry.get_sample_value("marlmesh_env_team_episode_return_mean") is None
    window.add([_episode(0, [-100.0, -100.0], length=10, collisions=4.0)])
    window.add([_episode(1, [-1.0, -3.0], length=20), _episode(2, [-5.0, -7.0], length=30, collisions=2.0)])
    # the window holds episodes 1 and 2 only
    assert registry.get_sample_value("marlmesh_env_team_episode_return_mean") == pytest.approx(-8.0)
    assert registry.get_sample_value("marlmesh_env_episode_return_mean", {"agent": "0"}) == pytest.approx(-3.0)
    assert registry.get_sample_value("marlmesh_env_episode_return_mean", {"agent": "1"}) == pytest.approx(-5.0)
    assert registry.get_sample_value("marlmesh_env_episode_length_steps_mean") == 25.0
    assert registry.get_sample_value("marlmesh_env_episode_collisions_mean") == 2.0  # episode 1 reports none
    assert registry.get_sample_value("marlmesh_env_episode_window_episodes") == 2


def test_collisions_stay_absent_for_envs_that_do_not_report_them() -> None:
    registry = CollectorRegistry()
    EpisodeWindow(registry=registry).add([_episode(0, [1.0])])
    assert registry.get_sample_value("marlmesh_env_team_episode_return_mean") == 1.0
    assert registry.get_sample_value("marlmesh_env_episode_collisions_mean") is None

"""The evaluation-only baselines: assignment, the scripted controller on the real simple_spread env."""

import numpy as np
import pytest

from marlmesh.config import load_config
from marlmesh.envs.vector.speaker_listener import SpeakerListenerNoComm
from marlmesh.experiments.baselines import (
    MPE_BOX,
    SPREAD,
    RandomPolicy,
    ScriptedListenerPolicy,
    ScriptedSpreadPolicy,
    best_assignment,
    evaluate_in_process,
    evaluate_vector_env,
    make_policy,
    resting_displacement,
)
from marlmesh.spaces import SpaceSpec

DISCRETE5 = SpaceSpec(kind="discrete", n=5)


def test_best_assignment_minimises_the_summed_distance():
    cost = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0], [5.0, 5.0, 0.5]])
    assert best_assignment(cost).tolist() == [1, 0, 2]
    rng = np.random.default_rng(0)
    big = rng.random((10, 10))  # greedy path: still a valid one-to-one assignment
    assert sorted(best_assignment(big).tolist()) == list(range(10))


def test_scripted_brakes_and_stops_on_its_landmark():
    pol = ScriptedSpreadPolicy(0, 3, DISCRETE5, 18)
    ob = np.zeros(18, np.float32)
    ob[4:10] = [0.5, 0.0, 3.0, 3.0, -3.0, 3.0]  # nearest landmark straight to the right
    ob[10:14] = [3.0, 2.0, -3.0, 2.0]  # the others are next to the other two landmarks
    assert pol.act(ob[None])[0] == 2  # accelerate towards +x
    ob[0:2] = [1.5, 0.0]  # fast, close: brake (push -x)
    ob[4:6] = [0.2, 0.0]
    assert pol.act(ob[None])[0] == 1
    ob[0:2] = [0.0, 0.0]  # on the landmark, at rest: do nothing
    ob[4:6] = [0.01, 0.0]
    assert pol.act(ob[None])[0] == 0


def test_scripted_with_continuous_actions_pushes_diagonally_and_stops_on_its_landmark():
    pol = ScriptedSpreadPolicy(0, 3, MPE_BOX, 18)
    ob = np.zeros(18, np.float32)
    ob[4:10] = [1.0, 1.0, 3.0, -3.0, -3.0, 3.0]  # own landmark far up and to the right
    ob[10:14] = [3.0, -2.0, -3.0, 2.0]
    assert pol.act(ob[None])[0].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]  # full force on both axes
    ob[0:2] = [0.5, 0.2]  # moving: the force it picks brings the resting point onto a near landmark
    ob[4:6] = [0.3, 0.1]
    action = pol.act(ob[None])[0]
    assert action.min() >= 0.0 and action.max() <= 1.0
    force = np.array([action[2] - action[1], action[4] - action[3]], np.float64)
    assert resting_displacement(ob[0:2].astype(np.float64), force) == pytest.approx([0.3, 0.1], abs=1e-5)


def test_scripted_rejects_an_env_it_cannot_read():
    with pytest.raises(ValueError, match="Discrete\\(5\\) or Box"):
        ScriptedSpreadPolicy(0, 3, SpaceSpec(kind="box", shape=(2,), low=(-1.0,) * 2, high=(1.0,) * 2), 18)
    with pytest.raises(ValueError, match="observation layout"):
        ScriptedSpreadPolicy(0, 3, DISCRETE5, 21)
    with pytest.raises(ValueError, match="23 with env.obs_radius"):
        ScriptedSpreadPolicy(0, 3, DISCRETE5, 22)


def test_random_policy_is_seeded_and_in_range():
    a = RandomPolicy(DISCRETE5, 7).act(np.zeros((64, 18)))
    b = RandomPolicy(DISCRETE5, 7).act(np.zeros((64, 18)))
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 5 and (a == b).all()


def test_scripted_scores_well_above_random_on_simple_spread():
    config = load_config(None)  # simple_spread_v3, N=3, 25 steps, local_ratio 0.5, discrete
    scripted = evaluate_in_process(config, "scripted", 20, seed=0)
    rnd = evaluate_in_process(config, "random", 20, seed=0)
    # reference over 100 episodes (docs/benchmarks.md, "Baselines"): scripted about -27, random about -79
    assert np.mean(scripted) > np.mean(rnd) + 20, (np.mean(scripted), np.mean(rnd))
    assert np.mean(scripted) > -40


def test_scripted_with_continuous_actions_scores_at_least_as_well_as_with_discrete():
    discrete = evaluate_in_process(load_config(None), "scripted", 20, seed=0)
    continuous = evaluate_in_process(load_config(None, ["env.kwargs.continuous_actions=true"]), "scripted", 20, seed=0)
    assert np.mean(continuous) >= np.mean(discrete), (np.mean(continuous), np.mean(discrete))


def test_scripted_with_partial_observation_targets_only_what_it_sees():
    pol = ScriptedSpreadPolicy(0, 3, DISCRETE5, 23)  # 18 + 3 landmark flags + 2 agent flags
    ob = np.zeros(23, np.float32)
    ob[2:4] = [0.6, 0.0]  # own position: right of the centre
    ob[4:10] = [-0.3, 0.0, 0.0, 0.0, 0.0, 0.0]  # landmark 0 visible to the left; 1 and 2 hidden (zeros)
    ob[18:23] = [1, 0, 0, 0, 0]
    assert pol.target(ob).tolist() == pytest.approx([-0.3, 0.0])  # the hidden zeros are not "right here"
    ob[10:12] = [-0.35, 0.05]  # agent 1 is visible and closer to landmark 0: it gets it, we head for the centre
    ob[21] = 1
    assert pol.target(ob).tolist() == pytest.approx([-0.6, 0.0])
    ob[18:23] = 0  # nothing in sight: the centre
    assert pol.target(ob).tolist() == pytest.approx([-0.6, 0.0])


def test_scripted_scores_above_random_with_obs_radius():
    config = load_config(None, ["env.obs_radius=0.8"])
    scripted = evaluate_in_process(config, "scripted", 20, seed=0)
    rnd = evaluate_in_process(config, "random", 20, seed=0)
    assert np.mean(scripted) > np.mean(rnd) + 10, (np.mean(scripted), np.mean(rnd))


@pytest.mark.parametrize("radius", [[], ["env.obs_radius=0.8"]])
def test_scripted_ignores_the_time_feature(radius):
    # the time value comes last (after the visibility flags): the controller plays exactly as without it
    plain = evaluate_in_process(load_config(None, radius), "scripted", 4, seed=3)
    timed = evaluate_in_process(load_config(None, [*radius, "env.time_feature=true"]), "scripted", 4, seed=3)
    assert timed == plain


def _three_landmarks() -> np.ndarray:
    """Agent 0's observation: landmarks 0 (far left), 1 (near right), 2 (far up); agents 1 and 2 at 0 and 2."""
    ob = np.zeros(18, np.float32)
    ob[4:10] = [-2.0, 0.0, 0.5, 0.0, 0.0, 2.0]
    ob[10:14] = [-1.9, 0.0, 0.0, 1.9]
    return ob


def test_fixed_roles_head_for_the_own_landmark_whatever_the_positions():
    ob = _three_landmarks()
    assert ScriptedSpreadPolicy(0, 3, DISCRETE5, 18, "fixed").target(ob).tolist() == [-2.0, 0.0]
    assert ScriptedSpreadPolicy(0, 3, DISCRETE5, 18, "hungarian").target(ob).tolist() == [0.5, 0.0]


def test_priority_takes_the_nearest_landmark_the_earlier_agents_left():
    ob = _three_landmarks()
    assert ScriptedSpreadPolicy(0, 3, DISCRETE5, 18, "priority").target(ob).tolist() == [0.5, 0.0]  # first pick
    # agent 1 sits on landmark 1, but agent 0 (choosing first) is nearest to it too: priority sends agent 1 to the
    # nearest landmark left (0), the least summed distance keeps it where it is
    ob1 = np.zeros(18, np.float32)
    ob1[4:10] = [-2.0, 0.0, 0.1, 0.0, 0.0, 2.1]  # landmarks relative to agent 1 (at the origin)
    ob1[10:14] = [-0.3, 0.0, 0.0, 2.0]  # agent 0, agent 2
    assert ScriptedSpreadPolicy(1, 3, DISCRETE5, 18, "priority").target(ob1).tolist() == pytest.approx([-2.0, 0.0])
    assert ScriptedSpreadPolicy(1, 3, DISCRETE5, 18, "hungarian").target(ob1).tolist() == pytest.approx([0.1, 0.0])


def test_unknown_assignment_and_baseline_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown landmark assignment 'auction'"):
        ScriptedSpreadPolicy(0, 3, DISCRETE5, 18, "auction")
    with pytest.raises(ValueError, match="known: random, scripted, scripted-priority, scripted-fixed"):
        make_policy("scripted-auction", "mpe2.simple_spread_v3", 0, 3, DISCRETE5, 18, 0)


def test_coordination_conventions_rank_as_expected_on_simple_spread():
    # The ceilings that learned conventions are measured against: least summed distance (Hungarian) beats taking
    # turns (priority), which beats fixed roles, which needs no coordination at all.
    config = load_config("configs/dgmappo.yaml", [])
    score = {name: np.mean(evaluate_in_process(config, name, 30, seed=100)) for name in SPREAD.baselines}
    assert score["scripted"] > score["scripted-priority"] > score["scripted-fixed"]


# -- speaker-listener without the env's channel --------------------------------------------------------
SPEAKER_LISTENER = "marlmesh.speaker_listener_nocomm"


def test_speaker_listener_references_rank_perfect_communication_above_none_above_random():
    told = evaluate_vector_env(SpeakerListenerNoComm(num_envs=24, goal_in_obs=True), SPEAKER_LISTENER, "scripted", 0)
    blind = evaluate_vector_env(SpeakerListenerNoComm(num_envs=24), SPEAKER_LISTENER, "scripted-centroid", 0)
    rnd = evaluate_vector_env(SpeakerListenerNoComm(num_envs=24), SPEAKER_LISTENER, "random", 0)
    # docs/tasks.md, 1000 episodes: perfect communication about -15.7, none about -31.5, random about -82
    assert told.mean() > blind.mean() + 8 > rnd.mean() + 8, (told.mean(), blind.mean(), rnd.mean())
    # the no-communication listener ignores the goal even where it could see it
    also_told = SpeakerListenerNoComm(num_envs=24, goal_in_obs=True)
    assert np.array_equal(evaluate_vector_env(also_told, SPEAKER_LISTENER, "scripted-centroid", 0), blind)


def test_speaker_listener_controller_steers_onto_the_goal_or_the_centroid():
    ob = np.zeros(11, np.float32)
    ob[2:8] = [1.0, 0.0, -1.0, 0.0, 0.0, 3.0]  # landmarks right, left and far up; the goal is landmark 1
    ob[8:11] = [0.15, 0.65, 0.15]
    assert ScriptedListenerPolicy(DISCRETE5, 11, "told").act(ob[None])[0] == 1  # push -x
    assert ScriptedListenerPolicy(DISCRETE5, 11, "centroid").target(ob).tolist() == pytest.approx([0.0, 1.0])
    assert ScriptedListenerPolicy(DISCRETE5, 8, "centroid").act(ob[None, :8])[0] == 4  # push +y
    assert (
        make_policy("scripted", SPEAKER_LISTENER, 0, 2, SpaceSpec(kind="discrete", n=1), 3, 0)
        .act(np.zeros((5, 3)))
        .tolist()
        == [0] * 5
    )


def test_a_baseline_that_does_not_fit_the_env_names_the_env():
    with pytest.raises(
        ValueError, match=r"'scripted' does not fit env 'marlmesh.speaker_listener_nocomm'.*goal_in_obs"
    ):
        make_policy("scripted", SPEAKER_LISTENER, 1, 2, DISCRETE5, 8, 0)
    with pytest.raises(ValueError, match=r"'scripted-priority' does not fit env 'marlmesh.speaker_listener_nocomm'"):
        make_policy("scripted-priority", SPEAKER_LISTENER, 1, 2, DISCRETE5, 8, 0)
    with pytest.raises(ValueError, match=r"'scripted-centroid' does not fit env 'mpe2.simple_spread_v3'"):
        make_policy("scripted-centroid", "mpe2.simple_spread_v3", 0, 3, DISCRETE5, 18, 0)
    with pytest.raises(ValueError, match=r"'scripted' does not fit env 'my.module:env'.*observation layout"):
        make_policy("scripted", "my.module:env", 0, 3, DISCRETE5, 8, 0)  # unlisted envs get the spread controller


def test_speaker_listener_reference_under_loss_runs_from_perfect_to_no_communication() -> None:
    def scripted(**kwargs: object) -> float:
        env = SpeakerListenerNoComm(num_envs=200, goal_in_obs=True, **kwargs)
        return float(evaluate_vector_env(env, SPEAKER_LISTENER, "scripted", 0).mean())

    centroid = evaluate_vector_env(SpeakerListenerNoComm(num_envs=200), SPEAKER_LISTENER, "scripted-centroid", 0)
    assert scripted(goal_loss=1.0) == pytest.approx(float(centroid.mean()))  # never heard: the centroid
    assert scripted(goal_loss=0.0) == scripted()  # always heard: perfect communication
    memoryless, memory = scripted(goal_loss=0.6), scripted(goal_loss=0.6, goal_memory=True)
    assert scripted() > memory > memoryless > float(centroid.mean())

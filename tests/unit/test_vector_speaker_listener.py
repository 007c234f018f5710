"""speaker_listener_nocomm steps like mpe2's simple_speaker_listener_v4, minus the env's communication channel."""

from __future__ import annotations

import numpy as np
import pytest

from marlmesh import plugins
from marlmesh.envs.mpe import simple_speaker_listener_v4
from marlmesh.envs.vector.base import is_vectorized
from marlmesh.envs.vector.speaker_listener import SpeakerListenerNoComm

B = 6
SEED = 11


@pytest.mark.parametrize("continuous", [False, True])
def test_same_reset_dynamics_and_reward_as_mpe2_without_the_comm_entries(continuous: bool) -> None:
    env = SpeakerListenerNoComm(num_envs=B, continuous_actions=continuous)
    refs = [simple_speaker_listener_v4(continuous_actions=continuous) for _ in range(B)]
    obs = env.reset(seed=SEED)
    ref_obs = [ref.reset(seed=SEED + b)[0] for b, ref in enumerate(refs)]
    rng = np.random.default_rng(0)
    for t in range(25):
        for b in range(B):
            assert obs[0][b] == pytest.approx(ref_obs[b]["speaker_0"], abs=1e-5)
            # the listener sees mpe2's observation without the speaker's word (its last 3 entries)
            assert obs[1][b] == pytest.approx(ref_obs[b]["listener_0"][:-3], abs=1e-5)
        if continuous:
            moves = rng.uniform(0, 1, (B, 5)).astype(np.float32)
            words = rng.uniform(0, 1, (B, 3)).astype(np.float32)
        else:
            moves = rng.integers(0, 5, B)
            words = rng.integers(0, 3, B)
        out = env.step([np.zeros(B, np.int64), moves])
        for b, ref in enumerate(refs):
            ref_obs[b], rewards, _, truncs, _ = ref.step({"speaker_0": words[b], "listener_0": moves[b]})
            assert out.reward[:, b] == pytest.approx([rewards["speaker_0"], rewards["listener_0"]], abs=1e-5)
            assert out.truncated[:, b].tolist() == [truncs["speaker_0"], truncs["listener_0"]]
            world = ref.unwrapped.world
            assert out.positions[:, b] == pytest.approx(np.array([a.state.p_pos for a in world.agents]), abs=1e-5)
        obs = out.obs
        assert not out.terminated.any() and not out.cost.any()
        assert out.truncated.all() == (t == 24)


def test_spaces_and_the_reference_only_goal_observation() -> None:
    env = SpeakerListenerNoComm(num_envs=B)
    assert env.possible_agents == ["speaker_0", "listener_0"]
    assert env.action_space("speaker_0").n == 1 and env.action_space("listener_0").n == 5
    assert env.observation_space("speaker_0").shape == (3,) and env.observation_space("listener_0").shape == (8,)
    told = SpeakerListenerNoComm(num_envs=B, goal_in_obs=True)
    assert told.observation_space("listener_0").shape == (11,)
    obs, full = env.reset(seed=SEED), told.reset(seed=SEED)
    assert np.array_equal(full[1][:, :8], obs[1])
    assert np.array_equal(full[1][:, 8:], full[0])  # the goal colour, as the speaker sees it
    assert np.array_equal(np.argmax(full[0], axis=1), told.goal)


def test_registered_as_a_vectorized_plugin_that_autoresets_and_rejects_obs_radius() -> None:
    factory = plugins.load("envs", "marlmesh.speaker_listener_nocomm")
    assert factory is SpeakerListenerNoComm and is_vectorized(factory)
    with pytest.raises(ValueError, match="obs_radius"):
        factory(num_envs=1, obs_radius=0.5)
    env = factory(num_envs=B, max_cycles=3)
    env.reset(seed=SEED)
    for _ in range(3):
        out = env.step_autoreset([np.zeros(B, np.int64), np.full(B, 2)])
    assert out.ended.all() and out.truncated.all()
    assert (env.steps == 0).all()
    # the copies continued their generators: the new episodes are not the seeded ones again
    again = factory(num_envs=B, max_cycles=3)
    again.reset(seed=SEED)
    assert not np.array_equal(env.world.state.pos, again.world.state.pos)


def _heard_fraction(env: SpeakerListenerNoComm, steps: int) -> np.ndarray:
    """Per step index, the fraction of copies whose listener observation holds the goal colour."""
    obs = env.reset(seed=SEED)
    idle = [np.zeros(env.num_envs, np.int64)] * 2
    fractions = []
    for _ in range(steps):
        fractions.append(np.all(obs[1][:, 8:] == obs[0], axis=1).mean())
        obs = env.step(idle).obs
    return np.array(fractions)


def test_goal_loss_hides_the_colour_with_the_given_probability_with_or_without_memory() -> None:
    p, copies, steps = 0.3, 4000, 6
    memoryless = _heard_fraction(SpeakerListenerNoComm(num_envs=copies, goal_in_obs=True, goal_loss=p), steps)
    assert np.allclose(memoryless, 1 - p, atol=0.03)  # each step on its own
    memory = SpeakerListenerNoComm(num_envs=copies, goal_in_obs=True, goal_loss=p, goal_memory=True)
    assert np.allclose(_heard_fraction(memory, steps), 1 - p ** np.arange(1, steps + 1), atol=0.03)
    # what is not the colour is zeros ("nothing heard"), never another landmark's colour
    listener = memory.observe()[1][:, 8:]
    assert np.all(np.all(listener == 0, axis=1) | np.all(listener == memory.observe()[0], axis=1))
    # the draws are seeded by reset(seed): the same seed hides the same steps
    again = SpeakerListenerNoComm(num_envs=copies, goal_in_obs=True, goal_loss=p)
    assert np.array_equal(_heard_fraction(again, steps), memoryless)


def test_goal_loss_settings_are_references_only_and_checked() -> None:
    with pytest.raises(ValueError, match=r"goal_loss must be a probability in \[0, 1\], got 1.5"):
        SpeakerListenerNoComm(goal_in_obs=True, goal_loss=1.5)
    with pytest.raises(ValueError, match="set it too"):
        SpeakerListenerNoComm(goal_loss=0.1)
    with pytest.raises(ValueError, match="set it too"):
        SpeakerListenerNoComm(goal_memory=True)

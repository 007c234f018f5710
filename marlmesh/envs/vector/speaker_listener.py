"""Speaker-listener without the env's own channel: only the marlmesh bus can tell the listener its goal.

The world, reset draw, dynamics and reward are mpe2's ``simple_speaker_listener_v4``: an immobile speaker and a
listener (radius 0.075, neither collides), three landmarks (radius 0.04) of fixed colours, all drawn uniformly in
``[-1, 1]^2`` after the goal landmark (per copy, from the copy's generator, in mpe2's order, so a copy seeded
``s`` starts where mpe2 seeded ``s`` starts); both agents get ``-|p_listener - p_goal|^2`` every step.

What differs is communication. mpe2 lets the speaker say one of three words and appends the word to the
listener's observation; here the env has no channel (``dim_c = 0``):

- speaker (``speaker_0``, agent 0): observes the goal landmark's colour (3 values, as in mpe2). Its action
  has no effect in the env, so its action space is ``Discrete(1)`` (what mpe2 gives an agent that neither moves
  nor speaks): a policy has nothing to choose, the only thing the speaker contributes is what its channel sends
  over the bus (e.g. ``broadcast``'s encoding of its observation). A no-op ``Discrete(3)`` would only add
  a meaningless choice and its entropy to the speaker's loss. The speaker's space is ``Discrete(1)`` also with
  ``continuous_actions`` (a ``Box`` of shape ``(0,)`` is not a usable action space).
- listener (``listener_0``, agent 1): observes ``[own velocity (2), landmarks relative to it (2 each)]``,
  mpe2's listener observation without the 3 communication entries. It moves with ``Discrete(5)`` or
  ``Box(0, 1, (5,))`` as in mpe2.

``goal_in_obs=True`` is a reference-only setting: it appends the goal colour to the listener's observation
(where mpe2 has the speaker's word), i.e. perfect communication without the bus, for the scripted
perfect-communication reference (``marlmesh.experiments.baselines``); it is not a learning task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from marlmesh.envs.vector.base import VectorEnv, VectorStep
from marlmesh.envs.vector.physics import MOVE_DIM, VectorWorld, WorldSpec, decode_actions

AGENT_SIZE = 0.075
"""mpe2 simple_speaker_listener's agent radius."""

LANDMARK_SIZE = 0.04
"""mpe2 simple_speaker_listener's landmark radius."""

LANDMARK_COLORS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])
"""The landmarks' colours; the speaker observes the goal landmark's."""

NUM_LANDMARKS = len(LANDMARK_COLORS)
SPEAKER, LISTENER = 0, 1
"""Agent indices (mpe2's ``world.agents`` order)."""


def _unbounded(dim: int) -> spaces.Box:
    return spaces.Box(low=-np.float32(np.inf), high=+np.float32(np.inf), shape=(dim,), dtype=np.float32)


class SpeakerListenerNoComm(VectorEnv):
    """B copies of speaker-listener with the env's communication channel removed.

    Args:
        num_envs: B.
        obs_radius: Not supported (must be None).
        max_cycles: Steps per episode (both agents are truncated at the last one).
        continuous_actions: The listener moves with ``Box(0, 1, (5,))`` instead of ``Discrete(5)``.
        goal_in_obs: Reference only: append the goal colour to the listener's observation.

    Raises:
        ValueError: For ``obs_radius`` or a non-positive ``num_envs``/``max_cycles``.
    """

    position_dim = 2
    has_collisions = False

    def __init__(
        self,
        num_envs: int = 1,
        obs_radius: float | None = None,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        goal_in_obs: bool = False,
    ) -> None:
        if obs_radius is not None:
            raise ValueError("speaker_listener_nocomm has no partial observation (env.obs_radius must be null)")
        if not isinstance(max_cycles, int) or max_cycles < 1:
            raise ValueError(f"max_cycles must be a positive int, got {max_cycles!r}")
        self.num_envs = int(num_envs)
        self.max_cycles = max_cycles
        self.continuous_actions = bool(continuous_actions)
        self.goal_in_obs = bool(goal_in_obs)
        self.possible_agents = ["speaker_0", "listener_0"]
        self.metadata = {"name": "speaker_listener_nocomm"}
        spec = WorldSpec.build(
            agent_size=[AGENT_SIZE] * 2,
            landmark_size=[LANDMARK_SIZE] * NUM_LANDMARKS,
            agent_collide=False,
            agent_movable=[False, True],
            silent=True,
        )
        self.world = VectorWorld(spec, self.num_envs)
        self.goal = np.zeros(self.num_envs, np.int64)
        """``[B]`` index of each copy's goal landmark."""
        self.steps = np.zeros(self.num_envs, np.int64)
        listener_dim = 2 + 2 * NUM_LANDMARKS + (3 if self.goal_in_obs else 0)
        self._obs_spaces = {"speaker_0": _unbounded(3), "listener_0": _unbounded(listener_dim)}
        move = spaces.Box(low=0, high=1, shape=(MOVE_DIM,)) if self.continuous_actions else spaces.Discrete(MOVE_DIM)
        self._act_spaces = {"speaker_0": spaces.Discrete(1), "listener_0": move}
        self.world.seed(None)
        self.reset_world(np.arange(self.num_envs))

    # -- the scenario ----------------------------------------------------------------------------------
    def reset_world(self, copies: np.ndarray) -> None:
        """Per copy, as mpe2: the goal landmark, then both agents' and the landmarks' positions; at rest."""
        state = self.world.state
        for b in copies:
            rng = self.world.rngs[int(b)]
            self.goal[b] = int(rng.integers(NUM_LANDMARKS))
            state.pos[b] = rng.uniform(-1.0, 1.0, (2 + NUM_LANDMARKS, 2))
        state.vel[copies] = 0.0

    def goal_pos(self) -> np.ndarray:
        """``[B, 2]`` position of each copy's goal landmark."""
        return self.world.landmark_pos[np.arange(self.num_envs), self.goal]

    def observe(self) -> list[np.ndarray]:
        """The speaker's goal colour; the listener's velocity and landmarks (and the goal colour with goal_in_obs)."""
        state = self.world.state
        colour = LANDMARK_COLORS[self.goal]
        listener = state.pos[:, LISTENER]
        rel = self.world.landmark_pos - listener[:, None, :]
        parts = [state.vel[:, LISTENER], rel.reshape(self.num_envs, -1)]
        if self.goal_in_obs:
            parts.append(colour)
        return [colour.astype(np.float32), np.concatenate(parts, axis=1, dtype=np.float32)]

    def rewards(self) -> np.ndarray:
        """``[B]`` minus the squared distance from the listener to the goal (both agents get it)."""
        return -np.sum(np.square(self.world.agent_pos[:, LISTENER] - self.goal_pos()), axis=-1)

    # -- VectorEnv ---------------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        """Speaker ``Box(3)``; listener ``Box(8)`` (``Box(11)`` with goal_in_obs)."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """Speaker ``Discrete(1)``; listener ``Discrete(5)`` or ``Box(0, 1, (5,))``."""
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Reset every copy (copy ``b`` seeded with ``seed + b``)."""
        if seed is not None:
            self.world.seed(seed)
        return self.reset_copies(np.ones(self.num_envs, bool))

    def reset_copies(self, copies: np.ndarray) -> list[np.ndarray]:
        """Reset the copies where ``copies`` is True (their generators continue)."""
        idx = np.flatnonzero(copies)
        self.reset_world(idx)
        self.steps[idx] = 0
        return self.observe()

    def step(self, actions: Sequence[np.ndarray]) -> VectorStep:
        """Move the listener (the speaker's action is ignored), then rewards, observations and the horizon."""
        u, _ = decode_actions(actions, self.world.spec, self.continuous_actions)
        self.world.step(u, None)
        self.steps += 1
        truncated = np.broadcast_to(self.steps >= self.max_cycles, (2, self.num_envs)).copy()
        return VectorStep(
            obs=self.observe(),
            reward=np.broadcast_to(self.rewards().astype(np.float32), (2, self.num_envs)).copy(),
            terminated=np.zeros((2, self.num_envs), bool),
            truncated=truncated,
            cost=np.zeros((2, self.num_envs), np.float32),
            positions=self.positions(),
        )

    def positions(self) -> np.ndarray:
        """``[2, B, 2]`` float32 agent positions (the speaker's never changes)."""
        return self.world.agent_pos.transpose(1, 0, 2).astype(np.float32)

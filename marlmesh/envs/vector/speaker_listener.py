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

Two more reference-only settings give the references under a lossy link (docs/RESULTS.md, "loss"): with
``goal_loss=p`` the goal colour reaches the listener's observation at each step only with probability ``1 - p``
(independently per step and copy, as the bus drops a message row with probability ``p``); otherwise the entries
are zeros ("nothing heard"). With ``goal_memory=True`` the listener keeps the last colour it heard until the episode
ends, as a policy with memory could; without it (the default) it holds the colour only at the steps it arrives,
as a memoryless policy does. A listener with memory has heard the goal by its ``t``-th observation (``t`` = 1, 2,
...) with probability ``1 - p^t``; a memoryless one holds it at each step with probability ``1 - p``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from marlmesh.envs.vector.base import VectorStep
from marlmesh.envs.vector.mpe_env import MPEVectorEnv
from marlmesh.envs.vector.physics import WorldSpec

AGENT_SIZE = 0.075
"""mpe2 simple_speaker_listener's agent radius."""

LANDMARK_SIZE = 0.04
"""mpe2 simple_speaker_listener's landmark radius."""

LANDMARK_COLORS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])
"""The landmarks' colours; the speaker observes the goal landmark's."""

NUM_LANDMARKS = len(LANDMARK_COLORS)
SPEAKER, LISTENER = 0, 1
"""Agent indices (mpe2's ``world.agents`` order)."""


class SpeakerListenerNoComm(MPEVectorEnv):
    """B copies of speaker-listener with the env's communication channel removed.

    Args:
        num_envs: B.
        obs_radius: Not supported (must be None).
        max_cycles: Steps per episode (both agents are truncated at the last one).
        continuous_actions: The listener moves with ``Box(0, 1, (5,))`` instead of ``Discrete(5)``.
        goal_in_obs: Reference only: append the goal colour to the listener's observation.
        goal_loss: Reference only (with ``goal_in_obs``): the probability that the colour is missing (zeros) from
            an observation, drawn per step and copy.
        goal_memory: Reference only (with ``goal_loss``): the listener keeps the last colour it heard until the
            episode ends.

    Raises:
        ValueError: For ``obs_radius``, a non-positive ``num_envs``/``max_cycles``, ``goal_loss`` outside
            ``[0, 1]`` or a loss setting without ``goal_in_obs``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        obs_radius: float | None = None,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        goal_in_obs: bool = False,
        goal_loss: float = 0.0,
        goal_memory: bool = False,
    ) -> None:
        if obs_radius is not None:
            raise ValueError("speaker_listener_nocomm has no partial observation (env.obs_radius must be null)")
        if not 0.0 <= float(goal_loss) <= 1.0:
            raise ValueError(f"goal_loss must be a probability in [0, 1], got {goal_loss!r}")
        if (goal_loss or goal_memory) and not goal_in_obs:
            raise ValueError("goal_loss and goal_memory shape the goal colour goal_in_obs=true shows; set it too")
        self.goal_in_obs = bool(goal_in_obs)
        self.goal_loss = float(goal_loss)
        self.goal_memory = bool(goal_memory)
        self.goal = np.zeros(int(num_envs), np.int64)
        """``[B]`` index of each copy's goal landmark."""
        self.heard = np.zeros((int(num_envs), NUM_LANDMARKS), np.float64)
        """``[B, 3]`` the goal colour as the listener holds it (zeros: nothing heard under ``goal_loss``)."""
        self._loss_rng = np.random.default_rng()
        super().__init__(num_envs, max_cycles, continuous_actions)
        self.metadata = {"name": "speaker_listener_nocomm"}
        self._act_spaces["speaker_0"] = spaces.Discrete(1)  # also with continuous actions (no Box of shape (0,))

    # -- the scenario ----------------------------------------------------------------------------------
    def make_spec(self) -> WorldSpec:
        """An immobile speaker and a listener (neither collides), three landmarks, no env channel."""
        return WorldSpec.build(
            agent_size=[AGENT_SIZE] * 2,
            landmark_size=[LANDMARK_SIZE] * NUM_LANDMARKS,
            agent_collide=False,
            agent_movable=[False, True],
            silent=True,
        )

    def agent_names(self) -> list[str]:
        """``speaker_0``, ``listener_0``."""
        return ["speaker_0", "listener_0"]

    def reset_world(self, copies: np.ndarray) -> None:
        """Per copy, as mpe2: the goal landmark, then both agents' and the landmarks' positions; at rest."""
        state = self.world.state
        for b in copies:
            rng = self.world.rngs[int(b)]
            self.goal[b] = int(rng.integers(NUM_LANDMARKS))
            state.pos[b] = rng.uniform(-1.0, 1.0, (2 + NUM_LANDMARKS, 2))
        state.vel[copies] = 0.0
        self.heard[copies] = 0.0
        self.deliver(np.isin(np.arange(self.num_envs), copies))

    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Reset every copy (copy ``b`` seeded with ``seed + b``; the ``goal_loss`` draws seeded from ``seed``)."""
        if seed is not None:
            self._loss_rng = np.random.default_rng([seed, 0x6C055])
        return super().reset(seed)

    def step(self, actions: Sequence[np.ndarray]) -> VectorStep:
        """One step of every copy; the goal colour reaches each listener (or not) for the next observation."""
        self.deliver(np.ones(self.num_envs, bool))
        return super().step(actions)

    def deliver(self, copies: np.ndarray) -> None:
        """Update :attr:`heard` for the next observation of ``copies`` (``[B]`` bool) under ``goal_loss``."""
        colour = LANDMARK_COLORS[self.goal]
        arrived = copies.copy()
        if self.goal_loss:
            arrived &= self._loss_rng.random(self.num_envs) >= self.goal_loss
        if not self.goal_memory:
            self.heard[copies] = 0.0
        self.heard[arrived] = colour[arrived]

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
            parts.append(self.heard)
        return [colour.astype(np.float32), np.concatenate(parts, axis=1, dtype=np.float32)]

    def rewards(self) -> np.ndarray:
        """``[B, 2]``: minus the squared distance from the listener to the goal, for both agents."""
        reward = -np.sum(np.square(self.world.agent_pos[:, LISTENER] - self.goal_pos()), axis=-1)
        return np.repeat(reward[:, None], 2, axis=1)

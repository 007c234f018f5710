"""What an agent receives from the env after Join or Step (shared by the env node and its clients)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AgentObservation:
    """What an agent receives after Join or Step, for all B env copies.

    Attributes:
        tick: The tick the next action must answer.
        obs: ``[B, *obs_shape]`` float32.
        reward: ``[B]`` reward for the previous action.
        terminated: ``[B]`` bool.
        truncated: ``[B]`` bool.
        final_obs: ``[B, *obs_shape]``: last observation of an episode that just ended, else zeros.
        cost: ``[B]`` cost signal (collisions in MPE; zeros where the env has none).
        positions: ``[N, B, D]`` agent positions, or None where the env has none.
        live_agents: Agents currently joined and stepping.
    """

    tick: int
    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    cost: np.ndarray
    positions: np.ndarray | None
    live_agents: list[int]

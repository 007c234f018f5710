"""The scripted predator of the pursuit task (``marlmesh.pursuit``).

:class:`ScriptedPursuitPolicy` acts per predator on that predator's own observation (the layout of
:mod:`marlmesh.envs.vector.pursuit`): when it sees the first prey it runs at it, aiming where the prey will be
``LEAD_S`` seconds ahead at the prey's current velocity; when it does not, it searches by circling the arena's centre
counter-clockwise at radius ``SEARCH_RADIUS`` (a stateless sweep that passes within its vision of most of the
arena). It ignores its peers and the obstacles. With discrete actions it picks the move whose next velocity is
closest to full speed towards its goal; with continuous actions it pushes along the velocity error at full force.

The same controller is both references of docs/tasks.md, on different settings of the task:

- no communication: the task as configured (a predator knows the prey only when it sees it itself);
- perfect communication: ``env.kwargs.shared_vision=true`` (every predator is shown the prey whenever any
  predator sees it: what lossless, instantaneous messages can deliver);
- full observability (an upper bound): ``env.kwargs.vision_radius=null``.

:mod:`marlmesh.experiments.pursuit_baselines` measures all three.
"""

from __future__ import annotations

import numpy as np

from marlmesh.envs.vector.physics import MOVES
from marlmesh.envs.vector.pursuit import PREDATOR_ACCEL, PREDATOR_MAX_SPEED
from marlmesh.spaces import SpaceSpec

LEAD_S = 0.3
"""How far ahead (seconds, at the prey's current velocity) the chaser aims."""
SEARCH_RADIUS = 0.75
"""Radius of the search orbit around the arena's centre."""
SEARCH_GAIN = 3.0
"""Weight of the radial correction that keeps a searching predator on its orbit."""
DT, DAMPING = 0.1, 0.25
"""MPE time step and damping (the physics core's defaults)."""


def _desired_velocity(ob: np.ndarray) -> np.ndarray:
    """``[B, 2]`` velocity each predator wants: full speed towards the prey it sees, else along its search orbit."""
    pos = ob[:, 2:4]
    seen = ob[:, 4:5] > 0.5
    target = ob[:, 5:7] + LEAD_S * ob[:, 7:9]
    r = np.linalg.norm(pos, axis=1, keepdims=True)
    radial = np.where(r > 1e-6, pos / np.maximum(r, 1e-6), np.array([[1.0, 0.0]]))
    tangent = np.stack([-radial[:, 1], radial[:, 0]], axis=1)
    search = tangent + SEARCH_GAIN * (SEARCH_RADIUS - r) * radial
    goal = np.where(seen, target, search)
    norm = np.linalg.norm(goal, axis=1, keepdims=True)
    return PREDATOR_MAX_SPEED * np.where(norm > 1e-9, goal / np.maximum(norm, 1e-9), 0.0)


class ScriptedPursuitPolicy:
    """Chase the prey in sight, else circle the arena (module docstring).

    Args:
        agent_index: This predator's index.
        num_agents: N.
        space: ``Discrete(5)`` or ``Box(0, 1, (5,))``.
        obs_dim: Length of the observation (checked against the pursuit layout for N predators).

    Raises:
        ValueError: If the spaces are not the pursuit task's.
    """

    def __init__(self, agent_index: int, num_agents: int, space: SpaceSpec, obs_dim: int) -> None:
        self.continuous = space.kind == "box" and tuple(space.shape) == (5,)
        if not self.continuous and (space.kind != "discrete" or space.n != 5):
            raise ValueError(
                f"the scripted pursuit predator needs Discrete(5) or Box(0, 1, (5,)) actions, got {space.kind}"
            )
        rest = obs_dim - 4 - 2 * (num_agents - 1)
        if rest < 5:
            raise ValueError(
                f"the scripted pursuit predator reads the marlmesh.pursuit observation (at least 4 + 5 + 2(N-1) = "
                f"{9 + 2 * (num_agents - 1)} values for N={num_agents}), got {obs_dim}; is env.name marlmesh.pursuit?"
            )
        self.index = agent_index

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One action per env copy."""
        ob = np.asarray(obs, np.float64).reshape(len(obs), -1)
        want = _desired_velocity(ob)
        coast = ob[:, 0:2] * (1 - DAMPING)
        if self.continuous:
            push = want - coast
            norm = np.linalg.norm(push, axis=1, keepdims=True)
            force = np.where(norm > 1e-9, push / np.maximum(norm, 1e-9), 0.0)
            out = np.zeros((len(ob), 5), np.float32)
            out[:, 1], out[:, 2] = np.maximum(-force[:, 0], 0), np.maximum(force[:, 0], 0)
            out[:, 3], out[:, 4] = np.maximum(-force[:, 1], 0), np.maximum(force[:, 1], 0)
            return out
        nxt = coast[:, None, :] + MOVES[None] * PREDATOR_ACCEL * DT  # [B, 5, 2]
        return np.argmin(np.linalg.norm(nxt - want[:, None, :], axis=-1), axis=1).astype(np.int64)


def scripted_pursuit(
    agent_index: int, num_agents: int, action: SpaceSpec, obs_dim: int, seed: int
) -> ScriptedPursuitPolicy:
    """Baseline factory (``make_policy``'s signature; ``seed`` unused: the controller is deterministic)."""
    return ScriptedPursuitPolicy(agent_index, num_agents, action, obs_dim)

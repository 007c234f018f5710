"""The interface of a vectorized environment: B copies of one multi-agent task stepped in one call.

A :class:`VectorEnv` is what an env plugin returns when it is vectorized (its factory has ``vectorized =
True``): :class:`env_service.copies.EnvCopies` then steps all its copies with one :meth:`VectorEnv.step_autoreset`
instead of a Python loop over PettingZoo envs, and :func:`marlmesh.envs.make_env` wraps a one-copy instance in a
ParallelEnv view (:mod:`marlmesh.envs.vector.parallel`) for everything that plays single episodes.

Arrays are agent-major, as in the env service: observations per agent ``[B, *obs_shape]`` float32, rewards and
flags ``[N, B]``. Copy ``b`` of a ``reset(seed)`` is seeded with ``seed + b``; later resets continue each copy's
random generator (the env service's seeding of its copies).

Constructor convention of a plugin: ``Task(num_envs=1, obs_radius=None, **kwargs)``; ``kwargs`` are the
task's ``env.kwargs``. A task that has no partial observation raises ``ValueError`` for ``obs_radius``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces


@dataclass
class VectorStep:
    """What one step of B copies produced (no reset applied).

    Attributes:
        obs: Per agent ``[B, *obs_shape]`` float32.
        reward: ``[N, B]`` float32.
        terminated: ``[N, B]`` bool.
        truncated: ``[N, B]`` bool.
        cost: ``[N, B]`` float32: per agent, how many other agents it collides with in the stepped state.
        positions: ``[N, B, D]`` float32 agent positions of the stepped state, or None.
    """

    obs: list[np.ndarray]
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    cost: np.ndarray
    positions: np.ndarray | None


@dataclass
class AutoresetStep(VectorStep):
    """A step after which every copy whose episode ended was reset (the env service's semantics).

    ``obs`` and ``positions`` are those of the new episode in reset copies; ``truncated`` is also True for agents
    still running in a copy whose episode ended.

    Attributes:
        final: Per agent ``[B, *obs_shape]``: the ended episode's last observation (zeros where none ended).
        ended: ``[B]`` bool: the copy's episode ended at this step and the copy was reset.
    """

    final: list[np.ndarray]
    ended: np.ndarray


class VectorEnv(abc.ABC):
    """B copies of a multi-agent task with a fixed agent population.

    Attributes:
        vectorized: Marks the class as a vectorized env plugin (read on the factory by :func:`is_vectorized`).
        possible_agents: Agent names, in marlmesh index order.
        num_envs: B.
        position_dim: Dimension of agent positions (0: the env reports none).
        has_collisions: The env reports agent-agent collisions in ``cost``.
        max_cycles: Fixed episode horizon, or None.
        metadata: PettingZoo-style metadata (``name``).
    """

    vectorized: ClassVar[bool] = True
    possible_agents: list[str]
    num_envs: int
    position_dim: int = 0
    has_collisions: bool = False
    max_cycles: int | None = None
    metadata: dict[str, Any] = {}  # noqa: RUF012 -- overridden per instance

    @abc.abstractmethod
    def observation_space(self, agent: str) -> spaces.Space:
        """The agent's observation space (one copy)."""

    @abc.abstractmethod
    def action_space(self, agent: str) -> spaces.Space:
        """The agent's action space (one copy)."""

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> list[np.ndarray]:
        """Reset every copy (copy ``b`` seeded with ``seed + b``; None continues each copy's generator).

        Returns:
            Per agent ``[B, *obs_shape]`` float32.
        """

    @abc.abstractmethod
    def reset_copies(self, copies: np.ndarray) -> list[np.ndarray]:
        """Reset the copies where ``copies`` (``[B]`` bool) is True, continuing their generators.

        Returns:
            Per agent ``[B, *obs_shape]`` float32 of every copy (unchanged where not reset).
        """

    @abc.abstractmethod
    def step(self, actions: Sequence[np.ndarray]) -> VectorStep:
        """Step every copy.

        Args:
            actions: Per agent ``[B]`` ints (Discrete) or ``[B, dim]`` floats (Box).
        """

    @property
    def unwrapped(self) -> VectorEnv:
        """The innermost env (a wrapper returns its env's)."""
        return self

    def positions(self) -> np.ndarray | None:
        """``[N, B, D]`` float32 agent positions of the current state, or None (``position_dim == 0``)."""
        return None

    def close(self) -> None:  # noqa: B027 -- optional hook, nothing to release by default
        """Release resources (nothing by default)."""

    def step_autoreset(self, actions: Sequence[np.ndarray]) -> AutoresetStep:
        """Step every copy, then reset each copy in which any agent's episode ended.

        The ended episode's last observation goes to ``final``; agents not done in an ended copy are reported
        truncated; ``obs`` and ``positions`` are the new episode's in reset copies; ``cost`` is the stepped
        state's.
        """
        out = self.step(actions)
        done = out.terminated | out.truncated
        ended = done.any(axis=0)
        final = [np.zeros_like(o) for o in out.obs]
        obs = out.obs
        positions = out.positions
        truncated = out.truncated
        if ended.any():
            for a, o in enumerate(out.obs):
                final[a][ended] = o[ended]
            truncated = truncated | (ended[None, :] & ~done)
            obs = self.reset_copies(ended)
            positions = self.positions()
        return AutoresetStep(
            obs=obs,
            reward=out.reward,
            terminated=out.terminated,
            truncated=truncated,
            cost=out.cost,
            positions=positions,
            final=final,
            ended=ended,
        )


def is_vectorized(factory: object) -> bool:
    """Whether an env plugin's factory builds a :class:`VectorEnv` (it declares ``vectorized = True``)."""
    return bool(getattr(factory, "vectorized", False))

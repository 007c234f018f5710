"""Where the entities sit in an agent's flat observation, for actors that treat them as sets.

An entity actor (``algo.ppo.actor_net: entity``, :mod:`marlmesh.policies.entity_actor`) reads an observation
as the agent's own velocity, a set of **targets** (simple_spread: the landmarks to cover) and a set of
**peers** (the other agents), each entity a 2-D position relative to the agent. This module says where those
live in the observation vector of a supported env, torch-free, so the agent process, the learner and the
tools agree on it.

Known layouts (:data:`ENTITY_LAYOUT_ENVS`):

- ``mpe2.simple_spread_v3`` and its vectorized twin ``marlmesh.simple_spread`` (the same layout): ``[own vel
  (2), own pos (2), landmarks (2 each), other agents (2 each), their comm (2 each)]``; with ``env.obs_radius``
  one visibility flag per landmark and then per other agent follows (``marlmesh/envs/partial_obs.py``), with
  ``env.time_feature`` the elapsed share of the episode comes last
  (``marlmesh/envs/time_obs.py``). The time value is passed to the actor as an extra input; own position and
  the comm slots (always zero in simple_spread) are not read.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTITY_LAYOUT_ENVS = ("mpe2.simple_spread_v3", "marlmesh.simple_spread")
"""``env.name`` values whose observation layout :func:`entity_layout_for` knows."""


@dataclass(frozen=True)
class EntityGroup:
    """A set of same-kind entities in an observation: ``count`` 2-D relative positions back to back.

    Attributes:
        start: Index of the first entity's x coordinate.
        count: Number of entities.
        flags: Index of the first entity's visibility flag (1 visible, 0 hidden; ``count`` flags back to back),
            or None when every entity is always visible.
    """

    start: int
    count: int
    flags: int | None = None

    @property
    def stop(self) -> int:
        """One past the last position value."""
        return self.start + 2 * self.count


@dataclass(frozen=True)
class EntityLayout:
    """One agent's observation read as own state, a set of targets and a set of peers.

    Attributes:
        obs_dim: Length of the flat observation this layout describes.
        velocity: Index of the agent's own 2-D velocity.
        targets: The entities the team has to reach (simple_spread: landmarks).
        peers: The other agents.
        extras: Further single values passed to the actor as they are (e.g. the time feature).
    """

    obs_dim: int
    velocity: int
    targets: EntityGroup
    peers: EntityGroup
    extras: tuple[int, ...] = ()


def entity_layout_for(
    env_name: str, num_agents: int, obs_dim: int, *, partial: bool, time_feature: bool
) -> EntityLayout:
    """The entity layout of one agent's observation in ``env_name``.

    Args:
        env_name: ``env.name`` of the run.
        num_agents: N.
        obs_dim: Length of the agent's flat observation (checked against the layout).
        partial: Whether ``env.obs_radius`` is set (visibility flags follow the observation).
        time_feature: Whether ``env.time_feature`` is set (the time value comes last).

    Raises:
        ValueError: For an env without a known layout, or an observation whose length does not match it.
    """
    if env_name not in ENTITY_LAYOUT_ENVS:
        raise ValueError(
            f"no entity layout is known for env {env_name!r} (known: {', '.join(ENTITY_LAYOUT_ENVS)}); "
            "use algo.ppo.actor_net=mlp"
        )
    n = num_agents
    full = 6 * n
    flags = full if partial else None
    expected = full + (2 * n - 1 if partial else 0) + (1 if time_feature else 0)
    if obs_dim != expected:
        raise ValueError(
            f"{env_name} with N={n}{' and env.obs_radius' if partial else ''}"
            f"{' and env.time_feature' if time_feature else ''} should give observations of {expected} values, "
            f"got {obs_dim}"
        )
    return EntityLayout(
        obs_dim=obs_dim,
        velocity=0,
        targets=EntityGroup(start=4, count=n, flags=flags),
        peers=EntityGroup(start=4 + 2 * n, count=n - 1, flags=None if flags is None else flags + n),
        extras=(expected - 1,) if time_feature else (),
    )

"""Partial observability for MPE (``env.obs_radius``): entities beyond a radius are hidden.

:class:`RadiusObservation` wraps an mpe2 ParallelEnv. For every agent and every *entity* it observes
(landmarks, other agents), the entity's relative-position slots -- and the slots that belong to it, such
as another agent's communication vector in ``simple_spread`` -- are set to 0 when the entity is farther
than ``radius`` (Euclidean distance in env units, strictly greater hides), and one visibility flag per entity
(1 visible, 0 hidden) is appended to the observation. The observation space grows by the number of entities.
Everything else (velocity, own position, colours) is unchanged, so a policy keeps what it can see itself and
has to learn the rest from messages.

Layouts are declared per scenario (:func:`mpe_layout`) and checked against the world state at every reset,
so a scenario whose observation changed in a new mpe2 version fails loudly instead of masking wrong slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from marlmesh.envs.wrapper import ObservationWrapper

SUPPORTED_SCENARIOS = ("simple_spread", "simple_reference", "simple_speaker_listener")
"""mpe2 scenarios whose observation layout :func:`mpe_layout` knows."""


@dataclass(frozen=True)
class EntitySlots:
    """Where one observed entity lives in one agent's observation vector.

    Attributes:
        kind: ``"landmark"`` or ``"agent"``.
        index: Index in ``world.landmarks`` or ``world.agents``.
        offset: Start of the entity's 2-D relative position ``p_entity - p_agent``.
        extra: Further ``(start, length)`` slices that belong to the entity (hidden together with it).
    """

    kind: str
    index: int
    offset: int
    extra: tuple[tuple[int, int], ...] = ()


def _scenario_name(raw: Any) -> str:
    module = type(getattr(raw, "scenario", None)).__module__
    for name in SUPPORTED_SCENARIOS:
        if module.endswith(f".{name}"):
            return name
    return module


def mpe_layout(raw: Any, agent_index: int) -> list[EntitySlots]:
    """The entity slots of ``world.agents[agent_index]``'s observation in a supported mpe2 scenario.

    - ``simple_spread``: ``[vel(2), pos(2), landmarks (2 each), other agents (2 each), their comm (dim_c each)]``;
      entities are the landmarks and the other agents (an agent's comm vector is hidden with it).
    - ``simple_reference``: ``[vel(2), landmarks (2 each), goal colour(3), comm]``; entities are the landmarks.
    - ``simple_speaker_listener``: listener ``[vel(2), landmarks (2 each), comm]``; the speaker observes no
      entity (its observation is unchanged and gets no flag).

    Raises:
        ValueError: If the scenario is not supported or uses mpe2's own neighbour-limited observations.
    """
    name = _scenario_name(raw)
    world = raw.world
    agent = world.agents[agent_index]
    n_land = len(world.landmarks)
    if name == "simple_spread":
        scenario = raw.scenario
        if getattr(scenario, "num_agent_neighbors", None) is not None or (
            getattr(scenario, "num_landmark_neighbors", None) is not None
        ):
            raise ValueError("env.obs_radius cannot be combined with num_agent_neighbors/num_landmark_neighbors")
        others = [j for j, other in enumerate(world.agents) if other is not agent]
        slots = [EntitySlots("landmark", ell, 4 + 2 * ell) for ell in range(n_land)]
        comm_start = 4 + 2 * n_land + 2 * len(others)
        dim_c = int(world.dim_c)
        for m, j in enumerate(others):
            extra = ((comm_start + dim_c * m, dim_c),) if dim_c else ()
            slots.append(EntitySlots("agent", j, 4 + 2 * n_land + 2 * m, extra))
        return slots
    if name == "simple_reference":
        return [EntitySlots("landmark", ell, 2 + 2 * ell) for ell in range(n_land)]
    if name == "simple_speaker_listener":
        if not agent.movable:
            return []
        return [EntitySlots("landmark", ell, 2 + 2 * ell) for ell in range(n_land)]
    raise ValueError(
        f"env.obs_radius is implemented for the mpe2 scenarios {', '.join(SUPPORTED_SCENARIOS)}; got {name!r}"
    )


class RadiusObservation(ObservationWrapper):
    """Hide entities farther than ``radius`` from each agent and append one visibility flag per entity.

    Args:
        env: An mpe2 ParallelEnv (``env.unwrapped.world`` and ``.scenario`` are read).
        radius: Visibility radius in env units (> 0).

    Raises:
        ValueError: If ``radius`` is not positive or the scenario's layout is unknown.
    """

    def __init__(self, env: ParallelEnv, radius: float) -> None:
        if not radius > 0:
            raise ValueError(f"obs_radius must be > 0, got {radius}")
        raw = env.unwrapped
        if not hasattr(raw, "world"):
            raise ValueError("env.obs_radius needs an MPE environment (env.unwrapped.world)")
        self.radius = float(radius)
        names = [a.name for a in raw.world.agents]
        self._world_index = {a: names.index(a) for a in env.possible_agents}
        self._slots = {a: mpe_layout(raw, self._world_index[a]) for a in env.possible_agents}
        flags = {a: len(self._slots[a]) for a in env.possible_agents}
        super().__init__(
            env,
            {
                a: self.grown_box(env.observation_space(a), np.zeros(flags[a]), np.ones(flags[a]), "env.obs_radius")
                for a in env.possible_agents
            },
        )

    # -- ParallelEnv API (the rest is delegated by ObservationWrapper) ------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Reset and mask; checks the declared layout against the world state."""
        obs, infos = self.env.reset(seed=seed, options=options)
        self._check_layout(obs)
        return self._mask_all(obs), infos

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        """Step and mask."""
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        return self._mask_all(obs), rewards, terms, truncs, infos

    # -- masking -------------------------------------------------------------------------------------
    def _entity_pos(self, slot: EntitySlots) -> np.ndarray:
        world = self.env.unwrapped.world
        body = world.landmarks[slot.index] if slot.kind == "landmark" else world.agents[slot.index]
        return np.asarray(body.state.p_pos, np.float64)

    def _agent_pos(self, agent: str) -> np.ndarray:
        return np.asarray(self.env.unwrapped.world.agents[self._world_index[agent]].state.p_pos, np.float64)

    def _check_layout(self, obs: dict[str, np.ndarray]) -> None:
        for agent, vec in obs.items():
            own = self._agent_pos(agent)
            for slot in self._slots[agent]:
                rel = self._entity_pos(slot) - own
                got = np.asarray(vec[slot.offset : slot.offset + 2], np.float64)
                if not np.allclose(got, rel, atol=1e-4):
                    raise ValueError(
                        f"env.obs_radius: observation layout of {agent!r} not recognised "
                        f"(slot {slot.offset} holds {got}, expected {slot.kind} {slot.index} at {rel})"
                    )

    def mask(self, agent: str, vec: np.ndarray) -> np.ndarray:
        """One agent's masked observation with visibility flags appended (a new float32 array)."""
        out = np.asarray(vec, np.float32).copy()
        own = self._agent_pos(agent)
        flags = np.ones(len(self._slots[agent]), np.float32)
        for e, slot in enumerate(self._slots[agent]):
            if np.linalg.norm(self._entity_pos(slot) - own) > self.radius:
                flags[e] = 0.0
                out[slot.offset : slot.offset + 2] = 0.0
                for start, length in slot.extra:
                    out[start : start + length] = 0.0
        return np.concatenate([out, flags])

    def _mask_all(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {agent: self.mask(agent, vec) for agent, vec in obs.items()}

"""The description of one agent's policy, shared by the agent process and its learner (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from marlmesh.config import Config
from marlmesh.entity_layout import EntityLayout, entity_layout_for
from marlmesh.spaces import SpaceSpec
from marlmesh.v1 import env_pb2


@dataclass(frozen=True)
class PolicySpec:
    """Everything needed to build one agent's policy (identical in the agent and its learner)."""

    agent_index: int
    num_agents: int
    obs_space: SpaceSpec
    action_space: SpaceSpec
    message_dim: int
    hidden_sizes: tuple[int, ...] = (64, 64)
    entity_layout: EntityLayout | None = None
    """Where the entities sit in the observation; set exactly when ``algo.ppo.actor_net`` is ``entity`` (then the
    actor stream that reads the own observation is the entity actor, else an MLP)."""

    @property
    def obs_dim(self) -> int:
        """Flattened observation size."""
        return int(np.prod(self.obs_space.shape)) if self.obs_space.shape else 1

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return tuple(self.obs_space.shape)


def build_policy_spec(
    config: Config, agent_index: int, num_agents: int, obs_space: SpaceSpec, action_space: SpaceSpec
) -> PolicySpec:
    """The spec of one agent from its spaces and the config (``channel.message_dim``, ``algo.ppo``, ``env``).

    Raises:
        ValueError: If ``algo.ppo.actor_net`` is ``entity`` and the observation has no known entity layout.
    """
    spec = PolicySpec(
        agent_index=agent_index,
        num_agents=num_agents,
        obs_space=obs_space,
        action_space=action_space,
        message_dim=config.channel.message_dim,
        hidden_sizes=tuple(config.algo.ppo.hidden_sizes),
    )
    if config.algo.ppo.actor_net != "entity":
        return spec
    layout = entity_layout_for(
        config.env.name,
        num_agents,
        spec.obs_dim,
        partial=config.env.obs_radius is not None,
        time_feature=config.env.time_feature,
    )
    return replace(spec, entity_layout=layout)


def policy_spec_for(env_spec: env_pb2.EnvSpec, agent_index: int, config: Config) -> PolicySpec:
    """Build the spec of agent ``agent_index`` from the env's spec and the config.

    Raises:
        ValueError: If the agent index is not in the env, or ``algo.ppo.actor_net`` is ``entity`` and the env's
            observation does not have a known entity layout.
    """
    agents = {a.index: a for a in env_spec.agents}
    if agent_index not in agents:
        raise ValueError(f"agent index {agent_index} not in the env's agents {sorted(agents)}")
    a = agents[agent_index]
    return build_policy_spec(
        config,
        agent_index,
        len(env_spec.agents),
        SpaceSpec.from_proto(a.observation_space),
        SpaceSpec.from_proto(a.action_space),
    )

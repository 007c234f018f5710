"""The description of one agent's policy, shared by the agent process and its learner (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marlmesh.config import Config
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

    @property
    def obs_dim(self) -> int:
        """Flattened observation size."""
        return int(np.prod(self.obs_space.shape)) if self.obs_space.shape else 1

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return tuple(self.obs_space.shape)


def policy_spec_for(env_spec: env_pb2.EnvSpec, agent_index: int, config: Config) -> PolicySpec:
    """Build the spec of agent ``agent_index`` from the env's spec and the config.

    Raises:
        ValueError: If the agent index is not in the env.
    """
    agents = {a.index: a for a in env_spec.agents}
    if agent_index not in agents:
        raise ValueError(f"agent index {agent_index} not in the env's agents {sorted(agents)}")
    a = agents[agent_index]
    return PolicySpec(
        agent_index=agent_index,
        num_agents=len(env_spec.agents),
        obs_space=SpaceSpec.from_proto(a.observation_space),
        action_space=SpaceSpec.from_proto(a.action_space),
        message_dim=config.channel.message_dim,
        hidden_sizes=tuple(config.algo.ppo.hidden_sizes),
    )

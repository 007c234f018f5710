"""Encoding of the env node's spec and counters as wire messages (observations: :mod:`marlmesh.observation`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from marlmesh.v1 import env_pb2

if TYPE_CHECKING:  # the client side must not import the env stack
    from env_service.node import EnvNode, EnvStatsView


def spec_to_proto(node: EnvNode) -> env_pb2.EnvSpec:
    """The env spec of a node."""
    return env_pb2.EnvSpec(
        env_name=node.config.name,
        num_envs=node.num_envs,
        agents=[
            env_pb2.AgentSpec(
                index=i,
                name=name,
                observation_space=node.obs_spaces[i].to_proto(),
                action_space=node.act_spaces[i].to_proto(),
            )
            for i, name in enumerate(node.agent_names)
        ],
        has_positions=node.adapter.has_positions,
        has_collisions=node.adapter.has_collisions,
        instance_id=node.instance_id,
    )


def stats_to_proto(s: EnvStatsView) -> env_pb2.EnvStats:
    """Encode counters and episodes."""
    return env_pb2.EnvStats(
        tick=s.tick,
        env_steps=s.env_steps,
        episodes=s.episodes,
        recent=[
            env_pb2.EpisodeStat(
                seq=e.seq,
                env_index=e.env_index,
                end_tick=e.end_tick,
                agent_returns=e.agent_returns,
                return_sum=e.return_sum,
                length=e.length,
                collisions=e.collisions,
            )
            for e in s.recent
        ],
        default_actions=s.default_actions,
        late_actions=s.late_actions,
        live_agents=s.live_agents,
        steps_per_second=s.steps_per_second,
    )

"""Conversions between env_service's plain values and the wire messages (shared by server and client)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from env_service.observation import AgentObservation
from marlmesh import tensors
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


def view_to_proto(view: AgentObservation) -> env_pb2.Observation:
    """Encode one agent's view."""
    channel = env_pb2.ChannelState(live_agents=view.live_agents)
    if view.positions is not None:
        channel.positions.CopyFrom(tensors.encode(view.positions))
    return env_pb2.Observation(
        tick=view.tick,
        obs=tensors.encode(view.obs),
        reward=tensors.encode(view.reward),
        terminated=tensors.encode(view.terminated),
        truncated=tensors.encode(view.truncated),
        final_obs=tensors.encode(view.final_obs),
        cost=tensors.encode(view.cost),
        channel=channel,
    )


def observation_from_proto(msg: env_pb2.Observation) -> AgentObservation:
    """Decode an observation (raises :class:`marlmesh.tensors.TensorError` on malformed tensors)."""
    positions = None
    if msg.channel.HasField("positions") and msg.channel.positions.shape:
        positions = tensors.decode(msg.channel.positions, what="ChannelState.positions")
    return AgentObservation(
        tick=msg.tick,
        obs=tensors.decode(msg.obs, what="Observation.obs"),
        reward=tensors.decode(msg.reward, what="Observation.reward"),
        terminated=tensors.decode(msg.terminated, what="Observation.terminated"),
        truncated=tensors.decode(msg.truncated, what="Observation.truncated"),
        final_obs=tensors.decode(msg.final_obs, what="Observation.final_obs"),
        cost=tensors.decode(msg.cost, what="Observation.cost"),
        positions=positions,
        live_agents=list(msg.channel.live_agents),
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

"""What an agent receives from the env after Join or Step (shared by the env node and its clients)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marlmesh import tensors
from marlmesh.v1 import env_pb2


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

"""``Config``: a whole marlmesh run, every section together."""

from __future__ import annotations

from pydantic import Field, model_validator

from marlmesh.config.algo import AlgoConfig
from marlmesh.config.base import StrictModel
from marlmesh.config.bus import BusConfig
from marlmesh.config.channel import ChannelConfig
from marlmesh.config.env import EnvConfig
from marlmesh.config.eval import EvalConfig
from marlmesh.config.faults import Fault
from marlmesh.config.runtime import RuntimeConfig
from marlmesh.config.train import TrainConfig
from marlmesh.entity_layout import ENTITY_LAYOUT_ENVS


class Config(StrictModel):
    """A whole marlmesh run."""

    seed: int = 0
    env: EnvConfig = Field(default_factory=EnvConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    channel: ChannelConfig = Field(default_factory=ChannelConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    faults: list[Fault] = Field(default_factory=list)
    """Fault schedule driven by the launcher (kill / partition / degrade entries); empty = no faults."""

    @model_validator(mode="after")
    def _entity_actor_fits(self) -> Config:
        if self.algo.ppo.actor_net != "entity":
            return self
        if self.env.name not in ENTITY_LAYOUT_ENVS:
            raise ValueError(
                f"algo.ppo.actor_net=entity needs an env with a known entity layout ({', '.join(ENTITY_LAYOUT_ENVS)}),"
                f" got env.name={self.env.name!r}"
            )
        channel = self.channel
        if channel.name not in ("none", "dgat") or (channel.name == "dgat" and channel.dgat.actor != "two_stream"):
            shown = "dgat with channel.dgat.actor=joint" if channel.name == "dgat" else repr(channel.name)
            raise ValueError(
                "algo.ppo.actor_net=entity replaces the actor that reads the own observation alone: it needs "
                f"channel.name=none or channel.name=dgat with channel.dgat.actor=two_stream, got {shown}"
            )
        return self

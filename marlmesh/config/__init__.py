"""Configuration: one YAML file -> a validated, documented model.

Every key has a default, a type and a docstring. Unknown keys and bad values fail at start with the key
path and, for a misspelt key, the nearest valid name. ``--set a.b=c`` overrides any key (values are parsed
as YAML scalars). The resolved config is written into the run directory by the launcher.

One module per section of the YAML file: :mod:`~marlmesh.config.env`, :mod:`~marlmesh.config.algo`,
:mod:`~marlmesh.config.channel`, :mod:`~marlmesh.config.bus` (the only one the transport layer reads),
:mod:`~marlmesh.config.train`, :mod:`~marlmesh.config.eval`, :mod:`~marlmesh.config.runtime`,
:mod:`~marlmesh.config.faults`; :mod:`~marlmesh.config.run` holds :class:`Config` (the whole run) and
:mod:`~marlmesh.config.load` reading, overriding and validating it. Every public name is re-exported here.
"""

from marlmesh.config.algo import AlgoConfig, Co2POConfig, DGMAPPOConfig, GossipConfig, PPOConfig, RewardSharingConfig
from marlmesh.config.base import ConfigError
from marlmesh.config.bus import (
    BusConfig,
    GilbertElliottConfig,
    LinkConfig,
    LinkOverride,
    LinksConfig,
    SecurityConfig,
    TraceConfig,
)
from marlmesh.config.channel import BlackboardConfig, ChannelConfig, DGATConfig, MeanFieldConfig
from marlmesh.config.env import EnvConfig
from marlmesh.config.eval import EvalConfig
from marlmesh.config.faults import DegradeFault, Fault, KillFault, PartitionFault
from marlmesh.config.load import apply_overrides, dump_config, load_config, parse_override, validate
from marlmesh.config.run import Config
from marlmesh.config.runtime import RestartConfig, RuntimeConfig, TlsConfig
from marlmesh.config.train import TrainConfig

__all__ = [
    "AlgoConfig",
    "BlackboardConfig",
    "BusConfig",
    "ChannelConfig",
    "Co2POConfig",
    "Config",
    "ConfigError",
    "DGATConfig",
    "DGMAPPOConfig",
    "DegradeFault",
    "EnvConfig",
    "EvalConfig",
    "Fault",
    "GilbertElliottConfig",
    "GossipConfig",
    "KillFault",
    "LinkConfig",
    "LinkOverride",
    "LinksConfig",
    "MeanFieldConfig",
    "PPOConfig",
    "PartitionFault",
    "RestartConfig",
    "RewardSharingConfig",
    "RuntimeConfig",
    "SecurityConfig",
    "TlsConfig",
    "TraceConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_override",
    "validate",
]

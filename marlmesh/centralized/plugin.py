"""The ``mappo-central`` entry point of ``marlmesh.algos`` (torch-free: the sweep and the CLI inspect it).

It is marked ``centralized``: ``marlmesh train`` dispatches it to the in-process trainer
(:func:`marlmesh.launch.centralized.train_central`), and every decentralized code path refuses it (a learner
service asked to build it fails at start), so it cannot be picked by accident as a decentralized method.
"""

from __future__ import annotations

import functools
from typing import ClassVar

from marlmesh.centralized import CENTRALIZED_LABEL
from marlmesh.config import ConfigError


class MAPPOCentral:
    """Central-critic MAPPO in one process: the CENTRALIZED REFERENCE (see :mod:`marlmesh.centralized`)."""

    name: ClassVar[str] = "mappo-central"
    required_channel: ClassVar[str | None] = "none"
    """The actors act on their own observations only; agents exchange nothing (no bus traffic)."""
    centralized: ClassVar[bool] = True
    """Trained by :func:`marlmesh.launch.centralized.train_central`, not by per-agent learner services."""
    label: ClassVar[str] = CENTRALIZED_LABEL

    def build_learner(self, config: object, spec: object, channel: object) -> object:
        """Always fails: there is no per-agent learner for a central critic.

        Raises:
            ConfigError: Always, naming the way to run it.
        """
        raise ConfigError(
            f"algo.name=mappo-central is the {CENTRALIZED_LABEL} (one process, a central critic over the joint "
            "observation); it has no per-agent learner service. Run it with 'marlmesh train' (it trains in one "
            "process), or pick a decentralized algo (ippo, dgmappo, mfppo, co2po)"
        )


@functools.lru_cache(maxsize=64)
def is_centralized(algo_name: str) -> bool:
    """Whether the installed algorithm ``algo_name`` is a centralized reference (False if unknown)."""
    from marlmesh import plugins

    try:
        algo = plugins.load("algos", algo_name)
    except plugins.PluginError:
        return False
    return algo.centralized

"""``dgat``: K-hop distributed graph attention (D-GAT / DG-MAPPO, see docs/algorithms.md).

Round k of an env step carries ``[z^k (message_dim - 1 floats), sender degree]`` per env copy; K =
``channel.dgat.hops`` rounds per step. The policy is :class:`~marlmesh.policies.dgat.DGATPolicy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from comm_bus.channels.vector import vector_inbox, vector_payload
from marlmesh.config.base import ConfigError
from marlmesh.config.channel import ChannelConfig


class DGATChannel:
    """Multi-round channel: one ``message_dim``-float row per env copy and hop.

    Raises:
        ConfigError: If ``message_dim < 2`` (``z`` plus the degree slot).
    """

    name = "dgat"
    gated = False
    """Every row of the outbox is sent."""

    def __init__(self, config: ChannelConfig) -> None:
        if config.message_dim < 2:
            raise ConfigError("channel.name=dgat needs channel.message_dim >= 2 (z plus the sender's degree)")
        self.message_dim = config.message_dim
        self.rounds = config.dgat.hops
        self.actor = config.dgat.actor

    def build_policy(self, spec):  # noqa: ANN001, ANN201 (torch types stay out of import time)
        """A :class:`~marlmesh.policies.dgat.DGATPolicy` with ``hops`` rounds and the configured actor."""
        from marlmesh.policies.dgat import DGATPolicy

        return DGATPolicy(spec, self.rounds, two_stream=self.actor == "two_stream")

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """``{"msg": float32 [B, M]}``."""
        return vector_payload(outbox)

    def inbox(self, received: Mapping[int, Any], batch: int, num_agents: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Stack the peers' rows by sender; a row whose degree slot is not 0 or in ``[1, N]`` is rejected."""

        def degree_ok(rows: np.ndarray) -> np.ndarray:
            deg = rows[:, -1]
            return (deg == 0) | ((deg >= 1) & (deg <= num_agents))

        return vector_inbox(received, batch, num_agents, self.message_dim, row_check=degree_ok)

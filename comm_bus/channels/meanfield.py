"""``meanfield``: one fixed-size summary per agent and env step; receivers average over heard neighbours.

The message is ``message_dim`` floats per env copy whatever N is. The policy is
:class:`~marlmesh.policies.meanfield.MeanFieldPolicy` (``channel.meanfield.summary`` picks what is sent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from comm_bus.channels.vector import vector_inbox, vector_payload
from marlmesh.config.channel import ChannelConfig


class MeanFieldChannel:
    """One round of ``message_dim`` floats per env copy."""

    name = "meanfield"
    gated = False
    """Every row of the outbox is sent."""
    rounds = 1

    def __init__(self, config: ChannelConfig) -> None:
        self.message_dim = config.message_dim
        self.summary = config.meanfield.summary

    def build_policy(self, spec):  # noqa: ANN001, ANN201 (torch types stay out of import time)
        """A :class:`~marlmesh.policies.meanfield.MeanFieldPolicy`."""
        from marlmesh.policies.meanfield import MeanFieldPolicy

        return MeanFieldPolicy(spec, self.summary)

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """``{"msg": float32 [B, M]}``."""
        return vector_payload(outbox)

    def inbox(self, received: Mapping[int, Any], batch: int, num_agents: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Stack the peers' summaries by sender (the policy takes the masked mean)."""
        return vector_inbox(received, batch, num_agents, self.message_dim)

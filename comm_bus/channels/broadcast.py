"""``broadcast``: every agent sends an encoding of its observation to every peer once per step."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from comm_bus.channels.vector import vector_inbox, vector_payload
from comm_bus.mailbox import Delivery
from marlmesh.config.channel import ChannelConfig


class BroadcastChannel:
    """One round of ``message_dim`` floats per env copy; receivers use the mean over heard peers."""

    name = "broadcast"
    gated = False
    """Every row of the outbox is sent."""
    rounds = 1

    def __init__(self, config: ChannelConfig) -> None:
        self.message_dim = config.message_dim

    def build_policy(self, spec):  # noqa: ANN001, ANN201 (torch types stay out of import time)
        """A :class:`~marlmesh.policies.staged.BroadcastPolicy`."""
        from marlmesh.policies.staged import BroadcastPolicy

        return BroadcastPolicy(spec)

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """``{"msg": float32 [B, M]}``."""
        return vector_payload(outbox)

    def inbox(
        self, received: Mapping[int, Delivery], batch: int, num_agents: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Stack the peers' vectors by sender."""
        return vector_inbox(received, batch, num_agents, self.message_dim)

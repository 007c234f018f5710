"""``none``: agents do not communicate (independent learners)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from comm_bus.mailbox import Delivery
from marlmesh.config.channel import ChannelConfig


class NoneChannel:
    """No messages; the policy sees only the agent's own observation."""

    name = "none"
    gated = False
    """Every row of the outbox is sent."""
    rounds = 0

    def __init__(self, config: ChannelConfig) -> None:
        self.message_dim = config.message_dim

    def build_policy(self, spec):  # noqa: ANN001, ANN201 (torch types stay out of import time)
        """An :class:`~marlmesh.policies.staged.IndependentPolicy`."""
        from marlmesh.policies.staged import IndependentPolicy

        return IndependentPolicy(spec)

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """Never called: this channel has no rounds."""
        raise RuntimeError("the 'none' channel sends no messages")

    def inbox(
        self, received: Mapping[int, Delivery], batch: int, num_agents: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Never called: this channel has no rounds."""
        raise RuntimeError("the 'none' channel receives no messages")

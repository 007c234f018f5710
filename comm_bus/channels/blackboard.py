"""``blackboard`` (Co2PO): hazard-gated intent/yield entries; see :mod:`marlmesh.policies.blackboard`.

Wire row (``message_dim`` floats per env copy): ``[intent (message_dim - 2), yield, send flag]``. Only rows
with the send flag set are meant to travel: :meth:`BlackboardChannel.send_rows` gives the ``[B]`` bool row mask
for ``Bus.send(..., rows=...)``; receivers ignore flag-0 rows anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from comm_bus.channels.vector import vector_inbox, vector_payload
from marlmesh.config.base import ConfigError
from marlmesh.config.channel import ChannelConfig


class BlackboardChannel:
    """One gated round per env step.

    Raises:
        ConfigError: If ``message_dim < 3``.
    """

    name = "blackboard"
    gated = True
    """Sends only the rows whose send flag is set (:meth:`send_rows`)."""
    rounds = 1

    def __init__(self, config: ChannelConfig) -> None:
        if config.message_dim < 3:
            raise ConfigError("channel.name=blackboard needs channel.message_dim >= 3 (intent, yield, send flag)")
        self.message_dim = config.message_dim
        self.threshold = config.blackboard.threshold_init

    def build_policy(self, spec):  # noqa: ANN001, ANN201 (torch types stay out of import time)
        """A :class:`~marlmesh.policies.blackboard.BlackboardPolicy`."""
        from marlmesh.policies.blackboard import BlackboardPolicy

        return BlackboardPolicy(spec, self.threshold)

    def send_rows(self, outbox: np.ndarray) -> np.ndarray:
        """``[B]`` bool: the env copies whose entry is sent (predicted hazard above the threshold)."""
        return np.asarray(outbox)[:, -1] > 0.5

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """``{"msg": float32 [B, M]}`` (rows not in :meth:`send_rows` are not meant to be sent)."""
        return vector_payload(outbox)

    def inbox(self, received: Mapping[int, Any], batch: int, num_agents: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Stack the peers' rows; the send flag must be 0 or 1."""

        def flag_ok(rows: np.ndarray) -> np.ndarray:
            return (rows[:, -1] == 0) | (rows[:, -1] == 1)

        return vector_inbox(received, batch, num_agents, self.message_dim, row_check=flag_ok)

"""Message schema shared by channels that send one float vector per env copy: ``{"msg": float32 [B, M]}``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from comm_bus.envelope import Envelope

MESSAGE_KEY = "msg"


def vector_payload(outbox: np.ndarray) -> dict[str, np.ndarray]:
    """The payload of one outgoing message."""
    return {MESSAGE_KEY: np.ascontiguousarray(outbox, dtype=np.float32)}


def vector_inbox(
    received: Mapping[int, Envelope], batch: int, num_agents: int, message_dim: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stack received vectors by sender; a payload of the wrong shape, dtype or with non-finite values is rejected.

    Returns:
        ``(msgs [B, N, M] float32, mask [B, N] float32, number rejected)``.
    """
    msgs = np.zeros((batch, num_agents, message_dim), np.float32)
    mask = np.zeros((batch, num_agents), np.float32)
    rejected = 0
    for src, env in received.items():
        row = env.payload.get(MESSAGE_KEY)
        if row is None or row.shape != (batch, message_dim) or row.dtype.kind != "f" or not np.isfinite(row).all():
            rejected += 1
            continue
        msgs[:, src] = row
        mask[:, src] = 1.0
    return msgs, mask, rejected

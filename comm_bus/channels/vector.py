"""Message schema shared by channels that send one float vector per env copy: ``{"msg": float32 [B, M]}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MESSAGE_KEY = "msg"


def vector_payload(outbox: np.ndarray) -> dict[str, np.ndarray]:
    """The payload of one outgoing message."""
    return {MESSAGE_KEY: np.ascontiguousarray(outbox, dtype=np.float32)}


def vector_inbox(
    received: Mapping[int, Any], batch: int, num_agents: int, message_dim: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stack received vectors by sender; a payload of the wrong shape, dtype or with non-finite values is rejected.

    Args:
        received: Sender -> a value with ``.payload`` (rows ``[B, ...]``) and optionally ``.rows`` (``[B]``
            bool: env copies with a fresh value; None or absent = all), e.g. :class:`comm_bus.mailbox.Delivery`.
        batch: B.
        num_agents: N.
        message_dim: M.

    Returns:
        ``(msgs [B, N, M] float32, mask [B, N] float32, number rejected)``.
    """
    msgs = np.zeros((batch, num_agents, message_dim), np.float32)
    mask = np.zeros((batch, num_agents), np.float32)
    rejected = 0
    for src, got in received.items():
        row = got.payload.get(MESSAGE_KEY)
        if row is None or row.shape != (batch, message_dim) or row.dtype.kind != "f" or not 0 <= src < num_agents:
            rejected += 1
            continue
        rows = getattr(got, "rows", None)
        fresh = np.ones(batch, bool) if rows is None else np.asarray(rows, bool)
        finite = np.isfinite(row).all(axis=1)
        if not finite[fresh].all():
            rejected += 1
            continue
        msgs[fresh, src] = row[fresh]
        mask[fresh, src] = 1.0
    return msgs, mask, rejected

"""Message schema shared by channels that send one float vector per env copy: ``{"msg": float32 [B, M]}``.

Receivers go through :func:`vector_inbox`, which works with the bus before and after its rewrite: a received
object has ``.payload`` (``{"msg": [B, M]}``) and optionally ``.rows`` (``[B]`` bool: which env copies' rows
are present/visible; absent or None = every row). Rows that are not visible get mask 0 and zero messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

MESSAGE_KEY = "msg"

RowCheck = Callable[[np.ndarray], np.ndarray]
"""Extra per-row validation: ``rows [R, M] -> ok [R] bool`` (a False anywhere rejects the message)."""


def vector_payload(outbox: np.ndarray) -> dict[str, np.ndarray]:
    """The payload of one outgoing message."""
    return {MESSAGE_KEY: np.ascontiguousarray(outbox, dtype=np.float32)}


def visible_rows(env: Any, batch: int) -> np.ndarray | None:
    """The ``[B]`` bool row mask of a received message (all True when it has no ``.rows``), or None if malformed."""
    rows = getattr(env, "rows", None)
    if rows is None:
        return np.ones(batch, bool)
    rows = np.asarray(rows)
    if rows.shape != (batch,) or rows.dtype.kind not in "bi":
        return None
    return rows.astype(bool)


def vector_inbox(
    received: Mapping[int, Any],
    batch: int,
    num_agents: int,
    message_dim: int,
    row_check: RowCheck | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stack received vectors by sender; a malformed message is rejected as a whole.

    A message is rejected when its payload has no ``"msg"``, the wrong shape or dtype, a malformed ``.rows``,
    a sender index outside ``[0, N)``, non-finite values in a visible row, or a visible row failing
    ``row_check``.

    Args:
        received: Sender index -> received message (``.payload``, optional ``.rows``).
        batch: B.
        num_agents: N.
        message_dim: M.
        row_check: Optional channel-specific validation of the visible rows.

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
    for src, env in received.items():
        row = getattr(env, "payload", {}).get(MESSAGE_KEY)
        every_row = getattr(env, "rows", None) is None  # the common case: plain slices, no fancy indexing
        rows = slice(None) if every_row else visible_rows(env, batch)
        if (
            rows is None
            or not 0 <= int(src) < num_agents
            or row is None
            or row.shape != (batch, message_dim)
            or row.dtype.kind != "f"
        ):
            rejected += 1
            continue
        seen = row[rows]
        if not np.isfinite(seen).all() or (row_check is not None and not np.all(row_check(seen))):
            rejected += 1
            continue
        msgs[rows, src] = seen
        mask[rows, src] = 1.0
    return msgs, mask, rejected

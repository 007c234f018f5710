"""Link models (``marlmesh.links``). This version ships ``ideal``: every message is delivered at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdealLink:
    """A link without constraints: no loss, no delay, unlimited rate and range."""

    name: str = "ideal"

    def delivers(self, distance: float | None) -> bool:
        """Whether a message over ``distance`` gets through (always)."""
        return True

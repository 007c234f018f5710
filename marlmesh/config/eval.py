"""``eval``: the evaluation after training."""

from __future__ import annotations

from pydantic import Field

from marlmesh.config.base import StrictModel


class EvalConfig(StrictModel):
    """Evaluation after training and for ``marlmesh eval``."""

    episodes: int = Field(100, ge=1)
    num_envs: int = Field(50, ge=1, le=4096)
    deterministic: bool = True
    """Greedy/mean actions instead of sampling."""
    seed_offset: int = 1_000_003
    """Evaluation env seed = ``seed + seed_offset``."""

"""``channel``: what agents say to each other (the channel plugin and its settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from marlmesh.config.base import StrictModel


class DGATConfig(StrictModel):
    """Settings of the ``dgat`` channel (distributed graph attention, docs/algorithms.md)."""

    hops: int = Field(2, ge=1, le=6)
    """K: attention hops, i.e. bus rounds per env step (round k carries ``z^k``)."""
    actor: Literal["joint", "two_stream"] = "joint"
    """How the actor reads ``[o_i, ô_i]``. ``joint``: one MLP over the concatenation. ``two_stream``: the action
    logits (or Gaussian means) are ``f_i(o_i) + g_i(ô_i)``, two MLPs whose hidden units do not mix, with ``g_i``'s
    output layer initialised to zero, so the policy starts as an independent one and the messages only add a
    learned correction (the critic is ``V_i(LayerNorm([o_i, ô_i]))`` either way)."""


class MeanFieldConfig(StrictModel):
    """Settings of the ``meanfield`` channel."""

    summary: Literal["embedding", "action"] = "embedding"
    """What each agent sends: ``embedding`` = a learned ``tanh(W o_i)`` of ``message_dim`` floats; ``action`` =
    its action distribution given its own observation alone (Categorical probabilities, or the tanh of a Box
    action mean), zero-padded to ``message_dim`` (which must be at least the number of actions)."""


class BlackboardConfig(StrictModel):
    """Settings of the ``blackboard`` channel (Co2PO): hazard-gated intent/yield entries."""

    threshold_init: float = Field(0.5, gt=0, lt=1)
    """Initial hazard threshold: an entry is sent in an env copy only when the predicted hazard exceeds it."""
    target_rate: float = Field(0.2, gt=0, le=1)
    """Share of (step, env copy) rows in which an agent should send; the learner moves the threshold toward the
    hazard quantile that gives this rate."""
    threshold_ema: float = Field(0.1, gt=0, le=1)
    """Step size of that move per update (exponential moving average toward the quantile)."""


class ChannelConfig(StrictModel):
    """What agents say to each other (``marlmesh.channels`` plugin)."""

    name: str = "none"
    """``none`` (no communication), ``broadcast`` (each agent sends an encoding of its observation), ``dgat``
    (K-hop distributed graph attention), ``meanfield`` (fixed-size summary, receivers average it) or
    ``blackboard`` (Co2PO: hazard-gated intent/yield entries)."""
    message_dim: int = Field(16, ge=1, le=4096)
    """Size of one message vector (one row per env copy on the wire)."""
    dgat: DGATConfig = Field(default_factory=DGATConfig)
    """Used when ``name`` is ``dgat``."""
    meanfield: MeanFieldConfig = Field(default_factory=MeanFieldConfig)
    """Used when ``name`` is ``meanfield``."""
    blackboard: BlackboardConfig = Field(default_factory=BlackboardConfig)
    """Used when ``name`` is ``blackboard``."""

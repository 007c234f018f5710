"""``faults``: the fault schedule the launcher drives (kill, partition, degrade)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, model_validator

from marlmesh.config.base import StrictModel


class KillFault(StrictModel):
    """Kill one process (SIGKILL, like a crash or an evicted pod) when the run reaches ``at_env_steps``.

    The launcher checks fault triggers every ``runtime.progress_interval_s`` against the env-step counter,
    so the kill happens within one progress interval of ``at_env_steps``.
    """

    kind: Literal["kill"]
    role: Literal["agent", "learner", "env"]
    """Which process: an agent, a learner, or the env service."""
    agent: int | None = Field(None, ge=0)
    """Agent index (required for ``agent`` and ``learner``; must be unset for ``env``)."""
    at_env_steps: int = Field(ge=0)
    """Kill once the run has done this many env steps."""
    restart_after_env_steps: int | None = Field(None, ge=0)
    """Restart the process once the run has done this many more env steps; unset = it stays down for
    the rest of the run. An env kill must use 0 (env steps cannot advance while the env is down)."""

    @model_validator(mode="after")
    def _target(self) -> KillFault:
        if self.role in ("agent", "learner") and self.agent is None:
            raise ValueError(f"a kill fault of role {self.role!r} needs 'agent: <index>'")
        if self.role == "env":
            if self.agent is not None:
                raise ValueError("a kill fault of role 'env' takes no 'agent'")
            if self.restart_after_env_steps != 0:
                raise ValueError(
                    "a kill fault of role 'env' needs 'restart_after_env_steps: 0' "
                    "(env steps cannot advance while the env is down)"
                )
        return self


class PartitionFault(StrictModel):
    """Cut a set of directed bus links for an interval (drops with cause ``partition``)."""

    kind: Literal["partition"]
    links: list[tuple[NonNegativeInt, NonNegativeInt]] = Field(min_length=1)
    """Directed links ``[src, dst]`` (agent indices) that lose every message while the fault lasts."""
    from_env_steps: int = Field(ge=0)
    to_env_steps: int = Field(ge=0)

    @model_validator(mode="after")
    def _interval(self) -> PartitionFault:
        if self.to_env_steps <= self.from_env_steps:
            raise ValueError("to_env_steps must be greater than from_env_steps")
        return self


class DegradeFault(StrictModel):
    """Change the parameters of some bus links for an interval."""

    kind: Literal["degrade"]
    links: list[tuple[NonNegativeInt, NonNegativeInt]] = Field(min_length=1)
    """Directed links ``[src, dst]`` (agent indices) that are degraded while the fault lasts."""
    from_env_steps: int = Field(ge=0)
    to_env_steps: int = Field(ge=0)
    rate_bps: float | None = Field(None, gt=0)
    """Link rate in bit/s during the fault."""
    loss: float | None = Field(None, ge=0.0, le=1.0)
    """Bernoulli loss probability during the fault."""
    latency_ms: float | None = Field(None, ge=0)
    """One-way latency of the link during the fault (replaces the configured latency)."""

    @model_validator(mode="after")
    def _something_changes(self) -> DegradeFault:
        if self.to_env_steps <= self.from_env_steps:
            raise ValueError("to_env_steps must be greater than from_env_steps")
        if self.rate_bps is None and self.loss is None and self.latency_ms is None:
            raise ValueError("a degrade fault needs at least one of rate_bps, loss, latency_ms")
        return self


Fault = Annotated[KillFault | PartitionFault | DegradeFault, Field(discriminator="kind")]
"""One entry of the ``faults`` schedule, selected by its ``kind``."""

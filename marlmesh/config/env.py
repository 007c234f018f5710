"""``env``: the environment hosted by ``env_service``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from marlmesh.config.base import StrictModel


class EnvConfig(StrictModel):
    """The environment hosted by ``env_service``."""

    name: str = "marlmesh.simple_spread"
    """A registered env name (see ``marlmesh plugins``) or ``module:factory`` returning a PettingZoo
    ParallelEnv or a vectorized env. The default, ``marlmesh.simple_spread``, is the vectorized twin of
    ``mpe2.simple_spread_v3`` (same kwargs, observations and rewards, tested within 1e-5; the env service steps
    all B copies in one numpy call); ``mpe2.simple_spread_v3`` steps mpe2 itself, one copy at a time."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the env factory, e.g. ``N``, ``max_cycles``, ``local_ratio``."""
    num_envs: int = Field(32, ge=1, le=4096)
    """B: independent env copies stepped together; every message carries B rows."""
    workers: int = Field(1, ge=1, le=64)
    """Processes stepping the B copies (contiguous blocks, ``env_service/env_workers.py``); 1 = in the env
    service itself. While the env steps, the agents wait, so a second core for the env service (e.g. a
    2-CPU env pod) shortens every step. Results are identical for every value. At most ``num_envs``."""
    obs_radius: float | None = Field(None, gt=0)
    """Partial observability radius (MPE scenarios simple_spread, simple_reference, simple_speaker_listener, and
    the vectorized ``marlmesh.simple_spread``, which produces the same layout natively):
    landmarks and other agents farther than this (env units) are zeroed in an agent's observation and one
    visibility flag per entity is appended (the observation grows). Unset = full observability."""
    time_feature: bool = False
    """Append the elapsed share of the episode, ``t / max_cycles`` in [0, 1], to every agent's observation
    (``marlmesh/envs/time_obs.py``). With a fixed horizon the return still to come depends on the steps left;
    a local critic that sees them predicts it far better. Needs an env with ``max_cycles`` (MPE)."""
    step_deadline_ms: float = Field(10_000.0, gt=0)
    """Barrier deadline: after the first action of a tick arrives, agents missing after this long get a
    default action (counted)."""
    max_missed_deadlines: int = Field(3, ge=1)
    """An agent that misses this many deadlines in a row is no longer waited for until it steps again."""

    @model_validator(mode="after")
    def _workers_fit(self) -> EnvConfig:
        if self.workers > self.num_envs:
            raise ValueError(f"workers ({self.workers}) must not exceed num_envs ({self.num_envs})")
        return self

"""Factories for the ``mpe2`` environments registered under ``marlmesh.envs``.

Each factory applies marlmesh's documented defaults (the reference setting of docs/benchmarks.md) and passes any
``env.kwargs`` through unchanged, so ``--set env.kwargs.N=5`` works as in mpe2 itself.

The envs are built as mpe2's ``raw_env`` behind PettingZoo's AEC-to-parallel conversion, without the
``AssertOutOfBounds``/``OrderEnforcing`` wrappers of ``parallel_env()``: env_service validates every action
itself and drives the API in order, and the wrappers cost about 40 % of a step (same observations and
rewards; ``tests/unit/test_env_node.py`` checks it).
"""

from __future__ import annotations

from typing import Any

from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import aec_to_parallel_wrapper

SIMPLE_SPREAD_DEFAULTS: dict[str, Any] = {"N": 3, "max_cycles": 25, "local_ratio": 0.5, "continuous_actions": False}
"""simple_spread_v3 defaults: 3 agents, 25 steps, half local/half global reward, discrete actions."""

SPEAKER_LISTENER_DEFAULTS: dict[str, Any] = {"max_cycles": 25, "continuous_actions": False}
"""simple_speaker_listener_v4 defaults (two heterogeneous agents)."""

REFERENCE_DEFAULTS: dict[str, Any] = {"local_ratio": 0.5, "max_cycles": 25, "continuous_actions": False}
"""simple_reference_v3 defaults."""


def simple_spread_v3(**kwargs: Any) -> ParallelEnv:
    """N agents cover N landmarks and avoid each other."""
    from mpe2 import simple_spread_v3 as mod

    return aec_to_parallel_wrapper(mod.raw_env(**{**SIMPLE_SPREAD_DEFAULTS, **kwargs}))


def simple_speaker_listener_v4(**kwargs: Any) -> ParallelEnv:
    """A speaker that sees the goal colour and a listener that moves: different obs and action spaces."""
    from mpe2 import simple_speaker_listener_v4 as mod

    return aec_to_parallel_wrapper(mod.raw_env(**{**SPEAKER_LISTENER_DEFAULTS, **kwargs}))


def simple_reference_v3(**kwargs: Any) -> ParallelEnv:
    """Two agents that each must tell the other which landmark to go to."""
    from mpe2 import simple_reference_v3 as mod

    return aec_to_parallel_wrapper(mod.raw_env(**{**REFERENCE_DEFAULTS, **kwargs}))

"""Environments: the registered factories and :func:`make_env` that builds one from the config."""

from __future__ import annotations

from pettingzoo import ParallelEnv

from marlmesh import plugins
from marlmesh.config import EnvConfig


def make_env(config: EnvConfig) -> ParallelEnv:
    """One copy of the configured ParallelEnv.

    Args:
        config: ``env.name`` is a registered name or ``module:factory``; ``env.kwargs`` go to the factory.

    Raises:
        plugins.PluginError: If the name is neither registered nor importable.
        ValueError: If the factory rejects the kwargs or does not return a ParallelEnv.
    """
    factory = plugins.load("envs", config.name)
    try:
        env = factory(**config.kwargs)
    except TypeError as exc:
        raise ValueError(f"env {config.name!r} rejected env.kwargs {config.kwargs}: {exc}") from None
    if not (hasattr(env, "possible_agents") and hasattr(env, "step") and hasattr(env, "reset")):
        raise ValueError(f"env {config.name!r}: factory returned {type(env).__name__}, not a PettingZoo ParallelEnv")
    return env

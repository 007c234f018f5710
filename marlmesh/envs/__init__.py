"""Environments: the registered factories and :func:`make_env` that builds one from the config."""

from __future__ import annotations

from pettingzoo import ParallelEnv

from marlmesh import plugins
from marlmesh.config import EnvConfig


def make_env(config: EnvConfig) -> ParallelEnv:
    """One copy of the configured ParallelEnv.

    Args:
        config: ``env.name`` is a registered name or ``module:factory``; ``env.kwargs`` go to the factory;
            ``env.obs_radius`` (MPE only) wraps the env in :class:`~marlmesh.envs.partial_obs.RadiusObservation`,
            ``env.time_feature`` (then) in :class:`~marlmesh.envs.time_obs.TimeObservation`.

    Raises:
        plugins.PluginError: If the name is neither registered nor importable.
        ValueError: If the factory rejects the kwargs or does not return a ParallelEnv, or ``obs_radius`` is set
            for an env without a known MPE observation layout, or ``time_feature`` for an env without a fixed
            horizon.
    """
    factory = plugins.load("envs", config.name)
    try:
        env = factory(**config.kwargs)
    except TypeError as exc:
        raise ValueError(f"env {config.name!r} rejected env.kwargs {config.kwargs}: {exc}") from None
    if not (hasattr(env, "possible_agents") and hasattr(env, "step") and hasattr(env, "reset")):
        raise ValueError(f"env {config.name!r}: factory returned {type(env).__name__}, not a PettingZoo ParallelEnv")
    if config.obs_radius is not None:
        from marlmesh.envs.partial_obs import RadiusObservation

        try:
            env = RadiusObservation(env, config.obs_radius)
        except ValueError as exc:
            raise ValueError(f"env {config.name!r}: {exc}") from None
    if config.time_feature:
        from marlmesh.envs.time_obs import TimeObservation

        try:
            env = TimeObservation(env)
        except ValueError as exc:
            raise ValueError(f"env {config.name!r}: {exc}") from None
    return env

"""Environments: the registered factories and :func:`make_env` that builds one from the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pettingzoo import ParallelEnv

from marlmesh import plugins
from marlmesh.config import EnvConfig
from marlmesh.envs.vector.base import VectorEnv, is_vectorized

T = TypeVar("T")


def make_env(config: EnvConfig) -> ParallelEnv:
    """One copy of the configured ParallelEnv (a one-copy view of a vectorized env plugin).

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
    if is_vectorized(factory):
        from marlmesh.envs.vector.parallel import VectorParallelEnv

        return VectorParallelEnv(_build_vector(factory, config, 1))
    try:
        env = factory(**config.kwargs)
    except TypeError as exc:
        raise ValueError(f"env {config.name!r} rejected env.kwargs {config.kwargs}: {exc}") from None
    if not (hasattr(env, "possible_agents") and hasattr(env, "step") and hasattr(env, "reset")):
        raise ValueError(f"env {config.name!r}: factory returned {type(env).__name__}, not a PettingZoo ParallelEnv")
    if config.obs_radius is not None:
        from marlmesh.envs.partial_obs import RadiusObservation

        env = _wrapped(config, lambda: RadiusObservation(env, config.obs_radius))
    if config.time_feature:
        from marlmesh.envs.time_obs import TimeObservation

        env = _wrapped(config, lambda: TimeObservation(env))
    return env


def _wrapped(config: EnvConfig, wrap: Callable[[], T]) -> T:
    """``wrap()``, its ``ValueError`` prefixed with the env's name."""
    try:
        return wrap()
    except ValueError as exc:
        raise ValueError(f"env {config.name!r}: {exc}") from None


def is_vectorized_env(config: EnvConfig) -> bool:
    """Whether ``env.name`` is a vectorized env plugin (:class:`~marlmesh.envs.vector.base.VectorEnv`).

    Raises:
        plugins.PluginError: If the name is neither registered nor importable.
    """
    return is_vectorized(plugins.load("envs", config.name))


def make_vector_env(config: EnvConfig, num_envs: int) -> VectorEnv:
    """``num_envs`` copies of a vectorized env plugin, with ``env.obs_radius`` and ``env.time_feature`` applied.

    Raises:
        plugins.PluginError: If the name is neither registered nor importable.
        ValueError: If the plugin is not vectorized or rejects the kwargs or options.
    """
    factory = plugins.load("envs", config.name)
    if not is_vectorized(factory):
        raise ValueError(f"env {config.name!r} is not a vectorized env plugin")
    return _build_vector(factory, config, num_envs)


def _build_vector(factory: type[VectorEnv], config: EnvConfig, num_envs: int) -> VectorEnv:
    options = {} if config.obs_radius is None else {"obs_radius": config.obs_radius}
    try:
        env = factory(num_envs=num_envs, **options, **config.kwargs)
    except TypeError as exc:
        what = "env.kwargs" if not options else "env.kwargs or env.obs_radius"
        raise ValueError(f"env {config.name!r} rejected {what} {config.kwargs}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"env {config.name!r}: {exc}") from None
    if config.time_feature:
        from marlmesh.envs.vector.time_obs import VectorTimeObservation

        env = _wrapped(config, lambda: VectorTimeObservation(env))
    return env

"""Plugin registry over Python entry-point groups.

Groups: ``marlmesh.envs`` (factories returning a PettingZoo ParallelEnv, or
:class:`~marlmesh.envs.vector.base.VectorEnv` classes, which declare ``vectorized = True``),
``marlmesh.channels`` (channel classes), ``marlmesh.links`` (link models), ``marlmesh.algos`` (algorithms).
Third-party packages add plugins by declaring entry points in these groups; ``marlmesh plugins`` lists what is
installed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from marlmesh.config.base import ConfigError

GROUPS: dict[str, str] = {
    "envs": "marlmesh.envs",
    "channels": "marlmesh.channels",
    "links": "marlmesh.links",
    "algos": "marlmesh.algos",
}


DECLARED: dict[str, tuple[str, ...]] = {
    "channels": ("name", "gated"),
    "links": ("name", "ideal"),
    "algos": ("name", "required_channel", "centralized"),
}
"""Class attributes a plugin of each kind must declare (see :mod:`marlmesh.interfaces`); callers read them."""


class PluginError(LookupError):
    """A plugin name is unknown, its entry point cannot be loaded, or it does not declare what its role needs."""


def installed(kind: str) -> dict[str, str]:
    """Return ``name -> "module:attr"`` of the installed plugins of one kind (``envs``, ``channels``, ...)."""
    group = GROUPS[kind]
    return {ep.name: ep.value for ep in sorted(entry_points(group=group), key=lambda e: e.name)}


def load(kind: str, name: str) -> Any:
    """Load the plugin object registered as ``name`` in the group of ``kind``.

    For ``envs`` a ``module:factory`` reference is accepted as well as a registered name.

    Raises:
        PluginError: If the name is unknown (the message lists what is installed), fails to import, or does not
            declare the attributes of its role (:data:`DECLARED`).
    """
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(GROUPS)}")
    available = installed(kind)
    if name in available:
        target = available[name]
    elif kind == "envs" and ":" in name:
        target = name
    else:
        listing = ", ".join(available) or "(none)"
        extra = " or a 'module:factory' reference" if kind == "envs" else ""
        raise PluginError(f"unknown {kind[:-1]} {name!r}; installed {kind}: {listing}{extra}")
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{kind[:-1]} {name!r} ({target}) cannot be loaded: {exc}") from None
    missing = [a for a in DECLARED.get(kind, ()) if not hasattr(obj, a)]
    if missing:
        role = {"channels": "Channel", "links": "LinkModel", "algos": "Algo"}[kind]
        raise PluginError(
            f"{kind[:-1]} {name!r} ({target}) does not declare {', '.join(missing)} "
            f"(class attributes of marlmesh.interfaces.{role})"
        )
    return obj


def check_channel(algo_name: str, required: str | None, channel_name: str) -> None:
    """Raise if ``algo_name`` needs channel ``required`` and the config names another.

    Raises:
        ConfigError: One line with the ``--set`` that fixes it.
    """
    if required is not None and channel_name != required:
        raise ConfigError(
            f"algo.name={algo_name} needs channel.name={required}, got channel.name={channel_name} "
            f"(add --set channel.name={required})"
        )

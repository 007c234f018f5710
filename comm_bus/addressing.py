"""Peer addressing from config and environment variables (the same code path locally and on Kubernetes).

Variables (all optional except where the launcher or the manifests set them):

- ``MARLMESH_AGENT_ID``: this agent's index (0..N-1). On Kubernetes the StatefulSet ordinal.
- ``MARLMESH_NUM_AGENTS``: N.
- ``MARLMESH_PEER_PATTERN``: address of peer ``{id}``, e.g. ``tcp://127.0.0.1:{port}`` locally or
  ``tcp://agents-{id}.agents:{port}`` with StatefulSet and headless Service ``agents`` (k8s/base).
  ``{port}`` is ``MARLMESH_BUS_BASE_PORT + id``.
- ``MARLMESH_BUS_BASE_PORT``: bus port of agent 0 (default 47000).
- ``MARLMESH_BUS_BIND``: what this agent binds, same placeholders (default ``tcp://127.0.0.1:{port}``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PATTERN = "tcp://127.0.0.1:{port}"
DEFAULT_BASE_PORT = 47000


@dataclass(frozen=True)
class PeerAddressing:
    """Where every agent's bus socket lives.

    Attributes:
        pattern: Address template of a peer; placeholders ``{id}`` and ``{port}``.
        base_port: Port of agent 0; agent ``i`` uses ``base_port + i``.
        bind_pattern: Template of the address this agent binds.
    """

    pattern: str = DEFAULT_PATTERN
    base_port: int = DEFAULT_BASE_PORT
    bind_pattern: str = DEFAULT_PATTERN

    def __post_init__(self) -> None:
        for name, tpl in (("MARLMESH_PEER_PATTERN", self.pattern), ("MARLMESH_BUS_BIND", self.bind_pattern)):
            try:
                tpl.format(id=0, port=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{name}={tpl!r}: only the placeholders {{id}} and {{port}} are allowed ({exc})"
                ) from None
            if not tpl.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"{name}={tpl!r}: must start with tcp://, ipc:// or inproc://")
        if not 1 <= self.base_port <= 65535:
            raise ValueError(f"MARLMESH_BUS_BASE_PORT={self.base_port}: not a port number")

    def peer_address(self, index: int) -> str:
        """Address that peers dial to reach agent ``index``."""
        return self.pattern.format(id=index, port=self.base_port + index)

    def bind_address(self, index: int) -> str:
        """Address agent ``index`` binds."""
        return self.bind_pattern.format(id=index, port=self.base_port + index)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        port_var: str = "MARLMESH_BUS_BASE_PORT",
        pattern_var: str = "MARLMESH_PEER_PATTERN",
        bind_var: str = "MARLMESH_BUS_BIND",
        default_port: int = DEFAULT_BASE_PORT,
    ) -> PeerAddressing:
        """Read the ``MARLMESH_*`` bus variables (defaults where unset).

        Args:
            environ: Variables (default: the process environment).
            port_var: Variable of the base port (learners' gossip uses its own names).
            pattern_var: Variable of the peer address template.
            bind_var: Variable of the bind address template.
            default_port: Base port when ``port_var`` is unset.

        Raises:
            ValueError: If a variable is malformed; the message names it.
        """
        env = os.environ if environ is None else environ
        raw_port = env.get(port_var, str(default_port))
        try:
            base_port = int(raw_port)
        except ValueError:
            raise ValueError(f"{port_var}={raw_port!r}: not an integer") from None
        return cls(
            pattern=env.get(pattern_var, DEFAULT_PATTERN),
            base_port=base_port,
            bind_pattern=env.get(bind_var, DEFAULT_PATTERN),
        )


def agent_id_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """``MARLMESH_AGENT_ID`` as an int, None if unset.

    Also accepts a StatefulSet pod name such as ``agent-3`` (the ordinal after the last dash).

    Raises:
        ValueError: If set but not an index.
    """
    env = os.environ if environ is None else environ
    raw = env.get("MARLMESH_AGENT_ID")
    if raw is None or raw == "":
        return None
    tail = raw.rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise ValueError(f"MARLMESH_AGENT_ID={raw!r}: expected an agent index such as 0 or a pod name such as agent-0")
    return int(tail)

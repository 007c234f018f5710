"""Peer addressing from config and environment variables (the same code path locally and on Kubernetes).

The variables (``MARLMESH_AGENT_ID``, ``MARLMESH_PEER_PATTERN``, ``MARLMESH_BUS_BIND``,
``MARLMESH_BUS_BASE_PORT``), their meaning and defaults are declared in :mod:`marlmesh.contract`. A peer
address template such as ``tcp://agents-{id}.agents:{port}`` (StatefulSet and headless Service ``agents``,
k8s/base) has the placeholders ``{id}`` (the agent index) and ``{port}`` (base port + index).

Processes started by a local launcher bind port 0 instead (``MARLMESH_BUS_BIND=tcp://127.0.0.1:0``) and learn
their peers' ports from a peer table (``MARLMESH_PEER_TABLE``, :mod:`marlmesh.ports`): the endpoint binds at
once and dials its peers only once :meth:`PeerAddressing.with_peer_ports` has been given the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from marlmesh import contract

DEFAULT_PATTERN = contract.LOCAL_ENDPOINT_PATTERN
DEFAULT_BASE_PORT = contract.DEFAULT_BUS_BASE_PORT


@dataclass(frozen=True)
class PeerAddressing:
    """Where every agent's bus socket lives.

    Attributes:
        pattern: Address template of a peer; placeholders ``{id}`` and ``{port}``.
        base_port: Port of agent 0; agent ``i`` uses ``base_port + i``.
        bind_pattern: Template of the address this agent binds.
        peer_table: File that will list every agent's bound port (``MARLMESH_PEER_TABLE``); None: fixed
            ports, base port + index.
        peer_ports: The ports read from that table (index ``i`` at position ``i``); None until it is read.
    """

    pattern: str = DEFAULT_PATTERN
    base_port: int = DEFAULT_BASE_PORT
    bind_pattern: str = DEFAULT_PATTERN
    peer_table: str | None = None
    peer_ports: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name, tpl in ((contract.PEER_PATTERN.name, self.pattern), (contract.BUS_BIND.name, self.bind_pattern)):
            try:
                tpl.format(id=0, port=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{name}={tpl!r}: only the placeholders {{id}} and {{port}} are allowed ({exc})"
                ) from None
            if not tpl.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"{name}={tpl!r}: must start with tcp://, ipc:// or inproc://")
        if not 1 <= self.base_port <= 65535:
            raise ValueError(f"{contract.BUS_BASE_PORT.name}={self.base_port}: not a port number")

    @classmethod
    def os_assigned(
        cls, host: str = contract.LOCAL_HOST, peer_table: str = "(given in this process)"
    ) -> PeerAddressing:
        """Bind a port the OS assigns on ``host``; dial peers on ``host`` once their ports are known.

        Args:
            host: Address every endpoint binds and dials.
            peer_table: Where the peers' ports come from (named in errors).
        """
        return cls(pattern=f"tcp://{host}:{{port}}", bind_pattern=f"tcp://{host}:0", peer_table=peer_table)

    @property
    def dialable(self) -> bool:
        """Whether every peer's address is known (fixed ports, or the peer table has been read)."""
        return self.peer_table is None or self.peer_ports is not None

    def with_peer_ports(self, ports: Sequence[int]) -> PeerAddressing:
        """This addressing with every agent's port taken from a peer table."""
        return replace(self, peer_ports=tuple(int(p) for p in ports))

    def peer_address(self, index: int) -> str:
        """Address that peers dial to reach agent ``index``.

        Raises:
            RuntimeError: If the peer table has not been read yet.
        """
        if self.peer_ports is not None:
            return self.pattern.format(id=index, port=self.peer_ports[index])
        if self.peer_table is not None:
            raise RuntimeError(f"agent {index}'s address is in the peer table {self.peer_table}, not read yet")
        return self.pattern.format(id=index, port=self.base_port + index)

    def bind_address(self, index: int) -> str:
        """Address agent ``index`` binds."""
        return self.bind_pattern.format(id=index, port=self.base_port + index)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        port_var: contract.Variable = contract.BUS_BASE_PORT,
        pattern_var: contract.Variable = contract.PEER_PATTERN,
        bind_var: contract.Variable = contract.BUS_BIND,
        table_var: contract.Variable = contract.PEER_TABLE,
    ) -> PeerAddressing:
        """Read the bus variables of the process contract (their defaults where unset).

        Args:
            environ: Variables (default: the process environment).
            port_var: Variable of the base port (learners' gossip uses its own variables).
            pattern_var: Variable of the peer address template.
            bind_var: Variable of the bind address template.
            table_var: Variable of the peer table file.

        Raises:
            ValueError: If a variable is malformed; the message names it.
        """
        env = os.environ if environ is None else environ
        base_port = port_var.integer(env)
        return cls(
            pattern=pattern_var.value(env) or DEFAULT_PATTERN,
            base_port=DEFAULT_BASE_PORT if base_port is None else base_port,
            bind_pattern=bind_var.value(env) or DEFAULT_PATTERN,
            peer_table=table_var.value(env),
        )


def agent_id_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """``MARLMESH_AGENT_ID`` as an int, None if unset.

    Also accepts a StatefulSet pod name such as ``agent-3`` (the ordinal after the last dash).

    Raises:
        ValueError: If set but not an index.
    """
    env = os.environ if environ is None else environ
    raw = contract.AGENT_ID.value(env)
    if raw is None:
        return None
    index = contract.agent_index(raw)
    if index is None:
        raise ValueError(
            f"{contract.AGENT_ID.name}={raw!r}: expected an agent index such as 0 or a pod name such as agent-0"
        )
    return index

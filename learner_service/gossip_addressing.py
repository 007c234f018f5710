"""Where learners' gossip sockets live (environment variables, like the agents' bus addressing).

- ``MARLMESH_GOSSIP_BASE_PORT``: gossip port of learner 0; learner ``i`` uses base + i (default 48000).
- ``MARLMESH_GOSSIP_PATTERN``: address of learner ``{id}``'s gossip socket, e.g.
  ``tcp://agents-{id}.agents:{port}`` on Kubernetes (default ``tcp://127.0.0.1:{port}``).
- ``MARLMESH_GOSSIP_BIND``: what this learner binds (default ``tcp://127.0.0.1:{port}``).
"""

from __future__ import annotations

from collections.abc import Mapping

from comm_bus.addressing import PeerAddressing

DEFAULT_GOSSIP_BASE_PORT = 48000


def gossip_addressing(environ: Mapping[str, str] | None = None) -> PeerAddressing:
    """Read the ``MARLMESH_GOSSIP_*`` variables (defaults where unset).

    Raises:
        ValueError: If a variable is malformed; the message names it.
    """
    return PeerAddressing.from_env(
        environ,
        port_var="MARLMESH_GOSSIP_BASE_PORT",
        pattern_var="MARLMESH_GOSSIP_PATTERN",
        bind_var="MARLMESH_GOSSIP_BIND",
        default_port=DEFAULT_GOSSIP_BASE_PORT,
    )

"""Where learners' gossip sockets live (environment variables, like the agents' bus addressing).

``MARLMESH_GOSSIP_BASE_PORT``, ``MARLMESH_GOSSIP_PATTERN``, ``MARLMESH_GOSSIP_BIND`` and
``MARLMESH_GOSSIP_PEER_TABLE`` (declared with their defaults in :mod:`marlmesh.contract`) play the roles of the
bus variables; on Kubernetes the pattern is ``tcp://agents-{id}.agents:{port}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from comm_bus.addressing import PeerAddressing
from marlmesh import contract

DEFAULT_GOSSIP_BASE_PORT = contract.DEFAULT_GOSSIP_BASE_PORT


def gossip_addressing(environ: Mapping[str, str] | None = None) -> PeerAddressing:
    """Read the ``MARLMESH_GOSSIP_*`` variables (defaults where unset).

    Raises:
        ValueError: If a variable is malformed; the message names it.
    """
    return PeerAddressing.from_env(
        environ,
        port_var=contract.GOSSIP_BASE_PORT,
        pattern_var=contract.GOSSIP_PATTERN,
        bind_var=contract.GOSSIP_BIND,
        table_var=contract.GOSSIP_PEER_TABLE,
    )

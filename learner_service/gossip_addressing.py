"""Where learners' gossip sockets live (environment variables, like the agents' bus addressing).

- ``MARLMESH_GOSSIP_BASE_PORT``: gossip port of learner 0; learner ``i`` uses base + i (default 48000).
- ``MARLMESH_GOSSIP_PATTERN``: address of learner ``{id}``'s gossip socket, e.g.
  ``tcp://agents-{id}.agents:{port}`` on Kubernetes (default ``tcp://127.0.0.1:{port}``).
- ``MARLMESH_GOSSIP_BIND``: what this learner binds (default ``tcp://127.0.0.1:{port}``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from comm_bus.addressing import DEFAULT_PATTERN, PeerAddressing

DEFAULT_GOSSIP_BASE_PORT = 48000


def gossip_addressing(environ: Mapping[str, str] | None = None) -> PeerAddressing:
    """Read the ``MARLMESH_GOSSIP_*`` variables (defaults where unset).

    Raises:
        ValueError: If a variable is malformed; the message names it.
    """
    env = os.environ if environ is None else environ
    raw = env.get("MARLMESH_GOSSIP_BASE_PORT", str(DEFAULT_GOSSIP_BASE_PORT))
    try:
        base = int(raw)
    except ValueError:
        raise ValueError(f"MARLMESH_GOSSIP_BASE_PORT={raw!r}: not an integer") from None
    return PeerAddressing(
        pattern=env.get("MARLMESH_GOSSIP_PATTERN", DEFAULT_PATTERN),
        base_port=base,
        bind_pattern=env.get("MARLMESH_GOSSIP_BIND", DEFAULT_PATTERN),
    )

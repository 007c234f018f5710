"""The tiny core interfaces that plugins implement (see docs/architecture.md, "Plugins").

- ``marlmesh.envs``: a factory ``(**env.kwargs) -> pettingzoo.ParallelEnv``; no interface of our own.
- ``marlmesh.channels``: :class:`Channel` (policy stages + message schema).
- ``marlmesh.links``: :class:`LinkModel`.
- ``marlmesh.algos``: :class:`Algo` (builds one agent's learner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch-free at import time
    from comm_bus.mailbox import Delivery
    from marlmesh.config import Config, LinkConfig
    from marlmesh.policies.staged import StagedPolicy
    from marlmesh.policy_spec import PolicySpec


@runtime_checkable
class Channel(Protocol):
    """What agents say: the staged policy that produces messages and the schema that carries them.

    Attributes:
        name: Plugin name (also the envelope's ``channel`` field).
        rounds: Communication rounds per env step (0 = silent).
        message_dim: Size of one message row.

    A gated channel (e.g. ``blackboard``) also defines ``send_rows(outbox [B, M]) -> [B] bool``: the env copies
    whose row is sent this round (for ``Bus.send(..., rows=...)``). Received messages may carry ``.rows``
    (``[B]`` bool, which rows are present); ``inbox`` gives mask 0 to the others
    (:func:`comm_bus.channels.vector.vector_inbox` does this). ``marlmesh.testing.channels`` is the conformance
    suite every channel should pass.
    """

    name: str
    rounds: int
    message_dim: int

    def build_policy(self, spec: PolicySpec) -> StagedPolicy:
        """Build the torch policy whose stages produce and consume this channel's messages."""
        ...

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """Wire payload of one round's outgoing message (``outbox`` is ``[B, M]``)."""
        ...

    def inbox(
        self, received: Mapping[int, Delivery], batch: int, num_agents: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Received values -> ``(msgs [B, N, M], mask [B, N], rejected)``; bad payloads are rejected.

        ``received[src].rows`` (``[B]`` bool or None = all) says which env copies have a fresh value.
        """
        ...


class LinkModel(Protocol):
    """The parameters of every directed link over time; built from the ``bus.links`` config section.

    The fate of each message (range, loss, queue, delay, serialization) is computed from these parameters by
    :class:`comm_bus.link_emulation.LinkEmulator`, so a plugin only says what the links are like.

    Attributes:
        name: Plugin name.
        ideal: True if no link is ever constrained (the bus then skips emulation).
    """

    name: str
    ideal: bool

    def params_for(self, src: int, dst: int, now: float) -> LinkConfig:
        """Parameters of the directed link ``src -> dst`` at bus-clock time ``now``."""
        ...


class Algo(Protocol):
    """A learning algorithm: builds the learner of one agent (decentralized: one per agent)."""

    name: str

    def build_learner(self, config: Config, spec: PolicySpec, channel: Channel) -> Any:
        """Return an object with ``update(columns) -> dict[str, float]`` and a ``policy`` attribute."""
        ...

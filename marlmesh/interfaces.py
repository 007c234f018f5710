"""The tiny core interfaces that plugins implement (see docs/architecture.md, "Plugins").

One typed protocol per role; what a caller may rely on is declared here as an attribute, never probed:

- ``marlmesh.envs``: a factory ``(**env.kwargs) -> pettingzoo.ParallelEnv``; no interface of our own.
- ``marlmesh.channels``: :class:`Channel` (policy stages + message schema; ``gated`` says it sends only some
  rows, see :class:`GatedChannel`), reading :class:`~marlmesh.exchange.Heard` messages.
- ``marlmesh.links``: :class:`LinkModel` (``ideal`` says the bus may skip emulation).
- ``marlmesh.algos``: :class:`Algo` (builds one agent's :class:`Learner`; ``required_channel`` and
  ``centralized`` say how it may run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch-free at import time
    from marlmesh.config import Config, LinkConfig
    from marlmesh.exchange import Heard
    from marlmesh.policies.staged import StagedPolicy
    from marlmesh.policy_spec import PolicySpec


@runtime_checkable
class Channel(Protocol):
    """What agents say: the staged policy that produces messages and the schema that carries them.

    Attributes:
        name: Plugin name (also the envelope's ``channel`` field).
        rounds: Communication rounds per env step (0 = silent).
        message_dim: Size of one message row.
        gated: True if the channel sends only some env copies' rows each round; it then is a
            :class:`GatedChannel` (``send_rows``). False: every row of the outbox is sent.

    Received messages may carry ``.rows`` (``[B]`` bool, which rows are present); ``inbox`` gives mask 0 to the
    others (:func:`comm_bus.channels.vector.vector_inbox` does this). ``marlmesh.testing.channels`` is the
    conformance suite every channel should pass.
    """

    name: str
    rounds: int
    message_dim: int
    gated: bool

    def build_policy(self, spec: PolicySpec) -> StagedPolicy:
        """Build the torch policy whose stages produce and consume this channel's messages."""
        ...

    def payload(self, outbox: np.ndarray) -> dict[str, np.ndarray]:
        """Wire payload of one round's outgoing message (``outbox`` is ``[B, M]``)."""
        ...

    def inbox(self, received: Mapping[int, Heard], batch: int, num_agents: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Received values -> ``(msgs [B, N, M], mask [B, N], rejected)``; bad payloads are rejected.

        ``received[src].rows`` (``[B]`` bool or None = all) says which env copies have a fresh value.
        """
        ...


@runtime_checkable
class GatedChannel(Channel, Protocol):
    """A channel with ``gated = True`` (e.g. ``blackboard``): each round it sends only some env copies' rows."""

    def send_rows(self, outbox: np.ndarray) -> np.ndarray:
        """``[B]`` bool: the env copies whose row of ``outbox`` (``[B, M]``) is sent this round."""
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


class Learner(Protocol):
    """One agent's learner: trains that agent's policy on that agent's own fragments only.

    Attributes:
        policy: The torch policy it trains (a :class:`~marlmesh.policies.staged.StagedPolicy`).
        optimizer: Its optimizer (its state is saved in checkpoints).
    """

    policy: StagedPolicy
    optimizer: Any

    def set_progress(self, fraction: float) -> float:
        """Tell it how far the run is (0..1, for annealing); returns the learning rate now in use."""
        ...

    def update(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        """One update on a batch of fragment columns; returns the losses and statistics to report."""
        ...


class Algo(Protocol):
    """A learning algorithm: builds the learner of one agent (decentralized: one per agent).

    Attributes:
        name: Plugin name.
        required_channel: The channel it needs (``marlmesh train`` refuses another one), None = any.
        centralized: True only for the CENTRALIZED REFERENCE (``mappo-central``): it trains every agent in one
            process with a central critic, has no per-agent learner, and ``marlmesh train`` runs it with its
            own runner (:mod:`marlmesh.launch.centralized`). Every decentralized algorithm says False.
    """

    name: str
    required_channel: str | None
    centralized: bool

    def build_learner(self, config: Config, spec: PolicySpec, channel: Channel) -> Learner:
        """Return the learner of agent ``spec.agent_index``."""
        ...

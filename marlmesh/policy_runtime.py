"""What the staged loop needs from a policy: numpy in, numpy out, whatever runs it (torch, onnxruntime, numpy).

- ``encode(obs) -> (state, outbox or None)``
- ``round(k, state, (msgs, mask)) -> (state, outbox or None)`` for ``1 <= k < rounds``
- ``act(state, inboxes) -> ActOutput`` (distribution parameters and value)
- ``sample(out, deterministic) -> (action, log_prob)``

State is an opaque object owned by the runtime. Implementations:
:class:`~marlmesh.policies.torch_runtime.TorchRuntime` (torch) and :class:`agent_service.runtime.OnnxRuntime`
(exported graphs, the edge install). This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

NpInbox = tuple[np.ndarray, np.ndarray]
"""One round's inbox: ``(msgs [B, N, M], mask [B, N])``."""


@dataclass
class ActOutput:
    """The final stage's result.

    Attributes:
        params: Distribution parameters: ``{"logits": [B, n]}`` (discrete) or ``{"mean", "std": [B, d]}`` (box).
        value: ``[B]`` local critic value.
        handle: Runtime-private object (the torch distribution) reused by :meth:`PolicyRuntime.sample`.
    """

    params: dict[str, np.ndarray]
    value: np.ndarray
    handle: Any = None


class PolicyRuntime(Protocol):
    """What the agent loop needs from a policy."""

    rounds: int

    def encode(self, obs: np.ndarray) -> tuple[Any, np.ndarray | None]:
        """Stage 0."""
        ...

    def round(self, k: int, state: Any, inbox: NpInbox) -> tuple[Any, np.ndarray | None]:
        """Stage k (1 <= k < rounds)."""
        ...

    def act(self, state: Any, inboxes: list[NpInbox]) -> ActOutput:
        """Final stage."""
        ...

    def sample(self, out: ActOutput, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(action [B, ...], log_prob [B])``."""
        ...

    def load_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Swap in new parameters (training runtimes only)."""
        ...

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter :meth:`load_params` expects (empty for frozen runtimes)."""
        ...

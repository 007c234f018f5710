"""What the staged loop needs from a policy: numpy in, numpy out, whatever runs it (torch, onnxruntime, numpy).

- ``encode(obs) -> (state, outbox or None)``
- ``round(k, state, (msgs, mask)) -> (state, outbox or None)`` for ``1 <= k < rounds``
- ``act(state, inboxes) -> ActOutput`` (distribution parameters and value)
- ``sample(out, deterministic) -> (action, log_prob)``

State is an opaque object owned by the runtime. Implementations:
:class:`~marlmesh.policies.torch_runtime.TorchRuntime` (torch) and :class:`agent_service.runtime.OnnxRuntime`
(ONNX graphs: frozen ones written by ``marlmesh export`` on the edge, or a learner's :class:`PolicyGraphs`
with swappable weights in training). Both sample with :func:`sample_numpy` from a numpy generator seeded
:func:`sampler_seed`, so the same distribution parameters give the same actions whichever runtime computed them.
This module never imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from marlmesh.spaces import SpaceSpec
    from marlmesh.v1 import learner_pb2

NpInbox = tuple[np.ndarray, np.ndarray]
"""One round's inbox: ``(msgs [B, N, M], mask [B, N])``."""


@dataclass
class ActOutput:
    """The final stage's result.

    Attributes:
        params: Distribution parameters: ``{"logits": [B, n]}`` (discrete) or ``{"mean", "std": [B, d]}`` (box).
        value: ``[B]`` local critic value.
    """

    params: dict[str, np.ndarray]
    value: np.ndarray


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


def sampler_seed(seed: int, agent_index: int) -> int:
    """The seed of agent ``agent_index``'s action sampler in a run seeded ``seed`` (the same on every launcher)."""
    return seed * 7919 + 104_729 + agent_index


def sample_numpy(
    params: Mapping[str, np.ndarray], space: SpaceSpec, deterministic: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample actions from distribution parameters in numpy: ``(action, log_prob)``.

    Every runtime samples here, so identical parameters and generator states give identical actions.
    Discrete: ``params["logits"]`` (log-probabilities up to a constant; Gumbel-max with one uniform draw per
    logit). Box: diagonal Normal ``mean``/``std`` (one standard normal draw per dimension).
    """
    if space.kind == "discrete":
        logits = np.asarray(params["logits"], np.float64)
        logp_all = logits - _logsumexp(logits)
        if deterministic:
            action = logp_all.argmax(-1)
        else:
            gumbel = -np.log(-np.log(rng.uniform(np.finfo(np.float64).tiny, 1.0, size=logits.shape)))
            action = (logp_all + gumbel).argmax(-1)
        logp = np.take_along_axis(logp_all, action[:, None], axis=-1)[:, 0]
        return action.astype(np.int64), logp.astype(np.float32)
    mean = np.asarray(params["mean"], np.float32)
    std = np.asarray(params["std"], np.float32)
    flat = mean if deterministic else mean + std * rng.standard_normal(mean.shape).astype(np.float32)
    logp = (-((flat - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    return flat.reshape(flat.shape[0], *space.shape).astype(np.float32), logp.astype(np.float32)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(-1, keepdims=True))


@dataclass(frozen=True)
class PolicyGraphs:
    """One agent's policy stages as ONNX graphs whose parameters are inputs (a training agent acts without torch).

    The learner exports them once from its policy's architecture (:func:`marlmesh.policies.onnx_export.
    training_graphs`); the agent feeds the arrays of every weights version it receives into them by name.

    Attributes:
        agent_index: The agent.
        rounds: Communication rounds of the channel.
        entry: The agent's manifest entry (as ``marlmesh export`` writes it), whose stages also list
            ``weights``: graph input name -> parameter name (a key of the published weights).
        files: Graph file name -> ONNX bytes.
    """

    agent_index: int
    rounds: int
    entry: dict[str, Any]
    files: dict[str, bytes]

    def to_proto(self) -> learner_pb2.PolicyGraphs:
        """The wire message (``LearnerService.GetPolicyGraphs``)."""
        from marlmesh.v1 import learner_pb2

        return learner_pb2.PolicyGraphs(
            agent_index=self.agent_index, rounds=self.rounds, entry_json=json.dumps(self.entry), files=self.files
        )

    @classmethod
    def from_proto(cls, msg: learner_pb2.PolicyGraphs) -> PolicyGraphs:
        """Decode the wire message.

        Raises:
            ValueError: If the entry is not JSON, or names a graph file the message does not carry.
        """
        try:
            entry = json.loads(msg.entry_json)
            stages = entry["stages"]
            missing = sorted({info["file"] for info in stages.values()} - set(msg.files))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"PolicyGraphs.entry_json is not a manifest entry with stages: {exc!r}") from None
        if missing:
            raise ValueError(f"PolicyGraphs names graph files it does not carry: {missing}")
        return cls(int(msg.agent_index), int(msg.rounds), entry, dict(msg.files))

"""The edge policy runtime: :class:`OnnxRuntime` runs the graphs written by ``marlmesh export``, never torch.

The agent's loop sees every runtime as a :class:`~marlmesh.policy_runtime.PolicyRuntime` (the protocol, with
:class:`~marlmesh.policy_runtime.ActOutput`); :class:`~marlmesh.policies.torch_runtime.TorchRuntime` runs a torch
:class:`~marlmesh.policies.staged.StagedPolicy` (training and evaluation on a full install). Both are
re-exported here for the agent's callers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agent_service.onnx_weights import non_finite_tensors
from marlmesh.policy_runtime import ActOutput, NpInbox, PolicyRuntime
from marlmesh.spaces import SpaceSpec

MANIFEST = "manifest.json"
FORMAT = "marlmesh-onnx"
FORMAT_VERSION = 1


def sample_numpy(
    params: Mapping[str, np.ndarray], space: SpaceSpec, deterministic: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample actions from distribution parameters in numpy: ``(action, log_prob)``.

    Discrete: ``params["logits"]`` (log-probabilities up to a constant). Box: diagonal Normal ``mean``/``std``.
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


def read_manifest(policy_dir: Path) -> dict[str, Any]:
    """The ``manifest.json`` of an exported policy folder.

    Raises:
        ValueError: If it is missing or not a marlmesh ONNX export of a supported version.
    """
    path = Path(policy_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path} not found: --policy-dir must be a folder written by 'marlmesh export'")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')}, expected {FORMAT!r} "
            f"v{FORMAT_VERSION}; re-export the policy with this marlmesh version"
        )
    return manifest


class OnnxRuntime:
    """Runs one agent's exported stage graphs with onnxruntime (numpy + onnxruntime only; no torch).

    Args:
        policy_dir: Folder written by ``marlmesh export``.
        agent_index: Which agent's graphs to load.
        seed: Seed of the action sampler.
        threads: onnxruntime intra-op threads.

    Raises:
        ValueError: If the folder is not an export or has no graphs for ``agent_index``.
    """

    def __init__(self, policy_dir: Path, agent_index: int, seed: int = 0, threads: int = 1) -> None:
        import onnxruntime as ort

        self.policy_dir = Path(policy_dir)
        self.manifest = read_manifest(self.policy_dir)
        agents = {int(a["index"]): a for a in self.manifest["agents"]}
        if agent_index not in agents:
            raise ValueError(f"{self.policy_dir} has no policy for agent {agent_index} (has {sorted(agents)})")
        self.entry = agents[agent_index]
        self.rounds = int(self.manifest["channel"]["rounds"])
        self.policy_version = int(self.entry.get("policy_version", -1))
        self.action_space = SpaceSpec(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in self.entry["action_space"].items()}
        )
        self.obs_shape = tuple(self.entry["obs_shape"])
        self._rng = np.random.default_rng(seed)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._sessions = {}
        self._outputs: dict[str, list[str]] = {}
        self._inputs: dict[str, set[str]] = {}
        for stage, info in self.entry["stages"].items():
            raw = (self.policy_dir / info["file"]).read_bytes()
            if hashlib.sha256(raw).hexdigest() != info["sha256"]:
                raise ValueError(f"{self.policy_dir / info['file']}: sha256 mismatch with manifest.json; re-export")
            bad = non_finite_tensors(raw)
            if bad:
                raise ValueError(
                    f"{self.policy_dir / info['file']}: non-finite weights in {bad[:5]}; refusing to act with them "
                    "(re-export from a good checkpoint)"
                )
            self._sessions[stage] = ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])
            self._outputs[stage] = [o["name"] for o in info["outputs"]]
            # the exporter drops inputs a stage does not use, so feed only what each graph declares
            self._inputs[stage] = {i.name for i in self._sessions[stage].get_inputs()}
        self._state_keys = list(self.entry["state_keys"])

    def _run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wanted = self._inputs[stage]
        values = self._sessions[stage].run(self._outputs[stage], {k: v for k, v in feeds.items() if k in wanted})
        return dict(zip(self._outputs[stage], values, strict=True))

    @staticmethod
    def _split(out: dict[str, np.ndarray], prefix: str = "state_") -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        state = {name[len(prefix) :]: v for name, v in out.items() if name.startswith(prefix)}
        return state, out.get("outbox")

    def encode(self, obs: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Run ``encode``."""
        return self._split(self._run("encode", {"obs": np.ascontiguousarray(obs, np.float32)}))

    def round(self, k: int, state: dict[str, np.ndarray], inbox: NpInbox) -> tuple[dict, np.ndarray | None]:
        """Run ``round_k``."""
        feeds = {f"state_{key}": v for key, v in state.items()}
        feeds["inbox_msgs"] = np.ascontiguousarray(inbox[0], np.float32)
        feeds["inbox_mask"] = np.ascontiguousarray(inbox[1], np.float32)
        return self._split(self._run(f"round_{k}", feeds), prefix="new_state_")

    def act(self, state: dict[str, np.ndarray], inboxes: list[NpInbox]) -> ActOutput:
        """Run ``act``."""
        feeds = {f"state_{key}": v for key, v in state.items()}
        for k, (msgs, mask) in enumerate(inboxes):
            feeds[f"inbox{k}_msgs"] = np.ascontiguousarray(msgs, np.float32)
            feeds[f"inbox{k}_mask"] = np.ascontiguousarray(mask, np.float32)
        out = self._run("act", feeds)
        value = out.pop("value")
        return ActOutput(params=out, value=value)

    def sample(self, out: ActOutput, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        """Sample in numpy."""
        return sample_numpy(out.params, self.action_space, deterministic, self._rng)

    def load_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Exported graphs are frozen."""
        raise RuntimeError("the onnx runtime acts with frozen exported graphs; re-export to change weights")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """None: exported graphs are frozen."""
        return {}


def __getattr__(name: str) -> Any:
    """``TorchRuntime`` on first use only, so that importing this module never imports torch."""
    if name == "TorchRuntime":
        from marlmesh.policies.torch_runtime import TorchRuntime

        return TorchRuntime
    raise AttributeError(name)


__all__ = ["ActOutput", "NpInbox", "OnnxRuntime", "PolicyRuntime", "read_manifest", "sample_numpy"]

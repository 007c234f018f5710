"""The torch-free policy runtime: :class:`OnnxRuntime` runs staged ONNX graphs with numpy + onnxruntime.

On the edge it acts from the frozen graphs written by ``marlmesh export``; in training
(``train.agent_runtime: onnx``) from its learner's :class:`~marlmesh.policy_runtime.PolicyGraphs`, whose
parameters are graph inputs fed from every weights version the agent receives.

The agent's loop sees every runtime as a :class:`~marlmesh.policy_runtime.PolicyRuntime` (the protocol, with
:class:`~marlmesh.policy_runtime.ActOutput`); :class:`~marlmesh.policies.torch_runtime.TorchRuntime` runs a torch
:class:`~marlmesh.policies.staged.StagedPolicy` (training and evaluation on a full install). Both are
re-exported here for the agent's callers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agent_service.onnx_weights import non_finite_tensors
from marlmesh.policy_runtime import ActOutput, NpInbox, PolicyGraphs, PolicyRuntime, sample_numpy
from marlmesh.spaces import SpaceSpec

MANIFEST = "manifest.json"
FORMAT = "marlmesh-onnx"
FORMAT_VERSION = 1


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
    """Runs one agent's stage graphs with onnxruntime (numpy + onnxruntime only; no torch).

    Args:
        policy_dir: Folder written by ``marlmesh export``.
        agent_index: Which agent's graphs to load.
        seed: Seed of the action sampler.
        threads: onnxruntime intra-op threads.
        engine: What evaluates the graphs (``train.graph_engine``): ``onnxruntime``, or ``numpy``
            (:class:`~agent_service.numpy_graph.NumpyGraph`: onnxruntime is then never imported).

    Raises:
        ValueError: If the folder is not an export or has no graphs for ``agent_index``.
    """

    def __init__(
        self, policy_dir: Path, agent_index: int, seed: int = 0, threads: int = 1, engine: str = "onnxruntime"
    ) -> None:
        self.policy_dir = Path(policy_dir)
        self.manifest = read_manifest(self.policy_dir)
        agents = {int(a["index"]): a for a in self.manifest["agents"]}
        if agent_index not in agents:
            raise ValueError(f"{self.policy_dir} has no policy for agent {agent_index} (has {sorted(agents)})")
        entry = agents[agent_index]
        files = {info["file"]: (self.policy_dir / info["file"]).read_bytes() for info in entry["stages"].values()}
        rounds = int(self.manifest["channel"]["rounds"])
        self._setup(entry, files, rounds, seed, threads, str(self.policy_dir), engine)

    @classmethod
    def from_graphs(
        cls, graphs: PolicyGraphs, seed: int = 0, threads: int = 1, engine: str = "onnxruntime"
    ) -> OnnxRuntime:
        """A runtime over a learner's graphs (parameters as inputs): it acts once :meth:`load_params` gave weights.

        ``seed``, ``threads`` and ``engine`` as for the constructor.

        Raises:
            ValueError: If a graph does not match its sha256 or does not load.
        """
        runtime = cls.__new__(cls)
        runtime.policy_dir = None
        runtime.manifest = None
        where = f"agent {graphs.agent_index}'s graphs"
        runtime._setup(graphs.entry, graphs.files, graphs.rounds, seed, threads, where, engine)
        return runtime

    def _setup(
        self,
        entry: dict[str, Any],
        files: Mapping[str, bytes],
        rounds: int,
        seed: int,
        threads: int,
        where: str,
        engine: str,
    ) -> None:
        load = _session_loader(engine, threads)
        self.engine = engine
        self.entry = entry
        self.rounds = rounds
        self.policy_version = int(entry.get("policy_version", -1))
        self.action_space = SpaceSpec(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in entry["action_space"].items()}
        )
        self.obs_shape = tuple(entry["obs_shape"])
        self._rng = np.random.default_rng(seed)
        self._sessions: dict[str, Any] = {}
        self._outputs: dict[str, list[str]] = {}
        self._inputs: dict[str, set[str]] = {}
        self._weight_names: dict[str, dict[str, str]] = {}
        """Stage -> graph input name -> parameter name, for graphs whose parameters are inputs."""
        self._weights: dict[str, dict[str, np.ndarray]] | None = None
        """Stage -> feeds of the parameters loaded last (None: none yet)."""
        for stage, info in entry["stages"].items():
            raw = files[info["file"]]
            if hashlib.sha256(raw).hexdigest() != info["sha256"]:
                raise ValueError(f"{where}: {info['file']}: sha256 mismatch with the manifest; re-export")
            bad = non_finite_tensors(raw)
            if bad:
                raise ValueError(
                    f"{where}: {info['file']}: non-finite weights in {bad[:5]}; refusing to act with them "
                    "(re-export from a good checkpoint)"
                )
            self._sessions[stage] = load(raw, f"{where}: {info['file']}")
            self._outputs[stage] = [o["name"] for o in info["outputs"]]
            # the exporter drops inputs a stage does not use, so feed only what each graph declares
            self._inputs[stage] = {i.name for i in self._sessions[stage].get_inputs()}
            if "weights" in info:
                self._weight_names[stage] = dict(info["weights"])
        self._weight_shapes = {
            i.name: tuple(i.shape)
            for session in self._sessions.values()
            for i in session.get_overridable_initializers()
        }
        """Parameter input name -> its shape (parameters are initializers a feed overrides)."""
        for stage, names in self._weight_names.items():
            if set(names) - set(self._weight_shapes):
                raise ValueError(
                    f"{where}: stage {stage} has no parameter inputs {sorted(set(names) - set(self._weight_shapes))}"
                )
        self._state_keys = list(entry["state_keys"])
        self._entry_params: dict[str, list[int]] = dict(entry.get("params", {})) if self._weight_names else {}

    @property
    def takes_weights(self) -> bool:
        """Whether the graphs take their parameters as inputs (a learner's graphs), so :meth:`load_params` works."""
        return bool(self._weight_names)

    def _run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wanted = self._inputs[stage]
        feeds = {k: v for k, v in feeds.items() if k in wanted}
        if self.takes_weights:
            if self._weights is None:
                raise RuntimeError("the onnx runtime has no weights yet: load_params() the learner's first version")
            feeds.update(self._weights.get(stage, {}))
        values = self._sessions[stage].run(self._outputs[stage], feeds)
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
        """Act with ``params`` (named float32 arrays, as the learner publishes them) from the next stage on.

        Raises:
            RuntimeError: If the graphs are frozen (``marlmesh export``).
            ValueError: If a parameter the graphs take is missing or has another shape.
        """
        if not self.takes_weights:
            raise RuntimeError("the onnx runtime acts with frozen exported graphs; re-export to change weights")
        weights: dict[str, dict[str, np.ndarray]] = {}
        for stage, names in self._weight_names.items():
            feeds = {}
            for name, key in names.items():
                if key not in params:
                    raise ValueError(f"weights have no parameter {key!r} (stage {stage} takes it)")
                value = feeds[name] = np.array(params[key], np.float32, order="C", copy=None)  # keeps 0-d ones
                if value.shape != self._weight_shapes[name]:
                    want = list(self._weight_shapes[name])
                    raise ValueError(f"parameter {key!r} has shape {list(value.shape)}, the graphs take {want}")
            weights[stage] = feeds
        self._weights = weights

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter of a published weights version (empty: frozen exported graphs)."""
        return {key: tuple(shape) for key, shape in self._entry_params.items()}


ENGINES = ("numpy", "onnxruntime")
"""What can evaluate the graphs (``train.graph_engine``)."""


def _session_loader(engine: str, threads: int) -> Callable[[bytes, str], Any]:
    """``(serialized model, what it is) -> session`` of ``engine`` (onnxruntime is imported only for its own).

    Raises:
        ValueError: If ``engine`` is not one of :data:`ENGINES`.
    """
    if engine == "numpy":
        from agent_service.numpy_graph import NumpyGraph

        return NumpyGraph
    if engine != "onnxruntime":
        raise ValueError(f"graph engine {engine!r}: choose from {', '.join(ENGINES)}")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # parameters kept as graph inputs are expected, not worth a warning each
    return lambda raw, where: ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])


def __getattr__(name: str) -> Any:
    """``TorchRuntime`` on first use only, so that importing this module never imports torch."""
    if name == "TorchRuntime":
        from marlmesh.policies.torch_runtime import TorchRuntime

        return TorchRuntime
    raise AttributeError(name)


__all__ = ["ActOutput", "NpInbox", "OnnxRuntime", "PolicyRuntime", "read_manifest", "sample_numpy"]

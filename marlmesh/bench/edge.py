"""``marlmesh bench edge``: decision latency of the ONNX and the torch runtime, peak RSS of an edge agent.

:func:`bench_edge` times ``encode -> act -> sample`` for one env copy of the same policy on the ONNX runtime
(with onnxruntime and with the numpy graph engine) and the torch runtime in the same run (waiting for messages
excluded: the inbox is given), and runs an edge mesh (:func:`marlmesh.deploy.edge.run_edge_mesh`) for the peak
RSS of an edge agent process.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from marlmesh import tls
from marlmesh.bench import emit
from marlmesh.config import Config, dump_config, load_config
from marlmesh.deploy.edge import run_edge_mesh


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples_s) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def decision_latencies(
    runtime: Any, obs_shape: tuple[int, ...], num_agents: int, message_dim: int, n: int
) -> list[float]:
    """Seconds per decision (``encode -> rounds -> act -> sample``, one env copy, inbox given)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, *obs_shape)).astype(np.float32)
    inbox = (
        rng.normal(size=(1, num_agents, message_dim)).astype(np.float32),
        np.ones((1, num_agents), np.float32),
    )
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        decide(runtime, obs, inbox, deterministic=True)
        out.append(time.perf_counter() - t0)
    return out


def decide(
    runtime: Any, obs: np.ndarray, inbox: tuple[np.ndarray, np.ndarray], *, deterministic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One decision of a policy runtime with the same inbox in every round: ``(action, log_prob)``."""
    state, _ = runtime.encode(obs)
    inboxes = []
    for k in range(runtime.rounds):
        inboxes.append(inbox)
        if k + 1 < runtime.rounds:
            state, _ = runtime.round(k + 1, state, inbox)
    return runtime.sample(runtime.act(state, inboxes), deterministic)


def bench_edge(config: Config, decisions: int = 3000, episodes: int = 6) -> dict[str, Any]:
    """Latency of the runtimes on the same exported policy, and an edge agent process's peak RSS.

    The ONNX graphs are timed with both graph engines (``onnx``: onnxruntime; ``numpy``:
    :class:`~agent_service.numpy_graph.NumpyGraph`); the edge mesh's agents use the config's
    ``train.graph_engine``.
    """
    import torch

    from agent_service.runtime import OnnxRuntime
    from marlmesh import plugins
    from marlmesh.deploy.export import export_policy, policy_specs, write_manifest
    from marlmesh.policies.torch_runtime import TorchRuntime

    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    specs = policy_specs(config)
    policies = [channel.build_policy(s) for s in specs]
    with tempfile.TemporaryDirectory(prefix="marlmesh-bench-edge-") as tmp:
        policy_dir = Path(tmp) / "policy"
        policy_dir.mkdir()
        entries = [export_policy(p, s, policy_dir, policy_version=0) for p, s in zip(policies, specs, strict=True)]
        write_manifest(policy_dir, config, channel, entries)
        spec = specs[0]
        runtimes = {
            "onnx": OnnxRuntime(policy_dir, 0, threads=1, engine="onnxruntime"),
            "numpy": OnnxRuntime(policy_dir, 0, threads=1, engine="numpy"),
            "torch": TorchRuntime(policies[0]),
        }
        samples: dict[str, list[float]] = {k: [] for k in runtimes}
        for rt in runtimes.values():  # warm-up
            decision_latencies(rt, spec.obs_shape, spec.num_agents, spec.message_dim, 200)
        for _ in range(5):  # interleave so every runtime sees the same machine load
            for name, rt in runtimes.items():
                samples[name] += decision_latencies(
                    rt, spec.obs_shape, spec.num_agents, spec.message_dim, decisions // 5
                )
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(dump_config(config))
        mesh = run_edge_mesh(cfg_path, policy_dir, Path(tmp) / "mesh", episodes=episodes, num_envs=config.env.num_envs)
    rss = [r for r in mesh.peak_rss_mb if r is not None]
    return {
        "bench": "edge",
        "env": config.env.name,
        "channel": config.channel.name,
        "num_agents": spec.num_agents,
        "batch_per_decision": 1,
        "decisions": len(samples["onnx"]),
        **{
            f"{name}_{q}_ms": round(value, 4)
            for name in runtimes
            for q, value in zip(("p50", "p99"), _percentiles(samples[name]), strict=True)
        },
        "edge_peak_rss_mb": round(max(rss), 1) if rss else None,
        "edge_agents": len(mesh.peak_rss_mb),
        "edge_graph_engine": config.train.graph_engine,
        "edge_episodes": mesh.episodes,
        "edge_torch_imported": any(s.get("torch_imported", True) for s in mesh.agent_stats),
        "edge_mtls": config.runtime.tls.enabled,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }


def add_arguments(b: Any) -> None:
    """Flags of ``marlmesh bench edge``."""
    b.add_argument("-c", "--config", default=None, help="YAML config (default: built-in defaults)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    b.add_argument("--decisions", type=int, default=3000, help="decisions timed per runtime")
    b.add_argument(
        "--tls-keys-dir",
        type=Path,
        default=None,
        help="run the edge mesh over gRPC mTLS with this 'marlmesh keys gen' folder "
        "(= --set runtime.tls.enabled=true --set runtime.tls.keys_dir=DIR)",
    )
    b.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    b.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")


def main(ns: Any) -> int:
    """``marlmesh bench edge``."""
    from marlmesh.config import ConfigError

    tls_sets = []
    if ns.tls_keys_dir is not None:
        tls_sets = ["runtime.tls.enabled=true", f"runtime.tls.keys_dir={ns.tls_keys_dir.resolve()}"]
    try:
        config = load_config(ns.config, ["channel.name=broadcast", "env.num_envs=1", *tls_sets, *ns.set])
        tls.check_tls(config)  # launcher and env files now; the agents' when the mesh starts
        result = bench_edge(config, decisions=ns.decisions)
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    for k in ("onnx_p50_ms", "onnx_p99_ms", "numpy_p50_ms", "numpy_p99_ms", "torch_p50_ms", "torch_p99_ms"):
        print(f"{k:<18} {result[k]}")
    for k in ("edge_peak_rss_mb", "edge_graph_engine"):
        print(f"{k:<18} {result[k]}")
    return emit(ns, result)

"""``marlmesh export RUN_DIR --format onnx --out DIR``: every policy stage of every agent as an ONNX graph.

Each agent's :class:`~marlmesh.policies.staged.StagedPolicy` is cut at its bus boundaries, exactly where the
agent process does bus I/O, and each stage becomes its own graph with fixed tensor names (the table of stages,
inputs and outputs is in :mod:`marlmesh.policies.onnx_export`), its parameters folded in.

The batch axis is dynamic. The state keys are whatever the policy's stages put in their state dict, so a
new StagedPolicy subclass (new channel) exports with no change here. Files are flat
(``agent-<i>-<stage>.onnx`` + ``manifest.json``) so the folder can be mounted from a ConfigMap. The manifest
records names, dtypes and shapes of every input and output, the channel's message schema, the
quantization of messages and weights, and a sha256 of every graph (checked by the ONNX runtime).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agent_service.runtime import FORMAT, FORMAT_VERSION, MANIFEST
from marlmesh.config import Config, ConfigError, load_config
from marlmesh.policies.onnx_export import OPSET, export_policy
from marlmesh.policy_spec import PolicySpec, build_policy_spec

FORMATS = ("onnx",)


class ExportError(ValueError):
    """The run cannot be exported; the message says what to fix."""


def message_schema(channel: Any) -> dict[str, Any]:
    """Wire schema of one round's message of ``channel`` (empty for silent channels)."""
    if channel.rounds == 0:
        return {}
    payload = channel.payload(np.zeros((1, channel.message_dim), np.float32))
    return {k: {"dtype": str(v.dtype), "shape": ["batch", *list(v.shape[1:])]} for k, v in payload.items()}


def policy_specs(config: Config) -> list[PolicySpec]:
    """Every agent's :class:`PolicySpec`, from the env built locally (same as the agents get from env_service)."""
    from marlmesh.envs import make_env
    from marlmesh.spaces import SpaceSpec

    env = make_env(config.env)
    try:
        names = list(env.possible_agents)
        return [
            build_policy_spec(
                config,
                i,
                len(names),
                SpaceSpec.from_gym(env.observation_space(name)),
                SpaceSpec.from_gym(env.action_space(name)),
            )
            for i, name in enumerate(names)
        ]
    finally:
        env.close()


def write_manifest(out_dir: Path, config: Config, channel: Any, entries: list[dict[str, Any]]) -> Path:
    """Write ``manifest.json`` for the exported agents."""
    import torch

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "opset": OPSET,
        "exporter": f"torch {torch.__version__}",
        "env": {"name": config.env.name, "kwargs": config.env.kwargs, "num_agents": len(entries)},
        "channel": {
            "name": channel.name,
            "rounds": int(channel.rounds),
            "message_dim": int(channel.message_dim),
            "message_schema": message_schema(channel),
        },
        # graphs take and produce float32; the bus quantizes messages on the wire (bus.quantization)
        "quantization": {"weights": "fp32", "messages": config.bus.quantization},
        "deterministic": config.eval.deterministic,
        "agents": entries,
    }
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def export_run(run_dir: Path, out_dir: Path, fmt: str = "onnx") -> Path:
    """Export the newest checkpoint of every agent of a run; returns the manifest path.

    Raises:
        ExportError: If the run has no config, or an agent has no valid checkpoint or one with non-finite weights.
    """
    from marlmesh import plugins
    from marlmesh.checkpoint import load_latest

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ExportError(f"{config_path} not found: RUN_DIR must be a directory written by 'marlmesh train'")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    channel = plugins.load("channels", config.channel.name)(config.channel)
    specs = policy_specs(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in specs:
        ckpt_dir = run_dir / "checkpoints" / f"agent-{spec.agent_index}"
        found = load_latest(ckpt_dir)
        if found is None:
            raise ExportError(f"no valid checkpoint in {ckpt_dir}: train the run first ('marlmesh train')")
        payload, path = found
        bad = sorted(k for k, v in payload["policy"].items() if v.is_floating_point() and not v.isfinite().all())
        if bad:
            raise ExportError(f"checkpoint {path} has non-finite weights in {bad[:5]}; export an earlier checkpoint")
        policy = channel.build_policy(spec)
        policy.load_state_dict(payload["policy"])
        entries.append(export_policy(policy, spec, out_dir, policy_version=int(payload["version"])))
    return write_manifest(out_dir, config, channel, entries)


def add_parser(sub: Any) -> None:
    """Register ``marlmesh export`` on the CLI's subparsers."""
    e = sub.add_parser("export", help="export every agent's policy stages (ONNX graphs + manifest.json)")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--format", choices=FORMATS, default="onnx")
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.set_defaults(func=cmd_export)


def cmd_export(ns: Any) -> int:
    """``marlmesh export``."""
    try:
        manifest = export_run(ns.run_dir, ns.out, ns.format)
    except ExportError as exc:
        print(f"marlmesh: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(manifest)
    return 0

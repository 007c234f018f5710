"""``marlmesh export RUN_DIR --format onnx --out DIR``: every policy stage of every agent as an ONNX graph.

Each agent's :class:`~marlmesh.policies.staged.StagedPolicy` is cut at its bus boundaries, exactly where the
agent process does bus I/O, and each stage becomes its own graph with fixed tensor names:

================  =====================================================  ===========================================
stage             inputs                                                 outputs
================  =====================================================  ===========================================
``encode``        ``obs`` ``[B, *obs_shape]``                            ``state_<key>``..., ``outbox`` ``[B, M]``
                                                                         (if the channel has rounds)
``round_k``       ``state_<key>``..., ``inbox_msgs`` ``[B, N, M]``,      ``new_state_<key>``..., ``outbox``
(1 <= k < R)      ``inbox_mask`` ``[B, N]`` (round k-1's inbox)
``act``           ``state_<key>``..., ``inbox<k>_msgs``,                 ``logits`` ``[B, n]`` (discrete) or
                  ``inbox<k>_mask`` for every round k                    ``mean``, ``std`` ``[B, d]`` (box); ``value``
================  =====================================================  ===========================================

The batch axis is dynamic. The state keys are whatever the policy's stages put in their state dict, so a
new StagedPolicy subclass (new channel) exports with no change here. Files are flat
(``agent-<i>-<stage>.onnx`` + ``manifest.json``) so the folder can be mounted from a ConfigMap. The manifest
records names, dtypes and shapes of every input and output, the channel's message schema, the
quantization of messages and weights, and a sha256 of every graph (checked by the ONNX runtime).
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agent_service.runtime import FORMAT, FORMAT_VERSION, MANIFEST
from marlmesh.config import Config, ConfigError, load_config
from marlmesh.policy_spec import PolicySpec, build_policy_spec

OPSET = 17
FORMATS = ("onnx",)


class ExportError(ValueError):
    """The run cannot be exported; the message says what to fix."""


def _tensor_info(name: str, t: Any) -> dict[str, Any]:
    return {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": ["batch", *list(t.shape[1:])]}


def export_policy(policy: Any, spec: PolicySpec, out_dir: Path, *, policy_version: int = -1) -> dict[str, Any]:
    """Export one agent's stages into ``out_dir``; returns the agent's manifest entry.

    Args:
        policy: A torch :class:`~marlmesh.policies.staged.StagedPolicy`.
        spec: The agent's policy spec.
        out_dir: Output folder (flat file names ``agent-<i>-<stage>.onnx``).
        policy_version: Weights version recorded in the manifest.
    """
    import torch
    from torch import nn
    from torch.distributions import Distribution

    policy.eval()
    rounds = int(policy.rounds)
    n, m, b = spec.num_agents, spec.message_dim, 2
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn((b, *spec.obs_shape), generator=gen)
    inboxes = [
        (torch.randn((b, n, m), generator=gen), (torch.rand((b, n), generator=gen) > 0.3).float())
        for _ in range(rounds)
    ]

    class Encode(nn.Module):
        def __init__(self, keys: list[str], has_out: bool) -> None:
            super().__init__()
            self.policy, self.keys_out, self.has_out = policy, keys, has_out

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            state, out = self.policy.encode(x)
            return tuple(state[k] for k in self.keys_out) + ((out,) if self.has_out else ())

    class Round(nn.Module):
        def __init__(self, k: int, keys_in: list[str], keys_out: list[str], has_out: bool) -> None:
            super().__init__()
            self.policy, self.k, self.keys_in, self.keys_out, self.has_out = policy, k, keys_in, keys_out, has_out

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            state = dict(zip(self.keys_in, args[: len(self.keys_in)], strict=True))
            state, out = self.policy.round(self.k, state, (args[-2], args[-1]))
            return tuple(state[k] for k in self.keys_out) + ((out,) if self.has_out else ())

    class Act(nn.Module):
        def __init__(self, keys: list[str]) -> None:
            super().__init__()
            self.policy, self.keys = policy, keys

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            s = len(self.keys)
            state = dict(zip(self.keys, args[:s], strict=True))
            boxes = [(args[s + 2 * k], args[s + 2 * k + 1]) for k in range(rounds)]
            dist, value = self.policy.act(state, boxes)
            if self.policy.actor.discrete:
                return dist.logits, value
            return dist.mean, dist.stddev, value

    entry: dict[str, Any] = {
        "index": spec.agent_index,
        "policy_version": policy_version,
        "obs_shape": list(spec.obs_shape),
        "action_space": asdict(spec.action_space),
        "stages": {},
    }
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)  # argument checks are data-dependent Python, not graph ops
    try:
        with torch.no_grad():
            state, outbox = policy.encode(obs)
            keys = sorted(state)
            stages: list[tuple[str, nn.Module, list[tuple[str, torch.Tensor]]]] = [
                ("encode", Encode(keys, outbox is not None), [("obs", obs)])
            ]
            for k in range(1, rounds):
                ins = [(f"state_{key}", state[key]) for key in keys]
                ins += [("inbox_msgs", inboxes[k - 1][0]), ("inbox_mask", inboxes[k - 1][1])]
                new_state, new_out = policy.round(k, state, inboxes[k - 1])
                new_keys = sorted(new_state)
                stages.append((f"round_{k}", Round(k, keys, new_keys, new_out is not None), ins))
                state, keys = new_state, new_keys
            ins = [(f"state_{key}", state[key]) for key in keys]
            for k, (msgs, mask) in enumerate(inboxes):
                ins += [(f"inbox{k}_msgs", msgs), (f"inbox{k}_mask", mask)]
            stages.append(("act", Act(keys), ins))
            entry["state_keys"] = keys
            for name, module, ins in stages:
                args = tuple(t for _, t in ins)
                outs = module(*args)
                if name == "act":
                    head = ["logits"] if policy.actor.discrete else ["mean", "std"]
                    out_names = [*head, "value"]
                else:
                    # a round's outputs are named new_state_*: ONNX cannot have an input and an output of one
                    # name, and a round passes some state through unchanged
                    prefix = "state_" if name == "encode" else "new_state_"
                    out_names = [f"{prefix}{k}" for k in module.keys_out] + (["outbox"] if module.has_out else [])
                in_names = [n_ for n_, _ in ins]
                file = f"agent-{spec.agent_index}-{name}.onnx"
                path = out_dir / file
                with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact for these graphs
                    warnings.simplefilter("ignore", DeprecationWarning)
                    torch.onnx.export(
                        module,
                        args,
                        str(path),
                        input_names=in_names,
                        output_names=out_names,
                        dynamic_axes={x: {0: "batch"} for x in in_names + out_names},
                        opset_version=OPSET,
                        dynamo=False,
                    )
                entry["stages"][name] = {
                    "file": file,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "inputs": [_tensor_info(n_, t) for n_, t in ins],
                    "outputs": [_tensor_info(n_, t) for n_, t in zip(out_names, outs, strict=True)],
                }
    finally:
        Distribution.set_default_validate_args(bool(previous))
    return entry


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

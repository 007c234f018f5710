"""One agent's :class:`~marlmesh.policies.staged.StagedPolicy` as ONNX graphs, one per stage.

The policy is cut at its bus boundaries, exactly where the agent process does bus I/O, and each stage becomes
its own graph with fixed tensor names:

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
new StagedPolicy subclass (new channel) exports with no change here. Files are named
``agent-<i>-<stage>.onnx``.

``marlmesh export`` (:mod:`marlmesh.deploy.export`) writes frozen graphs (parameters folded in) for the edge.
:func:`training_graphs` exports the same stages with every parameter left a graph input named after its
state-dict key, so an agent feeds in each weights version its learner publishes and acts without torch
(``train.agent_runtime: onnx``); the graph structure is all that depends on the policy's architecture.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from marlmesh.policy_runtime import PolicyGraphs
from marlmesh.policy_spec import PolicySpec

OPSET = 17
PARAM_PREFIX = "policy."
"""Prefix torch gives the parameters of the stage modules (each holds the policy as ``self.policy``)."""


def _tensor_info(name: str, t: Any) -> dict[str, Any]:
    return {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": ["batch", *list(t.shape[1:])]}


def export_policy(
    policy: Any, spec: PolicySpec, out_dir: Path, *, policy_version: int = -1, weights_as_inputs: bool = False
) -> dict[str, Any]:
    """Export one agent's stages into ``out_dir``; returns the agent's manifest entry.

    Args:
        policy: A torch :class:`~marlmesh.policies.staged.StagedPolicy`.
        spec: The agent's policy spec.
        out_dir: Output folder (flat file names ``agent-<i>-<stage>.onnx``).
        policy_version: Weights version recorded in the manifest.
        weights_as_inputs: Keep every parameter an overridable graph input (no constant folding) and list
            them per stage under ``weights`` (graph input name -> state-dict key); otherwise they are frozen.

    Raises:
        ValueError: With ``weights_as_inputs``, if a parameter the outputs depend on is not a graph input.
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
                        do_constant_folding=not weights_as_inputs,
                        keep_initializers_as_inputs=weights_as_inputs,
                    )
                entry["stages"][name] = {
                    "file": file,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "inputs": [_tensor_info(n_, t) for n_, t in ins],
                    "outputs": [_tensor_info(n_, t) for n_, t in zip(out_names, outs, strict=True)],
                }
                if weights_as_inputs:
                    entry["stages"][name]["weights"] = _weight_inputs(path, set(in_names), set(policy.state_dict()))
            if weights_as_inputs:
                # the layout of every published weights version (also parameters no stage uses), for its checks
                entry["params"] = {key: list(value.shape) for key, value in policy.state_dict().items()}
                fed = {key for stage in entry["stages"].values() for key in stage["weights"].values()}
                _check_unfed_unused(policy, set(policy.state_dict()) - fed, obs, inboxes)
    finally:
        Distribution.set_default_validate_args(bool(previous))
    return entry


def _weight_inputs(path: Path, data_inputs: set[str], keys: set[str]) -> dict[str, str]:
    """Graph input name -> state-dict key, for the parameters the graph at ``path`` takes as inputs."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [i.name for i in graph.input if i.name not in data_inputs]
    return {n: n[len(PARAM_PREFIX) :] for n in names if n.startswith(PARAM_PREFIX) and n[len(PARAM_PREFIX) :] in keys}


def _stage_outputs(policy: Any, obs: Any, inboxes: list[Any]) -> list[Any]:
    """Every outbox, the action distribution's parameters and the value, on fixed inputs."""
    state, out = policy.encode(obs)
    outs = [out]
    for k in range(1, int(policy.rounds)):
        state, out = policy.round(k, state, inboxes[k - 1])
        outs.append(out)
    dist, value = policy.act(state, inboxes)
    head = [dist.logits] if policy.actor.discrete else [dist.mean, dist.stddev]
    return [t for t in outs if t is not None] + head + [value]


def _check_unfed_unused(policy: Any, unfed: set[str], obs: Any, inboxes: list[Any]) -> None:
    """Parameters no graph takes as an input must not change any output (else new weights would be ignored).

    Raises:
        ValueError: Naming the parameters that the outputs depend on although no graph takes them.
    """
    import torch

    before = _stage_outputs(policy, obs, inboxes)
    used = []
    for key in sorted(unfed):
        moved = copy.deepcopy(policy)
        value = moved.state_dict()[key]
        if not value.is_floating_point():
            continue
        with torch.no_grad():
            value.add_(1.0 + torch.rand_like(value))
            after = _stage_outputs(moved, obs, inboxes)
        if any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)):
            used.append(key)
    if used:
        raise ValueError(
            f"{type(policy).__name__}: the outputs depend on {used}, but no exported graph takes them as an input "
            "(folded into constants?), so the graphs could not act with new weights"
        )


def training_graphs(channel: Any, spec: PolicySpec) -> PolicyGraphs:
    """The stages of ``channel``'s policy for ``spec`` as graphs with the parameters as inputs (module docstring).

    Only the architecture matters: the graphs are exported from a freshly built policy (its initial values stay
    in the graphs as defaults, but an agent always feeds the weights it acts with). torch's global random
    state is left as it was, so exporting changes nothing else the process draws.

    Raises:
        ValueError: If a parameter the outputs depend on could not be left a graph input.
    """
    import torch

    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(prefix="marlmesh-graphs-") as tmp:
        policy = channel.build_policy(spec)
        out = Path(tmp)
        entry = export_policy(policy, spec, out, weights_as_inputs=True)
        files = {info["file"]: (out / info["file"]).read_bytes() for info in entry["stages"].values()}
    return PolicyGraphs(spec.agent_index, int(policy.rounds), entry, files)

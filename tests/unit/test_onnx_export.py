"""ONNX export of the staged policies: parity with torch, manifest contents, numpy sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_service.runtime import ENGINES, OnnxRuntime, read_manifest, sample_numpy
from marlmesh import plugins
from marlmesh.config import load_config
from marlmesh.deploy.export import export_policy, policy_specs, write_manifest
from marlmesh.policies.torch_runtime import TorchRuntime
from marlmesh.spaces import SpaceSpec

TOL = 1e-4
CASES = {
    "none-discrete": ["channel.name=none"],
    "broadcast-discrete": ["channel.name=broadcast", "channel.message_dim=8"],
    "broadcast-box": ["channel.name=broadcast", "channel.message_dim=8", "env.kwargs.continuous_actions=true"],
    "dgat-k2": ["algo.name=dgmappo", "channel.name=dgat", "channel.message_dim=8"],
    "dgat-k3-box": [
        "algo.name=dgmappo",
        "channel.name=dgat",
        "channel.dgat.hops=3",
        "env.kwargs.continuous_actions=true",
    ],
    "dgat-two-stream-box": [
        "algo.name=dgmappo",
        "channel.name=dgat",
        "channel.dgat.actor=two_stream",
        "env.kwargs.continuous_actions=true",
    ],
    "dgat-two-stream": ["algo.name=dgmappo", "channel.name=dgat", "channel.dgat.actor=two_stream"],
    "dgat-entity": [
        "algo.name=dgmappo",
        "channel.name=dgat",
        "channel.dgat.actor=two_stream",
        "algo.ppo.actor_net=entity",
    ],
    "none-entity-partial-time": [
        "channel.name=none",
        "algo.ppo.actor_net=entity",
        "env.obs_radius=0.5",
        "env.time_feature=true",
    ],
    "meanfield-embedding": ["algo.name=mfppo", "channel.name=meanfield"],
    "meanfield-action": ["algo.name=mfppo", "channel.name=meanfield", "channel.meanfield.summary=action"],
    "blackboard": ["algo.name=co2po", "channel.name=blackboard"],
}


def valid_messages(channel_name: str, msgs: np.ndarray, num_agents: int, rng: np.random.Generator) -> np.ndarray:
    """Random messages with the fields a channel's inbox would have validated (dgat degree, blackboard flag)."""
    if channel_name == "dgat":
        msgs[..., -1] = rng.integers(0, num_agents + 1, msgs.shape[:-1])
    elif channel_name == "blackboard":
        msgs[..., -1] = rng.integers(0, 2, msgs.shape[:-1])
    return msgs


def export_case(overrides: list[str], out: Path, seed: int = 0):
    torch.manual_seed(seed)
    config = load_config(None, overrides)
    channel = plugins.load("channels", config.channel.name)(config.channel)
    specs = policy_specs(config)
    policies = [channel.build_policy(s) for s in specs]
    for p in policies:  # trained-looking weights: perturb away from the orthogonal init
        with torch.no_grad():
            for param in p.parameters():
                param.add_(0.1 * torch.randn_like(param))
    entries = [export_policy(p, s, out, policy_version=7) for p, s in zip(policies, specs, strict=True)]
    write_manifest(out, config, channel, entries)
    return config, channel, specs, policies


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_stage_matches_torch(case: str, engine: str, tmp_path: Path) -> None:
    _, channel, specs, policies = export_case(CASES[case], tmp_path)
    rng = np.random.default_rng(1)
    for spec, policy in zip(specs, policies, strict=True):
        onnx_rt, torch_rt = OnnxRuntime(tmp_path, spec.agent_index, engine=engine), TorchRuntime(policy)
        assert onnx_rt.rounds == torch_rt.rounds == channel.rounds
        for batch in (1, 7):  # the batch axis is dynamic
            obs = rng.normal(size=(batch, *spec.obs_shape)).astype(np.float32)
            s_onnx, out_onnx = onnx_rt.encode(obs)
            s_torch, out_torch = torch_rt.encode(obs)
            assert (out_onnx is None) == (out_torch is None)
            if out_onnx is not None:
                np.testing.assert_allclose(out_onnx, out_torch, atol=TOL)
            inboxes = []
            for k in range(channel.rounds):
                msgs = rng.normal(size=(batch, spec.num_agents, spec.message_dim)).astype(np.float32)
                msgs = valid_messages(channel.name, msgs, spec.num_agents, rng)
                mask = (rng.random((batch, spec.num_agents)) > 0.4).astype(np.float32)
                mask[:, spec.agent_index] = 0
                inboxes.append((msgs, mask))
                if k + 1 < channel.rounds:
                    s_onnx, o1 = onnx_rt.round(k + 1, s_onnx, (msgs, mask))
                    s_torch, o2 = torch_rt.round(k + 1, s_torch, (msgs, mask))
                    np.testing.assert_allclose(o1, o2, atol=TOL)
            a_onnx, a_torch = onnx_rt.act(s_onnx, inboxes), torch_rt.act(s_torch, inboxes)
            assert a_onnx.params.keys() == a_torch.params.keys()
            for name in a_onnx.params:
                np.testing.assert_allclose(a_onnx.params[name], a_torch.params[name], atol=TOL)
            np.testing.assert_allclose(a_onnx.value, a_torch.value, atol=TOL)
            act_onnx, _ = onnx_rt.sample(a_onnx, deterministic=True)
            act_torch, _ = torch_rt.sample(a_torch, deterministic=True)
            np.testing.assert_allclose(act_onnx, act_torch, atol=TOL)
            assert act_onnx.dtype == act_torch.dtype


def test_manifest_describes_graphs_and_messages(tmp_path: Path) -> None:
    config, channel, specs, _ = export_case(CASES["broadcast-discrete"], tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest["channel"] == {
        "name": "broadcast",
        "rounds": 1,
        "message_dim": 8,
        "message_schema": {"msg": {"dtype": "float32", "shape": ["batch", 8]}},
    }
    assert manifest["quantization"] == {"weights": "fp32", "messages": "fp32"}
    assert [a["index"] for a in manifest["agents"]] == [0, 1, 2]
    entry = manifest["agents"][0]
    assert entry["policy_version"] == 7 and entry["state_keys"] == ["obs", "z"]
    assert set(entry["stages"]) == {"encode", "act"}
    enc = entry["stages"]["encode"]
    assert [i["name"] for i in enc["inputs"]] == ["obs"]
    assert [o["name"] for o in enc["outputs"]] == ["state_obs", "state_z", "outbox"]
    assert enc["outputs"][2]["shape"] == ["batch", 8]
    act = entry["stages"]["act"]
    assert [i["name"] for i in act["inputs"]] == ["state_obs", "state_z", "inbox0_msgs", "inbox0_mask"]
    assert act["inputs"][2]["shape"] == ["batch", 3, 8]
    assert [o["name"] for o in act["outputs"]] == ["logits", "value"]
    import onnx

    for stage in entry["stages"].values():  # the graphs declare exactly the manifest's names
        model = onnx.load(str(tmp_path / stage["file"]))
        onnx.checker.check_model(model)
        assert [o.name for o in model.graph.output] == [o["name"] for o in stage["outputs"]]
        assert {i.name for i in model.graph.input} <= {i["name"] for i in stage["inputs"]}


def test_tampered_graph_is_refused(tmp_path: Path) -> None:
    export_case(CASES["none-discrete"], tmp_path)
    path = tmp_path / "agent-1-act.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    OnnxRuntime(tmp_path, 0)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        OnnxRuntime(tmp_path, 1)
    with pytest.raises(ValueError, match="no policy for agent 5"):
        OnnxRuntime(tmp_path, 5)


def test_read_manifest_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="marlmesh export"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="re-export"):
        read_manifest(tmp_path)


def test_numpy_sampling_follows_the_distribution() -> None:
    rng = np.random.default_rng(0)
    space = SpaceSpec(kind="discrete", n=3)
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 20000, np.float32))
    action, logp = sample_numpy({"logits": logits}, space, False, rng)
    freq = np.bincount(action, minlength=3) / len(action)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.02)
    np.testing.assert_allclose(np.exp(logp), np.array([0.7, 0.2, 0.1])[action], rtol=1e-5)
    box = SpaceSpec(kind="box", shape=(2,), low=(0.0, 0.0), high=(1.0, 1.0))
    mean = np.full((20000, 2), 0.5, np.float32)
    a, lp = sample_numpy({"mean": mean, "std": np.full_like(mean, 0.1)}, box, False, rng)
    assert a.shape == (20000, 2)
    np.testing.assert_allclose(a.std(0), [0.1, 0.1], atol=0.005)
    dist = torch.distributions.Normal(torch.from_numpy(mean), 0.1)
    np.testing.assert_allclose(lp, dist.log_prob(torch.from_numpy(a)).sum(-1).numpy(), atol=1e-4)


def test_export_command_exports_a_run(tmp_path: Path) -> None:
    from marlmesh import cli
    from marlmesh.checkpoint import save_checkpoint
    from marlmesh.config import dump_config

    config = load_config(None, CASES["broadcast-discrete"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(config))
    channel = plugins.load("channels", "broadcast")(config.channel)
    policies = [channel.build_policy(s) for s in policy_specs(config)]
    for i, p in enumerate(policies):
        save_checkpoint(run / "checkpoints" / f"agent-{i}", 40 + i, {"version": 40 + i, "policy": p.state_dict()}, 2)
    assert cli.main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "out")]) == 0
    manifest = read_manifest(tmp_path / "out")
    assert [a["policy_version"] for a in manifest["agents"]] == [40, 41, 42]
    obs = np.ones((2, *policy_specs(config)[2].obs_shape), np.float32)
    state, out = OnnxRuntime(tmp_path / "out", 2).encode(obs)
    np.testing.assert_allclose(out, TorchRuntime(policies[2]).encode(obs)[1], atol=TOL)
    (run / "checkpoints" / "agent-1" / "ckpt-0000000041.pt").unlink()
    assert cli.main(["export", str(run), "--out", str(tmp_path / "out2")]) == 2


def test_graphs_with_non_finite_weights_are_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from agent_service.onnx_weights import non_finite_tensors

    config, channel, specs, policies = export_case(CASES["broadcast-discrete"], tmp_path)
    with torch.no_grad():
        next(policies[1].actor.parameters())[0, 0] = float("nan")
    entries = [export_policy(p, s, tmp_path, policy_version=7) for p, s in zip(policies, specs, strict=True)]
    write_manifest(tmp_path, config, channel, entries)  # a consistent manifest: only the weights are bad
    OnnxRuntime(tmp_path, 0)
    with pytest.raises(ValueError, match="non-finite weights"):
        OnnxRuntime(tmp_path, 1)
    found = {}
    for entry in entries[:2]:  # the wire walker agrees with the onnx package on every graph
        for stage in entry["stages"].values():
            raw = (tmp_path / stage["file"]).read_bytes()
            model = onnx.load_from_string(raw)
            tensors = [*model.graph.initializer]
            tensors += [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
            want = [t.name for t in tensors if t.data_type == 1 and not np.isfinite(numpy_helper.to_array(t)).all()]
            assert non_finite_tensors(raw) == want
            found[stage["file"]] = want
    assert not any(want for file, want in found.items() if file.startswith("agent-0"))
    assert any(want for file, want in found.items() if file.startswith("agent-1"))


def test_export_refuses_a_checkpoint_with_non_finite_weights(tmp_path: Path) -> None:
    from marlmesh.checkpoint import save_checkpoint
    from marlmesh.config import dump_config
    from marlmesh.deploy.export import ExportError, export_run

    config = load_config(None, CASES["none-discrete"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(config))
    channel = plugins.load("channels", "none")(config.channel)
    for i, spec in enumerate(policy_specs(config)):
        state = channel.build_policy(spec).state_dict()
        if i == 2:
            state[next(iter(state))].view(-1)[0] = float("inf")
        save_checkpoint(run / "checkpoints" / f"agent-{i}", 3, {"version": 3, "policy": state}, 2)
    with pytest.raises(ExportError, match="agent-2.*non-finite weights"):
        export_run(run, tmp_path / "out")

"""A training agent's torch-free runtime: a learner's graphs with the weights fed in act as the torch policy does.

For every channel and both actor nets (the export test's cases): the same weights and inputs give the same
outboxes, distribution parameters and values (1e-5), the same sampled actions and log-probabilities from the
same sampler seed, and that stays so after a new weights version is loaded into both.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agent_service.runtime import ENGINES, OnnxRuntime
from marlmesh import plugins
from marlmesh.config import load_config
from marlmesh.deploy.export import policy_specs
from marlmesh.policies import onnx_export
from marlmesh.policies.onnx_export import training_graphs
from marlmesh.policies.torch_runtime import TorchRuntime
from marlmesh.policy_runtime import PolicyGraphs, sampler_seed
from tests.unit.test_onnx_export import CASES, valid_messages

TOL = 1e-5


def _setup(case: str):
    torch.manual_seed(0)
    config = load_config(None, CASES[case])
    channel = plugins.load("channels", config.channel.name)(config.channel)
    spec = policy_specs(config)[1]
    return channel, spec


def _weights(channel, spec, seed: int) -> dict[str, np.ndarray]:
    """A trained-looking version: perturbed away from the init, value normalisation statistics set."""
    torch.manual_seed(seed)
    policy = channel.build_policy(spec)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(0.2 * torch.randn_like(param))
        policy.return_mean.fill_(1.5)
        policy.return_std.fill_(0.7)
    return {k: v.numpy().copy() for k, v in policy.state_dict().items()}


def _inputs(channel, spec, rng: np.random.Generator, batch: int = 5):
    obs = rng.normal(size=(batch, *spec.obs_shape)).astype(np.float32)
    inboxes = []
    for _ in range(channel.rounds):
        msgs = rng.normal(size=(batch, spec.num_agents, spec.message_dim)).astype(np.float32)
        mask = (rng.random((batch, spec.num_agents)) > 0.4).astype(np.float32)
        mask[:, spec.agent_index] = 0
        inboxes.append((valid_messages(channel.name, msgs, spec.num_agents, rng), mask))
    return obs, inboxes


def _decide(runtime, obs, inboxes):
    """Every stage on fixed inputs, then three draws of the sampler: (outboxes, act output, samples)."""
    state, out = runtime.encode(obs)
    outboxes = [out]
    for k in range(1, runtime.rounds):
        state, out = runtime.round(k, state, inboxes[k - 1])
        outboxes.append(out)
    act = runtime.act(state, inboxes)
    samples = [runtime.sample(act, deterministic=False) for _ in range(3)]
    samples.append(runtime.sample(act, deterministic=True))
    return outboxes, act, samples


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_graphs_with_fed_weights_act_as_the_torch_policy(case: str, engine: str) -> None:
    channel, spec = _setup(case)
    graphs = training_graphs(channel, spec)
    seed = sampler_seed(3, spec.agent_index)
    onnx_rt = OnnxRuntime.from_graphs(graphs, seed=seed, engine=engine)
    torch_rt = TorchRuntime(channel.build_policy(spec), seed=seed)
    assert onnx_rt.takes_weights and onnx_rt.rounds == torch_rt.rounds == channel.rounds
    rng = np.random.default_rng(1)
    for version in (1, 2):  # a second version swaps the weights of both runtimes
        params = _weights(channel, spec, seed=version)
        onnx_rt.load_params(params)
        torch_rt.load_params(params)
        obs, inboxes = _inputs(channel, spec, rng)
        (out_o, act_o, samples_o), (out_t, act_t, samples_t) = (
            _decide(onnx_rt, obs, inboxes),
            _decide(torch_rt, obs, inboxes),
        )
        for a, b in zip(out_o, out_t, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, atol=TOL)
        assert act_o.params.keys() == act_t.params.keys()
        for name in act_o.params:
            np.testing.assert_allclose(act_o.params[name], act_t.params[name], atol=TOL)
        np.testing.assert_allclose(act_o.value, act_t.value, atol=TOL)
        for (a_o, lp_o), (a_t, lp_t) in zip(samples_o, samples_t, strict=True):
            assert a_o.dtype == a_t.dtype and a_o.shape == a_t.shape
            if spec.action_space.kind == "discrete":
                np.testing.assert_array_equal(a_o, a_t)
            else:
                np.testing.assert_allclose(a_o, a_t, atol=TOL)
            np.testing.assert_allclose(lp_o, lp_t, atol=TOL)


def test_weights_are_checked_and_required() -> None:
    channel, spec = _setup("broadcast-discrete")
    runtime = OnnxRuntime.from_graphs(training_graphs(channel, spec))
    obs = np.zeros((2, *spec.obs_shape), np.float32)
    with pytest.raises(RuntimeError, match="no weights yet"):
        runtime.encode(obs)
    params = _weights(channel, spec, seed=1)
    with pytest.raises(ValueError, match="no parameter 'encoder.0.weight'"):
        runtime.load_params({k: v for k, v in params.items() if k != "encoder.0.weight"})
    with pytest.raises(ValueError, match=r"'critic.0.bias' has shape \[3\]"):
        runtime.load_params({**params, "critic.0.bias": np.zeros(3, np.float32)})
    runtime.load_params(params)
    assert runtime.encode(obs)[1].shape == (2, spec.message_dim)


def test_graphs_travel_as_a_message() -> None:
    channel, spec = _setup("dgat-k2")
    rng_state = torch.get_rng_state()
    graphs = training_graphs(channel, spec)
    assert torch.equal(torch.get_rng_state(), rng_state)  # exporting draws nothing a learner would notice
    assert set(graphs.files) == {f"agent-1-{s}.onnx" for s in ("encode", "round_1", "act")}
    back = PolicyGraphs.from_proto(graphs.to_proto())
    assert (back.agent_index, back.rounds, back.files) == (1, 2, graphs.files)
    assert back.entry == json.loads(json.dumps(graphs.entry))
    broken = graphs.to_proto()
    del broken.files["agent-1-act.onnx"]
    with pytest.raises(ValueError, match="does not carry"):
        PolicyGraphs.from_proto(broken)
    broken.entry_json = "{"
    with pytest.raises(ValueError, match="not a manifest entry"):
        PolicyGraphs.from_proto(broken)


def test_a_parameter_left_out_of_the_graphs_fails_the_export(monkeypatch: pytest.MonkeyPatch) -> None:
    channel, spec = _setup("none-discrete")
    take = onnx_export._weight_inputs

    def drop_critic(path, data_inputs, keys):  # as if the exporter had folded the critic's first layer
        return {n: k for n, k in take(path, data_inputs, keys).items() if k != "critic.0.weight"}

    monkeypatch.setattr(onnx_export, "_weight_inputs", drop_critic)
    with pytest.raises(ValueError, match=r"depend on \['critic.0.weight'\]"):
        training_graphs(channel, spec)

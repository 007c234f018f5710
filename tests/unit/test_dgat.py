"""D-GAT attention against hand-computed numbers, and the whole K-hop policy against a numpy reference."""

import math

import numpy as np
import pytest
import torch

from comm_bus.channels.dgat import DGATChannel
from marlmesh.config import ChannelConfig
from marlmesh.policies.dgat import DGATPolicy, attention_hop
from marlmesh.testing.channels import Received, build_team, full_links, run_stages


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def elu(x: float) -> float:
    return x if x > 0 else math.exp(x) - 1.0


def test_attention_hop_three_nodes_by_hand():
    # z of agents 0, 1, 2 (D = 2) and agent 0's attention vector a (2D = 4)
    z = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [-1.0, 2.0]}
    a = [0.5, -0.5, 1.0, 0.25]
    # e_0j = softplus(a . ELU([z_0 || z_j])) + 1e-6, written out term by term
    e01 = softplus(0.5 * 1.0 - 0.5 * 0.0 + 1.0 * 0.0 + 0.25 * 1.0) + 1e-6  # softplus(0.75)
    e02 = softplus(0.5 * 1.0 - 0.5 * 0.0 + 1.0 * elu(-1.0) + 0.25 * 2.0) + 1e-6  # softplus(1 + e^-1 - 1)
    assert e01 == pytest.approx(1.13687, abs=1e-5)  # ln(1 + e^0.75)
    assert e02 == pytest.approx(softplus(math.exp(-1.0)) + 1e-6)

    a_t = torch.tensor(a)
    z0 = torch.tensor([z[0]])

    # hop 1: both neighbours heard, degrees not reported yet (0) -> d_j := d_0 = 1 + 2 = 3
    msgs = torch.tensor([[[0.0, 0.0, 0.0], [*z[1], 0.0], [*z[2], 0.0]]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    got = attention_hop(z0, (msgs, mask), a_t)
    h = [(e01 * z[1][d] + e02 * z[2][d]) / math.sqrt(3 * 3) for d in range(2)]
    np.testing.assert_allclose(got.numpy()[0], [z[0][0] + h[0], z[0][1] + h[1]], rtol=1e-6)

    # hop k >= 2: neighbours report degrees 2 and 3; only agent 1 heard this time (d_0 = 2)
    msgs = torch.tensor([[[0.0, 0.0, 0.0], [*z[1], 2.0], [*z[2], 3.0]]])
    mask = torch.tensor([[0.0, 1.0, 0.0]])
    got = attention_hop(z0, (msgs, mask), a_t)
    alpha01 = e01 / math.sqrt(2 * 2)
    np.testing.assert_allclose(got.numpy()[0], [1.0 + alpha01 * 0.0, 0.0 + alpha01 * 1.0], rtol=1e-6)

    # nobody heard: z unchanged, finite
    got = attention_hop(z0, (msgs, torch.zeros(1, 3)), a_t)
    np.testing.assert_array_equal(got.numpy(), z0.numpy())


def _np_mlp(seq: torch.nn.Sequential, x: np.ndarray) -> np.ndarray:
    """Re-run a tanh MLP (Linear, Tanh, ..., Linear) in numpy."""
    layers = [m for m in seq if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(layers):
        x = x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        if i + 1 < len(layers):
            x = np.tanh(x)
    return x


def _np_elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _np_softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(x))


def test_two_hop_policy_on_a_line_graph_matches_numpy_reference():
    """0 - 1 - 2 (0 and 2 out of range): features of every agent == a numpy re-implementation of docs/algorithms.md."""
    channel = DGATChannel(ChannelConfig(name="dgat", message_dim=5, dgat={"hops": 2}))
    team = build_team(channel, 3, seed=7)
    rng = np.random.default_rng(0)
    batch = 3
    obs = [rng.normal(size=(batch, 6)).astype(np.float32) for _ in range(3)]
    links = full_links(batch, 3)
    links[:, 0, 2] = links[:, 2, 0] = False
    step = run_stages(channel, team, obs, links)

    neighbours = {0: [1], 1: [0, 2], 2: [1]}
    z = {i: _np_mlp(team[i].encoder, obs[i].astype(np.float64)) for i in range(3)}
    degree_sent = {i: 0.0 for i in range(3)}  # round 0: unknown
    for k in range(2):
        new = {}
        for i in range(3):
            d_i = 1.0 + len(neighbours[i])
            a = team[i].attention[k].detach().numpy()
            h = np.zeros_like(z[i])
            for j in neighbours[i]:
                d_j = degree_sent[j] if degree_sent[j] >= 1 else d_i
                e = _np_softplus(_np_elu(np.concatenate([z[i], z[j]], axis=-1)) @ a) + 1e-6
                h += (e / np.sqrt(d_i * d_j))[:, None] * z[j]
            new[i] = z[i] + h
        z = new
        degree_sent = {i: 1.0 + len(neighbours[i]) for i in range(3)}
    for i in range(3):
        lin = team[i].readout
        o_hat = _np_elu(z[i]) @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        # the policy's own features on the inboxes the channel delivered
        with torch.no_grad():
            state, _ = team[i].encode(torch.from_numpy(obs[i]))
            boxes = [(torch.from_numpy(m), torch.from_numpy(k)) for m, k in step.inboxes[i]]
            state, _ = team[i].round(1, state, boxes[0])
            feats = team[i].features(state, boxes).numpy()
        np.testing.assert_allclose(feats[:, :6], obs[i], rtol=1e-6)
        np.testing.assert_allclose(feats[:, 6:], o_hat, rtol=1e-4, atol=1e-5)
        # the degree each agent sent in round 1 is its closed-neighbourhood size
        np.testing.assert_array_equal(step.outboxes[i][1][:, -1], 1.0 + len(neighbours[i]))
        np.testing.assert_array_equal(step.outboxes[i][0][:, -1], 0.0)


def test_information_travels_only_through_messages_k_hops_far():
    """Line 0 - 1 - 2: agent 2's observation reaches agent 0 with 2 hops, never with 1; replay is local."""
    rng = np.random.default_rng(1)
    obs = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3)]
    moved = [o.copy() for o in obs]
    moved[2] += 2.0
    links = full_links(4, 3)
    links[:, 0, 2] = links[:, 2, 0] = False
    for hops, reaches in ((1, False), (2, True)):
        channel = DGATChannel(ChannelConfig(name="dgat", message_dim=5, dgat={"hops": hops}))
        team = build_team(channel, 3, seed=3)
        base = run_stages(channel, team, obs, links)
        other = run_stages(channel, team, moved, links)
        changed = not torch.allclose(base.values[0], other.values[0])
        assert changed == reaches, f"K={hops}"
        # the critic on agent 0's own obs + the messages it received in the base run: the base value
        with torch.no_grad():
            replay = team[0].value(
                torch.from_numpy(obs[0]), [(torch.from_numpy(m), torch.from_numpy(k)) for m, k in base.inboxes[0]]
            )
        torch.testing.assert_close(replay, base.values[0])


def test_critic_is_layernorm_over_obs_and_readout():
    channel = DGATChannel(ChannelConfig(name="dgat", message_dim=5))
    policy = build_team(channel, 3)[0]
    assert isinstance(policy, DGATPolicy) and policy.rounds == 2
    assert isinstance(policy.critic[0], torch.nn.LayerNorm)
    assert policy.critic[0].normalized_shape == (6 + 4,)


def test_degree_slot_is_validated():
    channel = DGATChannel(ChannelConfig(name="dgat", message_dim=3))
    ok = np.array([[0.1, 0.2, 0.0], [0.1, 0.2, 3.0]], np.float32)
    bad = np.array([[0.1, 0.2, 0.5], [0.1, 0.2, 3.0]], np.float32)
    msgs, mask, rejected = channel.inbox({1: Received({"msg": ok}), 2: Received({"msg": bad})}, 2, 3)
    assert rejected == 1 and mask[:, 1].all() and not mask[:, 2].any()
    with pytest.raises(ValueError, match="message_dim >= 2"):
        DGATChannel(ChannelConfig(name="dgat", message_dim=1))


def _two_stream_team():
    channel = DGATChannel(ChannelConfig(name="dgat", message_dim=5, dgat={"actor": "two_stream"}))
    return build_team(channel, 3)


def _inboxes(policy: DGATPolicy, batch: int, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    msgs = torch.randn(batch, 3, 5, generator=gen)
    msgs[..., -1] = 2.0  # a valid degree
    mask = torch.ones(batch, 3)
    mask[:, 0] = 0.0
    return [(msgs, mask)] * policy.rounds


def _act(policy: DGATPolicy, obs: torch.Tensor, inboxes: list):
    state, _ = policy.encode(obs)
    for k in range(1, policy.rounds):
        state, _ = policy.round(k, state, inboxes[k - 1])
    return policy.act(state, inboxes)


def test_two_stream_actor_starts_independent_of_messages_and_adds_their_head():
    policy = _two_stream_team()[0]
    assert policy.message_head is not None and policy.actor.net[0].in_features == 6  # f_i reads o_i only
    obs = torch.randn(4, 6)
    with torch.no_grad():
        first, value_a = _act(policy, obs, _inboxes(policy, 4, 1))
        second, value_b = _act(policy, obs, _inboxes(policy, 4, 2))
        assert torch.equal(first.logits, second.logits)  # g_i's output layer is zero at start
        assert not torch.allclose(value_a, value_b)  # the critic reads the messages from the start
        for param in policy.message_head.parameters():
            param.add_(0.1 * torch.randn_like(param))
        moved, _ = _act(policy, obs, _inboxes(policy, 4, 1))
        state, _ = policy.encode(obs)
        for k in range(1, policy.rounds):
            state, _ = policy.round(k, state, _inboxes(policy, 4, 1)[k - 1])
        feats = policy.features(state, _inboxes(policy, 4, 1))
        expected = torch.log_softmax(policy.actor.net(feats[:, :6]) + policy.message_head(feats[:, 6:]), -1)
        assert torch.allclose(moved.logits, expected, atol=1e-6)
        assert not torch.allclose(moved.logits, first.logits)

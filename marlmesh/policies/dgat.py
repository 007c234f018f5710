"""D-GAT: distributed graph attention over the bus, K hops = K communication rounds per env step.

Agent i (its own parameters, nothing shared):

- ``z_i^0 = MLP_i(o_i)``.
- Hop k = 1..K: agent i receives its heard neighbours' ``z_j^{k-1}`` (round k-1 of the bus) and computes
  ``e_ij = softplus(a_{i,k}^T ELU([z_i^{k-1} || z_j^{k-1}])) + 1e-6``,
  ``alpha_ij = e_ij / sqrt(d_i d_j)``, ``h_i^k = sum_j alpha_ij z_j^{k-1}``, ``z_i^k = z_i^{k-1} + h_i^k``.
- ``ô_i = W_i ELU(z_i^K)``; actor on ``[o_i, ô_i]``; **local** critic ``V_i(LayerNorm([o_i, ô_i]))``.
  The actor is one MLP over ``[o_i, ô_i]``, or with ``two_stream`` (``channel.dgat.actor``) the sum of the
  logits (means) of ``f_i(o_i)`` and ``g_i(ô_i)``, ``g_i``'s output layer zero at start.

**Degree** ``d``: the size of an agent's closed neighbourhood in the communication graph, i.e.
``d_i = 1 + (number of neighbours i heard in this hop's round)``, so ``d_i >= 1`` always (no NaN when nothing
was heard: then ``h_i^k = 0`` and ``z_i^k = z_i^{k-1}``). Only heard neighbours (``mask = 1``) take part.
``d_j`` is not observable by i, so every message carries its sender's degree:

- Wire row (``message_dim`` floats): ``[z (message_dim - 1 floats), degree]``.
- The degree a sender puts in its round-r message is the one it knows at send time: ``1 +`` the peers it
  heard in round r-1. In round 0 it knows none yet and sends 0 ("unknown"); a receiver then uses its own
  ``d_i`` for ``d_j`` (the regular-graph approximation), so hop 1 uses ``alpha_ij = e_ij / d_i``. On a graph
  that does not change within a step, the degree in round r-1 equals the one in round r, so hops 2..K use
  the exact symmetric normalisation.

Messages received are recorded as inputs; the learner replays these stages with the recorded inboxes, so
gradients reach only this agent's ``MLP_i``, ``a_{i,k}``, ``W_i``, actor and critic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.distributions import Distribution

from marlmesh.policies.layers import mlp, ortho_init
from marlmesh.policies.staged import ActionHead, Inbox, StagedPolicy, observation_action_head
from marlmesh.policy_spec import PolicySpec

EDGE_EPS = 1e-6
"""Added to every attention score so that a heard neighbour always has a positive weight."""


def attention_hop(z_self: torch.Tensor, inbox: Inbox, att: torch.Tensor) -> torch.Tensor:
    """One D-GAT hop: ``z_i^k = z_i^{k-1} + sum_j alpha_ij z_j^{k-1}`` over heard neighbours.

    Args:
        z_self: ``z_i^{k-1}`` ``[B, D]``.
        inbox: ``(msgs [B, N, D + 1], mask [B, N])``; each row is ``[z_j^{k-1}, reported degree of j]``.
        att: ``a_{i,k}`` ``[2D]``.

    Returns:
        ``z_i^k`` ``[B, D]``.
    """
    msgs, mask = inbox
    dim = z_self.shape[-1]
    z_nb = msgs[..., :dim]
    d_self = 1.0 + mask.sum(-1, keepdim=True)  # [B, 1]
    reported = msgs[..., dim]
    d_nb = torch.where(reported >= 1.0, reported, d_self)  # [B, N]; unknown -> own degree
    pair = torch.cat([z_self.unsqueeze(1).expand_as(z_nb), z_nb], dim=-1)  # [B, N, 2D]
    e = F.softplus(F.elu(pair) @ att) + EDGE_EPS  # [B, N]
    alpha = e * mask / torch.sqrt(d_self * d_nb)
    return z_self + (alpha.unsqueeze(-1) * z_nb).sum(1)


class DGATPolicy(StagedPolicy):
    """K-hop D-GAT actor and local critic of one agent (see the module docstring).

    Args:
        spec: The agent's spec; ``spec.message_dim`` is the wire row (``z`` has ``message_dim - 1`` floats).
        hops: K (rounds per env step).
        two_stream: Actor ``f_i(o_i) + g_i(ô_i)`` instead of one MLP over ``[o_i, ô_i]`` (see the module
            docstring).
    """

    def __init__(self, spec: PolicySpec, hops: int, two_stream: bool = False) -> None:
        if spec.message_dim < 2:
            raise ValueError("dgat needs channel.message_dim >= 2 (z plus the sender's degree)")
        z_dim = spec.message_dim - 1
        feature_dim = spec.obs_dim + z_dim
        super().__init__(spec, feature_dim)
        self.rounds = hops
        self.z_dim = z_dim
        hidden = list(spec.hidden_sizes)
        self.encoder = mlp(spec.obs_dim, hidden[:1], self.z_dim, 1.0)
        self.attention = nn.ParameterList([nn.Parameter(0.1 * torch.randn(2 * self.z_dim)) for _ in range(hops)])
        self.readout = ortho_init(nn.Linear(self.z_dim, self.z_dim), 1.0)
        self.critic = nn.Sequential(nn.LayerNorm(feature_dim), mlp(feature_dim, hidden, 1, 1.0))
        self.message_head: nn.Module | None = None
        """``g_i`` of the two-stream actor (None: the actor is one MLP over ``[o_i, ô_i]``)."""
        if two_stream:
            self.actor = observation_action_head(spec)
            self.message_head = mlp(self.z_dim, hidden, ActionHead.output_size(spec.action_space), 0.0)

    def _message(self, z: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, degree.unsqueeze(-1)], dim=-1)

    def encode(self, obs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """``z^0 = MLP_i(o_i)``; round 0 sends ``[z^0, 0]`` (degree not known yet)."""
        flat = obs.reshape(obs.shape[0], -1)
        z = self.encoder(flat)
        return {"obs": flat, "z": z}, self._message(z, torch.zeros(z.shape[0]))

    def round(
        self, k: int, state: dict[str, torch.Tensor], inbox: Inbox
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Hop k from round k-1's inbox; round k sends ``[z^k, d_i]``."""
        z = attention_hop(state["z"], inbox, self.attention[k - 1])
        degree = 1.0 + inbox[1].sum(-1)
        return {**state, "z": z}, self._message(z, degree)

    def act(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> tuple[Distribution, torch.Tensor]:
        """(action distribution, value); the two-stream actor adds ``g_i(ô_i)`` to ``f_i(o_i)``'s output."""
        feats = self.features(state, inboxes)
        if self.message_head is None:
            return self.actor(feats), self.reward_value(feats)
        obs_dim = self.spec.obs_dim
        return self.actor(feats[:, :obs_dim], self.message_head(feats[:, obs_dim:])), self.reward_value(feats)

    def features(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> torch.Tensor:
        """Last hop K, then ``[o_i, W_i ELU(z_i^K)]``."""
        z = state["z"]
        if self.rounds > 0:
            z = attention_hop(z, inboxes[self.rounds - 1], self.attention[self.rounds - 1])
        return torch.cat([state["obs"], self.readout(F.elu(z))], dim=-1)

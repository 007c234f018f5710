"""Entity actor: action logits from an observation read as sets of targets and peers (``actor_net: entity``).

An MLP over the flat observation sees landmark 0, landmark 1, ... as different inputs, so independent
learners settle on **fixed roles** (agent i always heads for landmark i), whose ceiling in simple_spread is far
below a coordinated assignment (docs/notes/2026-12-03-why-the-learners-stall-near-34.md). This network cannot name a
landmark by its index: it is invariant to the order of the targets and of the peers, so what it learns is a
rule on positions, such as "head for the nearest landmark that no other agent is closer to".

With the layout of :mod:`marlmesh.entity_layout` (own velocity ``v``, targets ``t_l`` and peers ``p_j`` as
relative positions, ``|x|`` the length of ``x``):

- per target: ``a_l = φ([t_l, |t_l|, v])``; per (target, peer): ``b_lj = ψ([t_l - p_j, |t_l - p_j|, t_l,
  |t_l|])`` (the target as seen from peer j, next to how this agent sees it), pooled over peers by mean and
  max; token ``u_l = τ([a_l, mean_j b_lj, max_j b_lj])``;
- attention over targets ``α = softmax_l(w^T u_l)``: the target the agent heads for, softly;
- per peer ``c_j = χ([p_j, |p_j|])`` pooled by mean and max (who is near, for avoiding collisions);
- logits ``= MLP([v, Σ_l α_l t_l, Σ_l α_l u_l, mean_j c_j, max_j c_j, extras])``.

With visibility flags (``env.obs_radius``), a hidden target gets no attention, a hidden peer is left out of
the pools, and the flags are inputs too; if no target is visible every attention weight is 0 (no NaN).
φ, ψ, τ, χ are one tanh layer each (orthogonal init); the output layer starts near zero (gain 0.01) like
:class:`~marlmesh.policies.staged.ActionHead`'s MLP. The module exports to ONNX (opset 17) like the MLP.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from marlmesh.entity_layout import EntityGroup, EntityLayout
from marlmesh.policies.layers import mlp, ortho_init

HIDDEN_SCORE = -1e4
"""Attention score of a hidden target (its softmax weight underflows to 0)."""


def _layer(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(ortho_init(nn.Linear(in_dim, out_dim), math.sqrt(2)), nn.Tanh())


def _positions(obs: torch.Tensor, group: EntityGroup) -> torch.Tensor:
    return obs[:, group.start : group.stop].reshape(obs.shape[0], group.count, 2)


def _visible(obs: torch.Tensor, group: EntityGroup) -> torch.Tensor:
    """``[B, count]`` float: 1 visible, 0 hidden (all 1 without flags)."""
    if group.flags is None:
        return torch.ones(obs.shape[0], group.count, dtype=obs.dtype, device=obs.device)
    return (obs[:, group.flags : group.flags + group.count] > 0.5).to(obs.dtype)


def _pool(x: torch.Tensor, visible: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean and max of tanh features ``x`` over the visible entries of ``dim`` (a pool with none gives 0, -1)."""
    mask = visible.unsqueeze(-1)
    mean = (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)
    top = torch.where(mask > 0, x, torch.full_like(x, -1.0)).amax(dim)
    return torch.cat([mean, top], dim=-1)


class EntityActorNet(nn.Module):
    """Observation -> action logits (or Gaussian means), invariant to the order of targets and of peers.

    Args:
        layout: Where own velocity, targets, peers and extras sit in the observation.
        hidden: Width of every hidden layer.
        out_dim: Number of logits (discrete) or means (Box).
    """

    def __init__(self, layout: EntityLayout, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.flagged = layout.targets.flags is not None
        flag = 1 if self.flagged else 0
        self.target_features = _layer(2 + 1 + 2 + flag, hidden)
        self.pair_features = _layer(2 + 1 + 2 + 1, hidden)
        self.token = _layer(3 * hidden, hidden)
        self.score = ortho_init(nn.Linear(hidden, 1), 0.01)
        self.peer_features = _layer(2 + 1, hidden)
        head_in = 2 + 2 + hidden + 2 * hidden + len(layout.extras) + flag
        self.head = mlp(head_in, [hidden, hidden], out_dim, 0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, out_dim]`` for flat observations ``[B, obs_dim]``."""
        lay = self.layout
        batch = obs.shape[0]
        vel = obs[:, lay.velocity : lay.velocity + 2]
        targets, peers = _positions(obs, lay.targets), _positions(obs, lay.peers)
        seen_t, seen_p = _visible(obs, lay.targets), _visible(obs, lay.peers)
        n_t, n_p = lay.targets.count, lay.peers.count
        t_len = targets.norm(dim=-1, keepdim=True)
        own = [targets, t_len, vel.unsqueeze(1).expand(batch, n_t, 2)]
        if self.flagged:
            own.append(seen_t.unsqueeze(-1))
        a = self.target_features(torch.cat(own, dim=-1))  # [B, T, H]
        from_peer = targets.unsqueeze(2) - peers.unsqueeze(1)  # [B, T, P, 2]: target seen from peer j
        pair_in = [
            from_peer,
            from_peer.norm(dim=-1, keepdim=True),
            targets.unsqueeze(2).expand(batch, n_t, n_p, 2),
            t_len.unsqueeze(2).expand(batch, n_t, n_p, 1),
        ]
        b = self.pair_features(torch.cat(pair_in, dim=-1))  # [B, T, P, H]
        tokens = self.token(torch.cat([a, _pool(b, seen_p.unsqueeze(1).expand(batch, n_t, n_p), 2)], dim=-1))
        scores = self.score(tokens).squeeze(-1)
        scores = torch.where(seen_t > 0, scores, torch.full_like(scores, HIDDEN_SCORE))
        alpha = (torch.softmax(scores, dim=-1) * seen_t).unsqueeze(-1)  # [B, T, 1]; no target seen: all 0
        c = self.peer_features(torch.cat([peers, peers.norm(dim=-1, keepdim=True)], dim=-1))  # [B, P, H]
        head_in = [vel, (alpha * targets).sum(1), (alpha * tokens).sum(1), _pool(c, seen_p, 1)]
        if lay.extras:
            head_in.append(obs[:, list(lay.extras)])
        if self.flagged:
            head_in.append(seen_t.amax(-1, keepdim=True))
        return self.head(torch.cat(head_in, dim=-1))

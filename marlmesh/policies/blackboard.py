"""Co2PO blackboard policy: intent + yield entries, sent only when the predicted hazard is high.

One round per env step. Agent i computes from its own observation:

- a **hazard** probability ``p_i = sigmoid(hazard_head(o_i))``, trained (by the ``co2po`` learner) with BCE on
  "a cost occurs within the next H steps";
- an **intent** ``tanh(W o_i)`` (``message_dim - 2`` floats: where it is heading) and a **yield** signal
  ``sigmoid(.)`` (1 float: how much it gives way).

**Gating**: the entry is sent only in env copies where ``p_i > threshold`` (risk-triggered). The threshold is a
buffer (so it travels with the published weights) that the learner adapts toward a target message rate. The
outbox row is ``[intent, yield, send flag]``; :meth:`BlackboardChannel.send_rows` turns the flag into the row
mask the bus sends (rows with flag 0 are not sent). Receivers also ignore rows whose flag is 0, so the
semantics hold even on a bus that sends every row.

Actor, reward critic and cost critic see ``[o_i, own p_i, own entry, mean of the received entries, share of
neighbours that wrote]`` (the own entry is there so that the intent/yield heads get a gradient: no gradient
crosses a process boundary). The blackboard here is this step's entries (no latest-value table across steps yet).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from marlmesh.policies.layers import mlp, ortho_init
from marlmesh.policies.meanfield import masked_mean
from marlmesh.policies.staged import Inbox, StagedPolicy
from marlmesh.policy_spec import PolicySpec


def written_mask(inbox: Inbox) -> torch.Tensor:
    """``[B, N]``: heard *and* the sender's send flag (last slot) set."""
    msgs, mask = inbox
    return mask * (msgs[..., -1] > 0.5).float()


class BlackboardPolicy(StagedPolicy):
    """Hazard-gated blackboard entries plus actor, reward critic and cost critic.

    Args:
        spec: The agent's spec (``message_dim >= 3``).
        threshold: Initial hazard threshold in ``(0, 1)``.
    """

    rounds = 1

    def __init__(self, spec: PolicySpec, threshold: float) -> None:
        if spec.message_dim < 3:
            raise ValueError("blackboard needs channel.message_dim >= 3 (intent, yield, send flag)")
        entry = spec.message_dim - 1
        feature_dim = spec.obs_dim + 1 + 2 * entry + 1
        super().__init__(spec, feature_dim)
        hidden = list(spec.hidden_sizes)
        self.hazard_head = mlp(spec.obs_dim, hidden[:1], 1, 1.0)
        self.intent_head = nn.Sequential(ortho_init(nn.Linear(spec.obs_dim, entry - 1), 1.0), nn.Tanh())
        self.yield_head = nn.Sequential(ortho_init(nn.Linear(spec.obs_dim, 1), 1.0), nn.Sigmoid())
        self.cost_critic = mlp(feature_dim, hidden, 1, 1.0)
        self.register_buffer("hazard_threshold", torch.tensor(float(threshold)))
        self.register_buffer("lagrange", torch.tensor(0.0))  # learner state, kept here so checkpoints carry it

    def critic_parameters(self) -> list[nn.Parameter]:
        """Reward and cost critics (their gradient norm is clipped apart from the actor's)."""
        return [*self.critic.parameters(), *self.cost_critic.parameters()]

    def hazard_logit(self, obs: torch.Tensor) -> torch.Tensor:
        """Hazard logit ``[B]`` from the own observation."""
        return self.hazard_head(obs.reshape(obs.shape[0], -1)).squeeze(-1)

    def encode(self, obs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Entry ``[intent, yield]`` and the send flag ``p > threshold``."""
        flat = obs.reshape(obs.shape[0], -1)
        hazard = torch.sigmoid(self.hazard_logit(flat))
        send = (hazard > self.hazard_threshold).float()
        entry = torch.cat([self.intent_head(flat), self.yield_head(flat)], dim=-1)
        return {"obs": flat, "hazard": hazard, "entry": entry}, torch.cat([entry, send.unsqueeze(-1)], dim=-1)

    def features(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> torch.Tensor:
        """Own observation, hazard and entry, mean of the entries written this step, share of writers."""
        msgs, _ = inboxes[0]
        wrote = written_mask(inboxes[0])
        mean, count = masked_mean((msgs[..., :-1], wrote))
        share = count / max(1, self.spec.num_agents - 1)
        own = [state["obs"], state["hazard"].detach().unsqueeze(-1), state["entry"]]
        return torch.cat([*own, mean, share], dim=-1)

    def evaluate_constrained(
        self, obs: torch.Tensor, inboxes: list[Inbox], actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log-prob, entropy, value, cost value, hazard logit)`` on recorded inputs."""
        state, _ = self.encode(obs)
        feats = self.features(state, inboxes)
        dist: Distribution = self.actor(feats)
        return (
            self.actor.log_prob(dist, actions),
            self.actor.entropy(dist),
            self.reward_value(feats),
            self.cost_critic(feats).squeeze(-1),
            self.hazard_logit(obs),
        )

    def cost_value(self, obs: torch.Tensor, inboxes: list[Inbox]) -> torch.Tensor:
        """Cost critic on recorded inputs."""
        state, _ = self.encode(obs)
        return self.cost_critic(self.features(state, inboxes)).squeeze(-1)

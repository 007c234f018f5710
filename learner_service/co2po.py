"""Co2PO learner: PPO-Lagrangian with a cost critic and a hazard predictor that gates communication.

Per update, on one agent's fragment (CleanRL-style, top to bottom):

1. Reward advantages from the reward critic, cost advantages from the cost critic (both GAE).
2. Dual ascent on the Lagrange multiplier: ``lambda <- max(0, lambda + lr * (mean cost per step - limit))``.
3. Epochs x minibatches of ``PPO(clip, (A_r - lambda A_c) / (1 + lambda)) + value losses + hazard BCE``, where the
   hazard label of step t is 1 when a cost occurs within the next H steps of the same episode.
4. The send threshold moves toward the hazard quantile that yields ``channel.blackboard.target_rate``.

The multiplier and the threshold are buffers of the policy, so they are published with the weights and kept in
checkpoints.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812

from learner_service.ppo import PPOLearner, normalized_advantages, ppo_loss
from marlmesh.config import BlackboardConfig, Co2POConfig, PPOConfig
from marlmesh.policies.blackboard import BlackboardPolicy


def hazard_labels(cost: torch.Tensor, done: torch.Tensor, horizon: int) -> torch.Tensor:
    """``[T, B]`` float: 1 where a cost occurs at step t..t+H-1 without an episode end in between.

    ``cost[t]`` is the cost received for the action of step t; ``done[t]`` ends the episode after step t.
    Steps past the end of the fragment are unknown and count as "no cost".
    """
    steps = cost.shape[0]
    inf = torch.full_like(cost[0], float(horizon + 1))
    until = inf.clone()  # steps until the next cost, within the episode
    out = torch.zeros_like(cost)
    for t in reversed(range(steps)):
        nxt = torch.where(done[t], inf, until + 1)
        until = torch.where(cost[t] > 0, torch.zeros_like(nxt), nxt)
        out[t] = (until < horizon).float()
    return out


class Co2POLearner(PPOLearner):
    """PPO-Lagrangian updates of one agent's :class:`BlackboardPolicy`.

    Args:
        policy: The agent's blackboard policy.
        cfg: PPO hyper-parameters.
        constraint: Cost budget, dual ascent and hazard settings.
        gating: Target message rate and threshold step size.
        seed: Seeds minibatch shuffling.
    """

    def __init__(
        self, policy: BlackboardPolicy, cfg: PPOConfig, constraint: Co2POConfig, gating: BlackboardConfig, seed: int
    ) -> None:
        super().__init__(policy, cfg, seed)
        self.policy: BlackboardPolicy = policy
        self.constraint = constraint
        self.gating = gating
        policy.lagrange.fill_(constraint.lagrange_init)

    def cost_advantages(self, cols: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cost GAE from the cost critic, ``(advantages, returns)`` ``[T, B]`` (time-limit bootstrap as for reward)."""
        return self.gae(cols, "cost", self.policy.cost_value)

    def prepare_batch(self, cols: dict[str, torch.Tensor]) -> dict[str, object]:
        """PPO's batch plus cost advantages and returns, hazard labels and the multiplier after dual ascent."""
        batch = super().prepare_batch(cols)
        adv_c, ret_c = self.cost_advantages(cols)
        mean_cost = float(cols["cost"].mean())
        lam = max(
            0.0, float(self.policy.lagrange) + self.constraint.lagrange_lr * (mean_cost - self.constraint.cost_limit)
        )
        self.policy.lagrange.fill_(lam)
        labels = hazard_labels(cols["cost"], cols["terminated"] | cols["truncated"], self.constraint.hazard_horizon)
        batch.update(
            adv_c=adv_c.reshape(-1), ret_c=ret_c.reshape(-1), labels=labels.reshape(-1), lam=lam, mean_cost=mean_cost
        )
        return batch

    def minibatch_loss(self, batch: dict[str, object], idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``PPO(clip, (A_r - lambda A_c) / (1 + lambda))`` + reward and cost value losses + hazard BCE."""
        inboxes = [(m[idx], k[idx]) for m, k in batch["inboxes"]]
        logp, ent, value, cost_value, hazard = self.policy.evaluate_constrained(
            batch["obs"][idx], inboxes, batch["action"][idx]
        )
        lam = batch["lam"]
        a_r = normalized_advantages(batch["adv"][idx], self.cfg)
        a_c = batch["adv_c"][idx]
        if self.cfg.norm_adv and a_c.numel() > 1:
            a_c = a_c - a_c.mean()  # centred, not scaled: keeps lambda's meaning across fragments
        adv = (a_r - lam * a_c) / (1.0 + lam)
        loss, stats = ppo_loss(
            logp, batch["logp"][idx], adv, value, batch["ret"][idx], ent, self.cfg, self.value_scale()
        )
        cost_loss = 0.5 * (cost_value - batch["ret_c"][idx]).pow(2).mean()
        hazard_loss = F.binary_cross_entropy_with_logits(hazard, batch["labels"][idx])
        loss = loss + self.constraint.cost_vf_coef * cost_loss + self.constraint.hazard_coef * hazard_loss
        stats["cost_value_loss"] = float(cost_loss.detach())
        stats["hazard_bce"] = float(hazard_loss.detach())
        return loss, stats

    def after_update(self, batch: dict[str, object]) -> dict[str, float]:
        """Adapt the send threshold; report ``send_rate``, ``threshold``, ``mean_cost``, ``lagrange``, label rate."""
        return {
            **self._adapt_threshold(batch["obs"]),
            "mean_cost": batch["mean_cost"],
            "lagrange": batch["lam"],
            "hazard_label_rate": float(batch["labels"].mean()),
        }

    @torch.no_grad()
    def _adapt_threshold(self, obs: torch.Tensor) -> dict[str, float]:
        """Move the threshold toward the hazard quantile that sends in ``target_rate`` of the rows."""
        hazard = torch.sigmoid(self.policy.hazard_logit(obs))
        old = float(self.policy.hazard_threshold)
        rate = float((hazard > old).float().mean())
        quantile = float(torch.quantile(hazard, 1.0 - self.gating.target_rate))
        new = min(1.0 - 1e-4, max(1e-4, old + self.gating.threshold_ema * (quantile - old)))
        self.policy.hazard_threshold.fill_(new)
        return {"send_rate": rate, "threshold": new}

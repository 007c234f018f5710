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

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from learner_service.ppo import PPOLearner, _flat, _inboxes, ppo_loss
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

    def update(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """One PPO-Lagrangian update; returns mean statistics (incl. ``lagrange``, ``send_rate``, ``threshold``)."""
        cols = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        adv_r, ret_r = self.advantages(cols)
        adv_c, ret_c = self.cost_advantages(cols)
        mean_cost = float(cols["cost"].mean())
        lam = max(
            0.0, float(self.policy.lagrange) + self.constraint.lagrange_lr * (mean_cost - self.constraint.cost_limit)
        )
        self.policy.lagrange.fill_(lam)
        labels = hazard_labels(cols["cost"], cols["terminated"] | cols["truncated"], self.constraint.hazard_horizon)

        rounds = self.policy.rounds
        obs = _flat(cols["obs"])
        inboxes = [(_flat(m), _flat(k)) for m, k in _inboxes(cols, rounds)]
        actions, old_logp = _flat(cols["action"]), _flat(cols["logp"])
        adv_r, ret_r, adv_c, ret_c, labels = (x.reshape(-1) for x in (adv_r, ret_r, adv_c, ret_c, labels))
        n = obs.shape[0]
        mb = max(1, n // self.cfg.minibatches)
        totals: dict[str, float] = {}
        count = 0
        for _ in range(self.cfg.epochs):
            perm = torch.randperm(n, generator=self._gen)
            for start in range(0, n - mb + 1, mb):
                idx = perm[start : start + mb]
                logp, ent, value, cost_value, hazard = self.policy.evaluate_constrained(
                    obs[idx], [(m[idx], k[idx]) for m, k in inboxes], actions[idx]
                )
                a_r, a_c = adv_r[idx], adv_c[idx]
                if self.cfg.norm_adv and a_r.numel() > 1:
                    a_r = (a_r - a_r.mean()) / (a_r.std() + 1e-8)
                    a_c = a_c - a_c.mean()  # centred, not scaled: keeps lambda's meaning across fragments
                adv = (a_r - lam * a_c) / (1.0 + lam)
                loss, stats = ppo_loss(logp, old_logp[idx], adv, value, ret_r[idx], ent, self.cfg)
                cost_loss = 0.5 * (cost_value - ret_c[idx]).pow(2).mean()
                hazard_loss = F.binary_cross_entropy_with_logits(hazard, labels[idx])
                loss = loss + self.constraint.cost_vf_coef * cost_loss + self.constraint.hazard_coef * hazard_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                stats.update(self.clip_gradients())
                self.optimizer.step()
                stats["cost_value_loss"] = float(cost_loss.detach())
                stats["hazard_bce"] = float(hazard_loss.detach())
                for key, val in stats.items():
                    totals[key] = totals.get(key, 0.0) + val
                count += 1
        out = {k: v / max(1, count) for k, v in totals.items()}
        out.update(self._adapt_threshold(obs))
        out.update(
            samples=float(n),
            mean_reward=float(cols["reward"].mean()),
            mean_cost=mean_cost,
            lagrange=lam,
            hazard_label_rate=float(labels.mean()),
        )
        return out

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

"""Decentralized PPO for one agent (CleanRL-style, readable top to bottom).

The learner sees only its own agent's fragments: own observations, the messages that agent received (as
inputs), its actions, rewards and behaviour log-probabilities. Values come from the agent's **local** critic,
recomputed with the current parameters before each update (the behaviour policy may lag by a version).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from marlmesh.config import PPOConfig
from marlmesh.policies.staged import Inbox, StagedPolicy
from marlmesh.rollout import BOOT, inbox_keys


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over ``[T, B]``.

    Args:
        rewards: r_t.
        values: V(s_t).
        next_values: Value of the state after step t: V(s_{t+1}) inside an episode, V(final obs) where the
            episode was truncated at t (time-limit bootstrap); ignored where terminated.
        terminated: True where s_{t+1} is terminal (no bootstrap).
        truncated: True where the episode was cut at t (bootstrap from ``next_values``, no GAE carry-over).
        gamma: Discount.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[0])
    not_terminal = 1.0 - terminated.float()
    not_done = 1.0 - (terminated | truncated).float()
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_values[t] * not_terminal[t] - values[t]
        carry = delta + gamma * lam * not_done[t] * carry
        adv[t] = carry
    return adv, adv + values


def ppo_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    cfg: PPOConfig,
    value_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-surrogate PPO loss with value and entropy terms.

    Args:
        new_logp: Log-probabilities of the taken actions under the current policy.
        old_logp: Their behaviour log-probabilities.
        advantages: Advantage estimates (already normalised if configured).
        new_value: The current critic's values, in return units.
        returns: Value targets, in return units.
        entropy: Entropy of the current action distributions.
        cfg: Clip, entropy and value coefficients.
        value_scale: Factor on the value error (``1 / return_std`` under value normalisation, so the critic's
            loss is measured in normalised units).

    Returns:
        ``(loss, stats)`` where stats has ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``,
        ``clip_fraction``.
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    pg1 = -advantages * ratio
    pg2 = -advantages * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef)
    policy_loss = torch.max(pg1, pg2).mean()
    value_loss = 0.5 * ((new_value - returns) * value_scale).pow(2).mean()
    ent = entropy.mean()
    loss = policy_loss - cfg.ent_coef * ent + cfg.vf_coef * value_loss
    with torch.no_grad():
        stats = {
            "policy_loss": float(policy_loss),
            "value_loss": float(value_loss),
            "entropy": float(ent),
            "approx_kl": float(((ratio - 1.0) - log_ratio).mean()),
            "clip_fraction": float(((ratio - 1.0).abs() > cfg.clip_coef).float().mean()),
        }
    return loss, stats


def set_annealed_lr(optimizer: torch.optim.Optimizer, cfg: PPOConfig, fraction: float) -> float:
    """Give every parameter group the learning rate of a run ``fraction`` of the way through its budget.

    With ``cfg.anneal_lr`` the rate is ``lr * (1 - fraction)`` (``fraction`` clipped to [0, 1]), else ``lr``.

    Returns:
        The rate set.
    """
    lr = cfg.lr * (1.0 - min(max(fraction, 0.0), 1.0)) if cfg.anneal_lr else cfg.lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def minibatch_indices(n: int, cfg: PPOConfig, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Sample indices of every PPO minibatch, in training order.

    ``cfg.epochs`` shuffles of ``range(n)``, each cut into ``cfg.minibatches`` equal minibatches (a remainder
    smaller than a minibatch is left out).
    """
    mb = max(1, n // cfg.minibatches)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - mb + 1, mb):
            yield perm[start : start + mb]


def normalized_advantages(adv: torch.Tensor, cfg: PPOConfig) -> torch.Tensor:
    """Advantages normalised over the minibatch (when ``cfg.norm_adv``)."""
    if cfg.norm_adv and adv.numel() > 1:
        return (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv


class NonFiniteUpdate(ArithmeticError):
    """An update met a non-finite loss or gradient norm; it stopped before the optimizer step.

    Args:
        cause: ``non_finite_loss`` or ``non_finite_grad``.
        message: What was non-finite.
    """

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def _inboxes(cols: dict[str, torch.Tensor], rounds: int, prefix: str = "") -> list[Inbox]:
    out = []
    for k in range(rounds):
        mk, kk = inbox_keys(k, prefix)
        out.append((cols[mk], cols[kk]))
    return out


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class PPOLearner:
    """PPO updates of one agent's staged policy.

    Args:
        policy: The agent's policy (actor + local critic).
        cfg: Hyper-parameters.
        seed: Seeds minibatch shuffling.
    """

    def __init__(self, policy: StagedPolicy, cfg: PPOConfig, seed: int) -> None:
        self.policy = policy
        self.cfg = cfg
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self._gen = torch.Generator().manual_seed(seed)
        critic_ids = {id(p) for p in policy.critic_parameters()}
        actor_ids = {id(p) for p in policy.actor.parameters()}
        self.clip_groups = {
            "critic": [p for p in policy.parameters() if id(p) in critic_ids],
            "actor": [p for p in policy.parameters() if id(p) in actor_ids],
            "shared": [p for p in policy.parameters() if id(p) not in critic_ids | actor_ids],
        }
        """Parameter groups whose gradient norms are clipped separately: the critics' heads, the actor head, and
        what both use (message encoders, attention). A critic's value-loss gradient is orders of magnitude larger
        than the policy gradient (returns near -20 against values near 0; the value loss also reaches the shared
        encoders); clipped jointly it shrank every actor step by that ratio."""

    def set_progress(self, fraction: float) -> float:
        """Set the learning rate for a run ``fraction`` of the way through its budget (:func:`set_annealed_lr`)."""
        return set_annealed_lr(self.optimizer, self.cfg, fraction)

    def clip_gradients(self) -> dict[str, float]:
        """Clip the gradients to ``max_grad_norm`` as ``PPOConfig.grad_clip`` says; returns the norms before clipping.

        ``per_group`` clips each group of :attr:`clip_groups` on its own (``grad_norm_<group>``); ``joint`` clips
        all of the policy's parameters together (``grad_norm_all``).
        """
        if self.cfg.grad_clip == "joint":
            return {"grad_norm_all": float(nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm))}
        return {
            f"grad_norm_{name}": float(nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
            for name, params in self.clip_groups.items()
            if params
        }

    @torch.no_grad()
    def advantages(self, cols: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Recompute values with the current critic and return ``(advantages, returns)`` ``[T, B]``."""
        return self.gae(cols, "reward", self.policy.value)

    @torch.no_grad()
    def gae(
        self, cols: dict[str, torch.Tensor], signal: str, value_fn: Callable[..., torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE of column ``signal`` under the critic ``value_fn(obs, inboxes)`` (bootstrap at time limits)."""
        rounds = self.policy.rounds
        t, b = cols[signal].shape
        inboxes = [(_flat(m), _flat(k)) for m, k in _inboxes(cols, rounds)]
        values = value_fn(_flat(cols["obs"]), inboxes).reshape(t, b)
        boot = value_fn(cols[BOOT + "obs"], _inboxes(cols, rounds, BOOT))
        next_values = torch.cat([values[1:], boot.unsqueeze(0)], dim=0)
        cut = cols["truncated"] & ~cols["terminated"]
        if cut.any():
            final = value_fn(_flat(cols["final_obs"]), inboxes).reshape(t, b)
            next_values = torch.where(cut, final, next_values)
        return compute_gae(
            cols[signal],
            values,
            next_values,
            cols["terminated"],
            cols["truncated"],
            self.cfg.gamma,
            self.cfg.gae_lambda,
        )

    def prepare_batch(self, cols: dict[str, torch.Tensor]) -> dict[str, object]:
        """Flat ``[T*B]`` training inputs of one fragment: ``obs``, ``inboxes``, ``action``, ``logp``, ``adv``, ``ret``.

        Subclasses add their own targets (e.g. cost advantages) and read them back in :meth:`minibatch_loss`.
        """
        adv, ret = self.advantages(cols)
        if self.cfg.value_norm:
            self.update_return_stats(ret)
        return {
            "obs": _flat(cols["obs"]),
            "inboxes": [(_flat(m), _flat(k)) for m, k in _inboxes(cols, self.policy.rounds)],
            "action": _flat(cols["action"]),
            "logp": _flat(cols["logp"]),
            "adv": adv.reshape(-1),
            "ret": ret.reshape(-1),
        }

    @torch.no_grad()
    def update_return_stats(self, returns: torch.Tensor) -> None:
        """Fold a fragment's returns into the policy's running ``return_mean`` and ``return_std``.

        An EMA with decay ``PPOConfig.value_norm_beta`` per update; the first update takes the fragment's own
        statistics.
        """
        policy = self.policy
        mean, var = float(returns.mean()), float(returns.var(unbiased=False))
        if float(policy.return_updates) > 0:
            beta = self.cfg.value_norm_beta
            old_mean, old_std = float(policy.return_mean), float(policy.return_std)
            sq = beta * (old_std**2 + old_mean**2) + (1.0 - beta) * (var + mean**2)
            mean = beta * old_mean + (1.0 - beta) * mean
            var = sq - mean**2
        policy.return_mean.fill_(mean)
        policy.return_std.fill_(max(var, 1e-8) ** 0.5)
        policy.return_updates.add_(1.0)

    def value_scale(self) -> float:
        """Factor on the critic's error in the loss: ``1 / return_std`` under value normalisation, else 1."""
        return 1.0 / float(self.policy.return_std) if self.cfg.value_norm else 1.0

    def minibatch_loss(self, batch: dict[str, object], idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of minibatch ``idx`` (the hook subclasses extend); returns ``(loss, stats)``."""
        inboxes = [(m[idx], k[idx]) for m, k in batch["inboxes"]]
        logp, ent, value = self.policy.evaluate(batch["obs"][idx], inboxes, batch["action"][idx])
        adv = normalized_advantages(batch["adv"][idx], self.cfg)
        return ppo_loss(logp, batch["logp"][idx], adv, value, batch["ret"][idx], ent, self.cfg, self.value_scale())

    def update(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """One PPO update (epochs x minibatches) on a validated fragment; returns mean loss statistics.

        Raises:
            NonFiniteUpdate: At the first minibatch whose loss or gradient norm is non-finite (before its
                optimizer step; earlier minibatches have stepped: the caller restores its snapshot).
        """
        cols = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        batch = self.prepare_batch(cols)
        n = batch["obs"].shape[0]
        totals: dict[str, float] = {}
        count = 0
        for idx in minibatch_indices(n, self.cfg, self._gen):
            loss, stats = self.minibatch_loss(batch, idx)
            if not torch.isfinite(loss):
                raise NonFiniteUpdate("non_finite_loss", f"loss {float(loss.detach())} (minibatch {count}): {stats}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms = self.clip_gradients()
            if not all(np.isfinite(v) for v in norms.values()):
                raise NonFiniteUpdate("non_finite_grad", f"gradient norms {norms} (minibatch {count})")
            stats.update(norms)
            self.optimizer.step()
            for key, val in stats.items():
                totals[key] = totals.get(key, 0.0) + val
            count += 1
        out = {k: v / max(1, count) for k, v in totals.items()}
        out["samples"] = float(n)
        out["mean_reward"] = float(cols["reward"].mean())
        out.update(self.after_update(batch))
        return out

    def after_update(self, batch: dict[str, object]) -> dict[str, float]:
        """Hook run once after the epochs (subclasses adapt their own state here); returns extra statistics."""
        return {}

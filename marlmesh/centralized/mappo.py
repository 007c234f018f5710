"""Central-critic MAPPO over one :class:`~marlmesh.centralized.joint_env.JointEnv` (CleanRL style).

Per update: T batched steps of all N agents (each actor samples from its own observation), then
``epochs x minibatches`` of PPO on the joint samples. The critic is the CENTRAL one: ``V(o_1, ..., o_N)``
returns one value per agent (each agent has its own reward) from the concatenated observations of every
agent. GAE and the clipped loss are the decentralized learners' own (:mod:`learner_service.ppo`), so the
reference differs from them only in what the critic sees and where training happens.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from learner_service.ppo import (
    compute_gae,
    minibatch_indices,
    normalized_advantages,
    ppo_loss,
    set_annealed_lr,
)
from marlmesh.centralized.joint_env import JointEnv
from marlmesh.config import Config
from marlmesh.observation import AgentObservation
from marlmesh.policies.layers import mlp
from marlmesh.policies.staged import IndependentPolicy


def joint_observation(obs: list[torch.Tensor]) -> torch.Tensor:
    """The critic input: every agent's observation flattened and concatenated, ``[..., sum obs_dim]``.

    Args:
        obs: One tensor per agent with the same leading dims (e.g. ``[B]`` or ``[T, B]``) and that agent's
            observation shape after them.
    """
    lead = obs[0].shape[: obs[0].ndim - 1] if obs[0].ndim >= 1 else ()
    return torch.cat([o.reshape(*lead, -1) for o in obs], dim=-1)


class CentralCritic(nn.Module):
    """``V(o_1, ..., o_N) -> [V_1, ..., V_N]``: one value per agent from the joint observation.

    Args:
        obs_dims: Flattened observation size of every agent.
        hidden: Hidden layer widths (tanh MLP, orthogonal init).
    """

    def __init__(self, obs_dims: list[int], hidden: list[int]) -> None:
        super().__init__()
        self.obs_dims = list(obs_dims)
        self.input_dim = int(sum(obs_dims))
        self.net = mlp(self.input_dim, hidden, len(obs_dims), 1.0)

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        """Values ``[..., N]`` of a joint observation ``[..., sum obs_dim]``."""
        if joint.shape[-1] != self.input_dim:
            raise ValueError(
                f"central critic expects the joint observation of {self.input_dim} floats, got {joint.shape[-1]}"
            )
        return self.net(joint)


def _dist(actor: IndependentPolicy, obs: torch.Tensor) -> torch.distributions.Distribution:
    """The actor's action distribution on its own observation (its own local critic head is not used)."""
    state, _ = actor.encode(obs)
    return actor.actor(actor.features(state, []))


def _as_tensors(views: list[AgentObservation], field: str) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(getattr(v, field), np.float32)) for v in views]


class CentralMAPPO:
    """N actors and one central critic, trained together on the joint samples of B env copies.

    Args:
        config: The run's config (``algo.ppo``, ``train.rollout_steps``).
        env: The joint env (its specs build the actors).
        seed: Seeds initialisation and minibatch shuffling.
    """

    def __init__(self, config: Config, env: JointEnv, seed: int) -> None:
        self.cfg = config.algo.ppo
        self.env = env
        self.steps = config.train.rollout_steps
        torch.manual_seed(seed * 7919)
        self.actors = [IndependentPolicy(spec) for spec in env.specs]
        self.critic = CentralCritic([spec.obs_dim for spec in env.specs], list(self.cfg.hidden_sizes))
        self._modules = [*(a.actor for a in self.actors), self.critic]  # what the optimizer trains and clips
        params = [p for m in self._modules for p in m.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.lr, eps=self.cfg.adam_eps)
        self._gen = torch.Generator().manual_seed(seed * 104_729)
        self.updates = 0

    def set_progress(self, fraction: float) -> float:
        """Set the learning rate for a run ``fraction`` of the way through its budget (``algo.ppo.anneal_lr``)."""
        return set_annealed_lr(self.optimizer, self.cfg, fraction)

    def clip_gradients(self) -> None:
        """Clip the gradients to ``max_grad_norm`` as ``algo.ppo.grad_clip`` says.

        ``per_group``: every actor and the central critic each on its own; ``joint``: all their parameters as one
        vector.
        """
        if self.cfg.grad_clip == "joint":
            nn.utils.clip_grad_norm_([p for m in self._modules for p in m.parameters()], self.cfg.max_grad_norm)
            return
        for module in self._modules:
            nn.utils.clip_grad_norm_(module.parameters(), self.cfg.max_grad_norm)

    @torch.no_grad()
    def collect(self) -> dict[str, object]:
        """T joint steps; returns the rollout (per-agent lists ``[T, B, ...]`` and joint ``[T, B, N]`` tensors)."""
        n, t_max = self.env.num_agents, self.steps
        obs: list[list[torch.Tensor]] = [[] for _ in range(n)]
        actions: list[list[torch.Tensor]] = [[] for _ in range(n)]
        logps: list[list[torch.Tensor]] = [[] for _ in range(n)]
        joint, final_joint, rewards, terminated, truncated = [], [], [], [], []
        views = self.env.views
        for _ in range(t_max):
            current = _as_tensors(views, "obs")
            step_actions = []
            for i, actor in enumerate(self.actors):
                dist = _dist(actor, current[i])
                a = actor.actor.sample(dist, deterministic=False)
                obs[i].append(current[i])
                actions[i].append(a)
                logps[i].append(actor.actor.log_prob(dist, a))
                step_actions.append(a.numpy())
            joint.append(joint_observation(current))
            views = self.env.step(step_actions)
            rewards.append(torch.from_numpy(np.stack([v.reward for v in views], -1).astype(np.float32)))
            terminated.append(torch.from_numpy(np.stack([v.terminated for v in views], -1)))
            truncated.append(torch.from_numpy(np.stack([v.truncated for v in views], -1)))
            final_joint.append(joint_observation(_as_tensors(views, "final_obs")))
        return {
            "obs": [torch.stack(o) for o in obs],
            "action": [torch.stack(a) for a in actions],
            "logp": [torch.stack(lp) for lp in logps],
            "joint": torch.stack(joint),
            "final_joint": torch.stack(final_joint),
            "boot_joint": joint_observation(_as_tensors(views, "obs")),
            "reward": torch.stack(rewards),
            "terminated": torch.stack(terminated),
            "truncated": torch.stack(truncated),
        }

    @torch.no_grad()
    def advantages(self, ro: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE per agent under the central critic, ``[T, B, N]`` each (bootstrap at time limits)."""
        values = self.critic(ro["joint"])
        next_values = torch.cat([values[1:], self.critic(ro["boot_joint"]).unsqueeze(0)], dim=0)
        cut = ro["truncated"] & ~ro["terminated"]
        if cut.any():
            next_values = torch.where(cut, self.critic(ro["final_joint"]), next_values)
        return compute_gae(
            ro["reward"], values, next_values, ro["terminated"], ro["truncated"], self.cfg.gamma, self.cfg.gae_lambda
        )

    def update(self, ro: dict[str, object]) -> dict[str, float]:
        """One PPO update (epochs x minibatches) of every actor and the central critic; mean statistics."""
        adv, ret = self.advantages(ro)
        flat = lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # noqa: E731
        joint, adv, ret = flat(ro["joint"]), flat(adv), flat(ret)
        obs = [flat(o) for o in ro["obs"]]
        actions = [flat(a) for a in ro["action"]]
        old_logp = [flat(lp) for lp in ro["logp"]]
        samples = joint.shape[0]
        totals: dict[str, float] = {}
        count = 0
        for idx in minibatch_indices(samples, self.cfg, self._gen):
            values = self.critic(joint[idx])
            loss = torch.zeros(())
            for i, actor in enumerate(self.actors):
                dist = _dist(actor, obs[i][idx])
                a = normalized_advantages(adv[idx, i], self.cfg)
                loss_i, stats = ppo_loss(
                    actor.actor.log_prob(dist, actions[i][idx]),
                    old_logp[i][idx],
                    a,
                    values[:, i],
                    ret[idx, i],
                    actor.actor.entropy(dist),
                    self.cfg,
                )
                loss = loss + loss_i
                for key, val in stats.items():
                    totals[key] = totals.get(key, 0.0) + val / len(self.actors)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.clip_gradients()
            self.optimizer.step()
            count += 1
        self.updates += 1
        out = {k: v / max(1, count) for k, v in totals.items()}
        out["samples"] = float(samples * len(self.actors))
        out["mean_reward"] = float(ro["reward"].mean())
        return out

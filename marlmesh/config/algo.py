"""``algo``: the learning algorithm, PPO and the algorithms' own options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from marlmesh.config.base import StrictModel


class PPOConfig(StrictModel):
    """PPO hyper-parameters (CleanRL naming)."""

    lr: float = Field(5e-4, gt=0)
    adam_eps: float = Field(1e-5, gt=0)
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_coef: float = Field(0.2, gt=0)
    epochs: int = Field(10, ge=1)
    minibatches: int = Field(4, ge=1)
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    grad_clip: Literal["per_group", "joint"] = "per_group"
    """How ``max_grad_norm`` applies: ``per_group`` clips the critics' heads, the actor head and what both use
    (message encoders, attention) each on its own, so a large value-loss gradient never shrinks a policy step;
    ``joint`` clips all of the policy's parameters as one vector (CleanRL's PPO), which makes the actor's steps
    small while the critic is still far off. ``mappo-central``'s groups are its actors and its central critic."""
    norm_adv: bool = True
    """Normalise advantages per minibatch (per agent: every learner sees only its agent)."""
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of actor and critic MLPs (tanh, orthogonal init)."""
    value_norm: bool = False
    """Value normalisation (as in MAPPO): the local critic learns ``(return - mean) / std`` with running statistics
    of the agent's own returns (kept in the policy, see ``StagedPolicy.return_mean``), so its loss and gradients
    do not scale with the size of the returns. Returns of -20 against an initial value of 0 otherwise give a
    critic gradient far above ``max_grad_norm``, and the critic learns slowly."""
    value_norm_beta: float = Field(0.99, ge=0, lt=1)
    """EMA decay of the return statistics per update (the first update takes its batch's statistics)."""
    actor_net: Literal["mlp", "entity"] = "mlp"
    """The network of the actor stream that reads the agent's own observation (``ippo``, ``mappo-central``'s
    actors, and ``dgmappo`` with ``channel.dgat.actor: two_stream``, where it is ``f_i``). ``mlp``: a tanh MLP over
    the flat observation. ``entity``: ``marlmesh/policies/entity_actor.py``, which reads the observation as the
    own velocity, a set of landmarks and a set of other agents and is invariant to their order, so it cannot
    learn "agent i takes landmark i" and learns a rule on positions instead (one hidden width,
    ``hidden_sizes[0]``, throughout). Needs an env whose observation layout ``marlmesh/entity_layout.py`` knows
    (``mpe2.simple_spread_v3``, ``marlmesh.simple_spread``). The critic stays an MLP."""
    anneal_lr: bool = False
    """Decay the learning rate linearly from ``lr`` to 0 over the run's budget (as CleanRL's ``anneal_lr``). A
    learner measures progress as the larger of ``samples trained / train.total_env_steps`` and ``seconds since
    the learner started / train.max_wall_seconds``, so a run cut by its wall-clock budget still ends near 0 (a
    restarted learner resumes both its sample count and its running time from the checkpoint). ``mappo-central``
    uses its env steps and its own running time the same way."""


class Co2POConfig(StrictModel):
    """Constrained part of ``co2po``: hazard predictor, cost critic, PPO-Lagrangian."""

    cost_limit: float = Field(0.02, ge=0)
    """Budget on the mean cost per step (MPE: collisions an agent is in per step)."""
    lagrange_init: float = Field(0.0, ge=0)
    """Initial Lagrange multiplier."""
    lagrange_lr: float = Field(0.5, gt=0)
    """Dual-ascent step: ``lambda <- max(0, lambda + lr * (mean cost per step - cost_limit))`` per update."""
    hazard_horizon: int = Field(5, ge=1)
    """H: the hazard label of step t is 1 when a cost occurs in steps t..t+H-1 of the same episode (looked up
    within the fragment)."""
    hazard_coef: float = Field(0.5, ge=0)
    """Weight of the hazard BCE loss."""
    cost_vf_coef: float = Field(0.5, ge=0)
    """Weight of the cost critic's loss."""


class RewardSharingConfig(StrictModel):
    """DG-MAPPO reward sharing: every agent sends its reward over the bus and trains on a mix with its neighbours'.

    After each env step an agent sends its reward (one float per env copy, channel ``reward``) to its live peers
    over the same emulated links as its messages (range, loss, rate; bytes counted in ``bus.*``) and records
    ``(1 - weight) * r_i + weight * mean(r_j of the neighbours heard)`` in its fragment (its own reward where it
    heard nobody), which its learner trains on.
    """

    enabled: bool = False
    weight: float = Field(0.5, ge=0.0, le=1.0)
    """Share of the neighbours' mean reward in the reward an agent trains on (0 = own reward only)."""


class GossipConfig(StrictModel):
    """Gossip (D-SGD) parameter mixing between neighbour learners over the bus (``learner_service/gossip.py``).

    Every ``period`` updates each learner runs ``rounds`` gossip rounds: ``theta_i <- sum_j W_ij theta_j`` with
    Metropolis-Hastings weights on the current comm graph (learners alive and whose agents heard each other in
    the latest fragment). Its messages use the run's link emulation (``bus.links``, ``bus.quantization``,
    ``bus.header_bytes``) and are counted in ``bus.gossip`` of the summary.
    """

    enabled: bool = False
    period: int = Field(1, ge=1)
    """Mix after every ``period``-th update of a learner."""
    rounds: int = Field(1, ge=1, le=16)
    """Gossip rounds per mixing (each: a neighbour list, then the parameters)."""
    slot_ms: float = Field(1000.0, gt=0)
    """Bus-clock time a gossip message has to become visible (latency + serialization at ``rate_bps``); a later
    one is not mixed (counted as ``expired``)."""
    timeout_ms: float = Field(5000.0, gt=0)
    """Longest real wait for a neighbour learner's message of a round (a dead or slow learner)."""


class DGMAPPOConfig(StrictModel):
    """Optional parts of DG-MAPPO (``algo.name=dgmappo``)."""

    reward_sharing: RewardSharingConfig = Field(default_factory=RewardSharingConfig)
    gossip: GossipConfig = Field(default_factory=GossipConfig)


class AlgoConfig(StrictModel):
    """The learning algorithm (``marlmesh.algos`` plugin)."""

    name: str = "ippo"
    """``ippo``, ``dgmappo``, ``mfppo``, ``co2po`` (decentralized), or ``mappo-central`` (the CENTRALIZED
    REFERENCE: one process, a central critic over the joint observation; see ``marlmesh/centralized``)."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    co2po: Co2POConfig = Field(default_factory=Co2POConfig)
    """Used when ``name`` is ``co2po``."""
    dgmappo: DGMAPPOConfig = Field(default_factory=DGMAPPOConfig)
    """Used when ``name`` is ``dgmappo``."""

    @model_validator(mode="after")
    def _dgmappo_options(self) -> AlgoConfig:
        for part in ("reward_sharing", "gossip"):
            if getattr(self.dgmappo, part).enabled and self.name != "dgmappo":
                raise ValueError(f"algo.dgmappo.{part}.enabled=true needs algo.name=dgmappo, got {self.name!r}")
        return self

"""Staged actor-critic policies: ``encode(obs) -> outbox``, rounds, ``act(state, inbox) -> action, value``.

The agent process runs the stages one by one with bus I/O in between; the learner runs
:meth:`StagedPolicy.evaluate`, which replays the same stages on recorded inputs (the agent's own
observations plus the messages it *received*, which are constants: no gradient crosses a process boundary).
Every agent has its own parameters and its own **local** critic.

Inbox format for round ``k``: ``msgs`` float32 ``[B, N, M]`` indexed by sender, ``mask`` float32 ``[B, N]``
(1 where that sender's message for that env copy arrived, 0 for self, absent or out-of-range peers).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from marlmesh.policies.entity_actor import EntityActorNet
from marlmesh.policies.layers import mlp, ortho_init
from marlmesh.policy_spec import PolicySpec
from marlmesh.spaces import SpaceSpec

Inbox = tuple[torch.Tensor, torch.Tensor]


class ActionHead(nn.Module):
    """Maps features to a distribution over the agent's action space (Categorical or diagonal Normal).

    Args:
        in_dim: Width of the features.
        hidden: Hidden layer widths of the MLP that maps features to logits (means).
        space: The action space.
        net: A network to use instead of that MLP (features -> ``output_size(space)`` values).
    """

    def __init__(self, in_dim: int, hidden: list[int], space: SpaceSpec, net: nn.Module | None = None) -> None:
        super().__init__()
        self.discrete = space.kind == "discrete"
        out = self.output_size(space)
        self.net = net if net is not None else mlp(in_dim, hidden, out, 0.01)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(out))
            self._shape = tuple(space.shape)

    @staticmethod
    def output_size(space: SpaceSpec) -> int:
        """Width of the network output: logits (discrete) or Gaussian means (box)."""
        return space.n if space.kind == "discrete" else int(np.prod(space.shape))

    def forward(self, feats: torch.Tensor, offset: torch.Tensor | None = None) -> Distribution:
        """The action distribution for a batch of features (``offset`` is added to the logits or means)."""
        out = self.net(feats)
        if offset is not None:
            out = out + offset
        if self.discrete:
            return Categorical(logits=out)
        return Normal(out, self.log_std.exp().expand_as(out))

    def log_prob(self, dist: Distribution, action: torch.Tensor) -> torch.Tensor:
        """Log-probability of actions, summed over action dimensions for Box spaces."""
        if self.discrete:
            return dist.log_prob(action.long())
        return dist.log_prob(action.reshape(action.shape[0], -1)).sum(-1)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        """Entropy per sample."""
        ent = dist.entropy()
        return ent if self.discrete else ent.sum(-1)

    def sample(self, dist: Distribution, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sampled (or greedy/mean) actions, shaped like the action space.

        Args:
            dist: The action distribution of :meth:`forward`.
            deterministic: Greedy (discrete) or mean (box) actions instead of samples.
            generator: Random source of the samples (None: torch's global generator). An agent that owns its
                generator samples the same actions whatever else runs in its process.
        """
        if self.discrete:
            if deterministic:
                return dist.probs.argmax(-1)
            if generator is None:
                return dist.sample()
            return torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)
        if deterministic:
            a = dist.mean
        elif generator is None:
            a = dist.sample()
        else:
            a = torch.normal(dist.mean, dist.stddev, generator=generator)
        return a.reshape(a.shape[0], *self._shape)


def observation_action_head(spec: PolicySpec) -> ActionHead:
    """The action head that reads the agent's own observation alone (``algo.ppo.actor_net``).

    With ``spec.entity_layout`` (``entity``): :class:`EntityActorNet` over it (invariant to the order of landmarks
    and of other agents); without (``mlp``): a tanh MLP over the flat observation.
    """
    hidden = list(spec.hidden_sizes)
    if spec.entity_layout is None:
        return ActionHead(spec.obs_dim, hidden, spec.action_space)
    net = EntityActorNet(spec.entity_layout, hidden[0], ActionHead.output_size(spec.action_space))
    return ActionHead(spec.obs_dim, hidden, spec.action_space, net=net)


class StagedPolicy(nn.Module):
    """Base class: actor and local critic over ``features(state, inboxes)``.

    Subclasses define :attr:`rounds`, :meth:`encode`, :meth:`round` and :meth:`features`.

    Args:
        spec: The agent's spec.
        feature_dim: Width of ``features(state, inboxes)``.
        actor: The action head (default: an MLP over the features).
    """

    rounds: int = 0

    def __init__(self, spec: PolicySpec, feature_dim: int, actor: ActionHead | None = None) -> None:
        super().__init__()
        self.spec = spec
        hidden = list(spec.hidden_sizes)
        self.actor = actor if actor is not None else ActionHead(feature_dim, hidden, spec.action_space)
        self.critic = mlp(feature_dim, hidden, 1, 1.0)
        self.register_buffer("return_mean", torch.zeros(()))
        self.register_buffer("return_std", torch.ones(()))
        self.register_buffer("return_updates", torch.zeros(()))
        """Value normalisation (``algo.ppo.value_norm``): the critic network predicts
        ``(return - return_mean) / return_std`` and :meth:`reward_value` maps it back to return units. The learner
        keeps both statistics (0 and 1 when value normalisation is off) and ``return_updates``, the number of
        updates folded into them; they travel with the weights and the checkpoints."""

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters trained only by value losses (the learner clips their gradient norm separately)."""
        return list(self.critic.parameters())

    def encode(self, obs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Stage 0: own observation -> (state, message for round 0 or None)."""
        return {"obs": obs.reshape(obs.shape[0], -1)}, None

    def round(
        self, k: int, state: dict[str, torch.Tensor], inbox: Inbox
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Stage k (1 <= k < rounds): state + inbox of round k-1 -> (state, message for round k)."""
        raise NotImplementedError(f"{type(self).__name__} has {self.rounds} rounds")

    def features(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> torch.Tensor:
        """Input of actor and critic, from the state and every round's inbox."""
        return state["obs"]

    def act(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> tuple[Distribution, torch.Tensor]:
        """Final stage: (action distribution, value)."""
        feats = self.features(state, inboxes)
        return self.actor(feats), self.reward_value(feats)

    def reward_value(self, feats: torch.Tensor) -> torch.Tensor:
        """The local critic's value of ``feats`` in return units (denormalised, see ``return_mean``)."""
        return self.critic(feats).squeeze(-1) * self.return_std + self.return_mean

    def forward_all(self, obs: torch.Tensor, inboxes: list[Inbox]) -> tuple[Distribution, torch.Tensor]:
        """Replay every stage on recorded inputs (the learner's path)."""
        state, _ = self.encode(obs)
        for k in range(1, self.rounds):
            state, _ = self.round(k, state, inboxes[k - 1])
        return self.act(state, inboxes)

    def value(self, obs: torch.Tensor, inboxes: list[Inbox]) -> torch.Tensor:
        """Local critic value on recorded inputs."""
        return self.forward_all(obs, inboxes)[1]

    def evaluate(
        self, obs: torch.Tensor, inboxes: list[Inbox], actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-prob of ``actions``, entropy, value) on recorded inputs."""
        dist, value = self.forward_all(obs, inboxes)
        return self.actor.log_prob(dist, actions), self.actor.entropy(dist), value


class IndependentPolicy(StagedPolicy):
    """No communication: actor and critic see only the agent's own observation (IPPO)."""

    rounds = 0

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__(spec, spec.obs_dim, actor=observation_action_head(spec))


class BroadcastPolicy(StagedPolicy):
    """One round: send ``tanh(W o_i)``; act on ``[o_i, own message, mean of received messages, heard share]``."""

    rounds = 1

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__(spec, spec.obs_dim + 2 * spec.message_dim + 1)
        self.encoder = nn.Sequential(ortho_init(nn.Linear(spec.obs_dim, spec.message_dim), 1.0), nn.Tanh())

    def encode(self, obs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Encode the observation; the encoding is this round's message."""
        flat = obs.reshape(obs.shape[0], -1)
        z = self.encoder(flat)
        return {"obs": flat, "z": z}, z

    def features(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> torch.Tensor:
        """Own observation and message, plus the masked mean of the peers' messages."""
        msgs, mask = inboxes[0]
        heard = mask.sum(-1, keepdim=True)
        mean = (msgs * mask.unsqueeze(-1)).sum(1) / heard.clamp(min=1.0)
        share = heard / max(1, self.spec.num_agents - 1)
        return torch.cat([state["obs"], state["z"], mean, share], dim=-1)

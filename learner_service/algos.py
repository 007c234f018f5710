"""Algorithm plugins (``marlmesh.algos``)."""

from __future__ import annotations

import torch

from learner_service.ppo import PPOLearner
from marlmesh.config import Config
from marlmesh.interfaces import Channel
from marlmesh.policy_spec import PolicySpec


class IPPO:
    """Decentralized PPO: one learner per agent, local critic on the agent's own inputs (no central critic).

    With channel ``none`` this is independent PPO; with a communicating channel the critic and actor also see
    the messages that agent received.
    """

    name = "ippo"

    def build_learner(self, config: Config, spec: PolicySpec, channel: Channel) -> PPOLearner:
        """A :class:`PPOLearner` over a freshly initialised policy (seeded per agent)."""
        torch.manual_seed(config.seed * 7919 + spec.agent_index)
        policy = channel.build_policy(spec)
        return PPOLearner(policy, config.algo.ppo, seed=config.seed * 104_729 + spec.agent_index)

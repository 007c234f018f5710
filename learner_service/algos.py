"""Algorithm plugins (``marlmesh.algos``).

Every algorithm here is decentralized: one learner per agent, trained only on that agent's own fragments
(its observations, the messages it received, its actions and rewards), with a **local** critic.

========== ================ ==================================================================================
algo       channel          what it is
========== ================ ==================================================================================
``ippo``   any              PPO per agent; with ``none`` independent PPO, otherwise actor and critic also see
                            the received messages
``dgmappo`` ``dgat``        DG-MAPPO: PPO over the D-GAT policy, critic ``V_i(LayerNorm([o_i, ô_i]))``
``mfppo``  ``meanfield``    PPO with the neighbours' mean summary as input to actor and critic
``co2po``  ``blackboard``   PPO-Lagrangian on the cost signal, cost critic, hazard head gating the messages
========== ================ ==================================================================================

An algorithm that needs a channel says so in ``required_channel``; ``marlmesh train`` fails at start with one
line naming the fix when ``channel.name`` differs (the channel is not picked silently, so the config file stays
the single description of a run). ``dgmappo``'s optional reward sharing runs in the agents
(:mod:`agent_service.reward_sharing`), its gossip parameter mixing between neighbour learners in
:mod:`learner_service.gossip`. The centralized reference ``mappo-central`` is not here: it lives in
:mod:`marlmesh.centralized` and has no per-agent learner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from marlmesh.config import Config
from marlmesh.interfaces import Channel
from marlmesh.plugins import check_channel
from marlmesh.policy_spec import PolicySpec

if TYPE_CHECKING:
    from learner_service.ppo import PPOLearner


class IPPO:
    """Decentralized PPO: one learner per agent, local critic on the agent's own inputs (no central critic).

    With channel ``none`` this is independent PPO; with a communicating channel the critic and actor also see
    the messages that agent received.
    """

    name: ClassVar[str] = "ippo"
    required_channel: ClassVar[str | None] = None
    """Channel this algorithm needs (None = any)."""
    centralized: ClassVar[bool] = False
    """A decentralized algorithm: one learner per agent, trained by that agent's learner service."""

    def build_learner(self, config: Config, spec: PolicySpec, channel: Channel) -> PPOLearner:
        """A :class:`PPOLearner` over a freshly initialised policy (seeded per agent).

        Raises:
            ConfigError: If the algorithm needs another channel.
        """
        import torch  # here, not at module level: the launcher loads this plugin to check names, without torch

        from learner_service.ppo import PPOLearner

        check_channel(self.name, self.required_channel, channel.name)
        torch.manual_seed(config.seed * 7919 + spec.agent_index)
        policy = channel.build_policy(spec)
        return PPOLearner(policy, config.algo.ppo, seed=config.seed * 104_729 + spec.agent_index)


class DGMAPPO(IPPO):
    """DG-MAPPO: PPO per agent over the K-hop D-GAT policy (``channel.name=dgat``) with a local critic.

    Options (``algo.dgmappo``): reward sharing with neighbours over the bus (the agents record the mixed reward
    in their fragments) and gossip (D-SGD) parameter mixing between neighbour learners after updates.
    """

    name: ClassVar[str] = "dgmappo"
    required_channel: ClassVar[str | None] = "dgat"


class MFPPO(IPPO):
    """Mean-field PPO: PPO per agent whose actor and critic see the neighbours' mean summary (``meanfield``)."""

    name: ClassVar[str] = "mfppo"
    required_channel: ClassVar[str | None] = "meanfield"


class CO2PO(IPPO):
    """Co2PO: hazard-gated blackboard communication and PPO-Lagrangian on the env's cost (``blackboard``)."""

    name: ClassVar[str] = "co2po"
    required_channel: ClassVar[str | None] = "blackboard"

    def build_learner(self, config: Config, spec: PolicySpec, channel: Channel) -> PPOLearner:
        """A :class:`~learner_service.co2po.Co2POLearner` over a fresh blackboard policy.

        Raises:
            ConfigError: If the channel is not ``blackboard``.
        """
        import torch

        from learner_service.co2po import Co2POLearner

        check_channel(self.name, self.required_channel, channel.name)
        torch.manual_seed(config.seed * 7919 + spec.agent_index)
        policy = channel.build_policy(spec)
        return Co2POLearner(
            policy,
            config.algo.ppo,
            config.algo.co2po,
            config.channel.blackboard,
            seed=config.seed * 104_729 + spec.agent_index,
        )

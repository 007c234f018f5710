"""B env copies stepped for all N agents by one process, with the env service's exact semantics.

The env service's logic (:class:`env_service.node.EnvNode`: autoreset, truncation, final observations, costs,
episode statistics, ``env.obs_radius``) is reused as is, in process: every agent joins it and its barrier is
served by one thread per agent, so a centralized run sees the same environment as the decentralized ones.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from env_service.node import EnvNode
from marlmesh.config import Config
from marlmesh.observation import AgentObservation
from marlmesh.policy_spec import build_policy_spec


class JointEnv:
    """All agents of B env copies, stepped jointly.

    Args:
        config: The run's config (``env`` section, ``channel.message_dim``, ``algo.ppo.hidden_sizes``).
        seed: Copy ``b`` is first reset with seed ``seed + b`` (like the env service).
        num_envs: B.
    """

    def __init__(self, config: Config, seed: int, num_envs: int) -> None:
        self.node = EnvNode(config.env, seed=seed, num_envs=num_envs)
        self.num_agents = self.node.num_agents
        self.num_envs = self.node.num_envs
        process = f"central-{os.getpid()}"
        self.views: list[AgentObservation] = [self.node.join(a, process) for a in range(self.num_agents)]
        self._pool = ThreadPoolExecutor(max_workers=self.num_agents, thread_name_prefix="joint-env")
        self.specs = [
            build_policy_spec(config, a, self.num_agents, self.node.obs_spaces[a], self.node.act_spaces[a])
            for a in range(self.num_agents)
        ]

    def step(self, actions: list[np.ndarray]) -> list[AgentObservation]:
        """Apply one action batch ``[B, ...]`` per agent; return every agent's view of the next tick.

        Raises:
            RuntimeError: If the env did not apply an agent's action (never expected in one process).
        """
        tick = self.views[0].tick
        results = list(self._pool.map(lambda a: self.node.step(a, tick, actions[a]), range(self.num_agents)))
        if not all(applied for _, applied in results):
            raise RuntimeError(f"the env did not apply every agent's action at tick {tick}")
        self.views = [view for view, _ in results]
        return self.views

    @property
    def env_steps(self) -> int:
        """Single-env steps so far, summed over the B copies."""
        return self.node.env_steps

    def close(self) -> None:
        """Stop the worker threads and close the env copies."""
        self._pool.shutdown(wait=True)
        self.node.close()

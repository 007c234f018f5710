"""The single-process reference of ``bench e2e``: the same env copies and policies in one process.

The same B env copies and the same N staged policies, vectorized in one process (no gRPC, no bus, no barrier).

Per step: the staged loop (:mod:`marlmesh.staged_loop`) for every agent over an in-process exchange with ideal
links (every message heard); then the env copies step with the joint action and reset when their episode ends,
through the env service's own :class:`~env_service.copies.EnvCopies` (a vectorized env in one call, a PettingZoo
env copy by copy), so both sides of the comparison step the env the same way.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from marlmesh.config import BusConfig, Config
from marlmesh.staged_loop import StepView, act, communicate


class SingleProcessRollout:
    """B env copies and N policies stepped in this process.

    Args:
        config: The run config (env, channel, ``env.num_envs`` = B, ``eval.deterministic``).
        policies: One torch staged policy per agent (e.g. from :func:`marlmesh.bench.meshrun.initial_policies`).
    """

    def __init__(self, config: Config, policies: list[Any]) -> None:
        import torch

        from comm_bus.exchange import local_exchange
        from env_service.copies import EnvCopies
        from marlmesh import plugins
        from marlmesh.policies.torch_runtime import TorchRuntime

        torch.set_num_threads(config.train.torch_threads)  # as every agent process does
        self.config = config
        self.channel = plugins.load("channels", config.channel.name)(config.channel)
        self.runtimes = [TorchRuntime(p) for p in policies]
        self.num_agents = len(policies)
        self.exchange = (
            local_exchange(self.num_agents, config=BusConfig(), rounds=self.channel.rounds)
            if self.channel.rounds
            else None
        )
        self.tick = 0
        self.num_envs = config.env.num_envs
        self.copies = EnvCopies(config.env, config.seed, 0, self.num_envs)
        self.obs: list[np.ndarray] = self.copies.reset().obs
        self.cpu_ms_per_tick = 0.0

    def _decide(self) -> list[np.ndarray]:
        n = self.num_agents
        views = {i: StepView(self.tick, self.obs[i], range(n)) for i in range(n)}
        staged = communicate(self.channel, dict(enumerate(self.runtimes)), views, self.exchange, num_agents=n)
        self.tick += 1
        deterministic = self.config.eval.deterministic
        return [act(rt, staged[i], deterministic)[0] for i, rt in enumerate(self.runtimes)]

    def step(self) -> None:
        """One batched step: decide for every agent, then step and (on episode end) reset every env copy."""
        self.obs = self.copies.step(self._decide()).obs

    def measure(self, warmup_s: float, seconds: float) -> float:
        """Env steps (summed over the B copies) per second over ``seconds`` after ``warmup_s``.

        Also sets :attr:`cpu_ms_per_tick`: this process's CPU milliseconds per batched step in that window.
        """
        end = time.monotonic() + warmup_s
        while time.monotonic() < end:
            self.step()
        steps = 0
        cpu = time.process_time()
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            self.step()
            steps += 1
        self.cpu_ms_per_tick = 1000 * (time.process_time() - cpu) / max(1, steps)
        return steps * self.num_envs / elapsed

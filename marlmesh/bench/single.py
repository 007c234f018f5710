"""The single-process reference of ``bench e2e``: the same env copies and policies in one process.

The same B env copies and the same N staged policies, vectorized in one process (no gRPC, no bus, no barrier).

Per step: every agent's ``encode``; per round, every agent's inbox is built by its channel from the other
agents' payloads (every message heard, as on an ideal bus) and the next round runs; then ``act`` and
``sample``; then each env copy steps with the joint action and resets when its episode ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from marlmesh.config import Config


@dataclass
class _Heard:
    """A peer's message as a channel's ``inbox`` expects it (every row present)."""

    payload: dict[str, np.ndarray]
    rows: None = None


class SingleProcessRollout:
    """B env copies and N policies stepped in this process.

    Args:
        config: The run config (env, channel, ``env.num_envs`` = B, ``eval.deterministic``).
        policies: One torch staged policy per agent (e.g. from :func:`marlmesh.bench.meshrun.initial_policies`).
    """

    def __init__(self, config: Config, policies: list[Any]) -> None:
        import torch

        from marlmesh import plugins
        from marlmesh.envs import make_env
        from marlmesh.policies.torch_runtime import TorchRuntime

        torch.set_num_threads(config.train.torch_threads)  # as every agent process does
        self.config = config
        self.channel = plugins.load("channels", config.channel.name)(config.channel)
        self.runtimes = [TorchRuntime(p) for p in policies]
        self.num_agents = len(policies)
        self.num_envs = config.env.num_envs
        self.envs = [make_env(config.env) for _ in range(self.num_envs)]
        self.names = list(self.envs[0].possible_agents)
        self.discrete = [p.actor.discrete for p in policies]
        self.obs = [np.zeros((self.num_envs, *p.spec.obs_shape), np.float32) for p in policies]
        self.cpu_ms_per_tick = 0.0
        for b, env in enumerate(self.envs):
            obs, _ = env.reset(seed=config.seed + b)
            self._write(b, obs)

    def _write(self, b: int, obs: dict[str, np.ndarray]) -> None:
        for a, name in enumerate(self.names):
            self.obs[a][b] = obs.get(name, 0.0)

    def _decide(self) -> list[np.ndarray]:
        n, batch = self.num_agents, self.num_envs
        encoded = [rt.encode(self.obs[i]) for i, rt in enumerate(self.runtimes)]
        states = [s for s, _ in encoded]
        outboxes = [o for _, o in encoded]
        inboxes: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
        for k in range(self.channel.rounds):
            heard = [_Heard(self.channel.payload(o)) for o in outboxes]
            for i, rt in enumerate(self.runtimes):
                msgs, mask, _ = self.channel.inbox({j: heard[j] for j in range(n) if j != i}, batch, n)
                inboxes[i].append((msgs, mask))
                if k + 1 < self.channel.rounds:
                    states[i], outboxes[i] = rt.round(k + 1, states[i], (msgs, mask))
        deterministic = self.config.eval.deterministic
        return [rt.sample(rt.act(states[i], inboxes[i]), deterministic)[0] for i, rt in enumerate(self.runtimes)]

    def step(self) -> None:
        """One batched step: decide for every agent, then step and (on episode end) reset every env copy."""
        actions = self._decide()
        for b, env in enumerate(self.envs):
            joint = {
                name: int(actions[a][b]) if self.discrete[a] else actions[a][b]
                for a, name in enumerate(self.names)
                if name in env.agents
            }
            obs, _, terms, truncs, _ = env.step(joint)
            if any(terms.values()) or any(truncs.values()) or not env.agents:
                obs, _ = env.reset()
            self._write(b, obs)

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

"""A contiguous block of the env service's B env copies, stepped and reset in this process.

:class:`EnvCopies` owns copies ``[lo, hi)``: it steps each with its slice of the joint action, reads every
copy's collisions (before any reset) and agent positions, and resets a copy as soon as any agent's episode
ends in it (writing that episode's last observation to ``final``). The episode bookkeeping (returns,
lengths, records) stays in :class:`env_service.node.EnvNode`; this class only produces per-copy arrays, so
the same block can run in the env service itself or in a worker process (:mod:`env_service.env_workers`).

A vectorized env plugin (:class:`marlmesh.envs.vector.base.VectorEnv`) is built once for the whole block and
stepped in one call (:meth:`~marlmesh.envs.vector.base.VectorEnv.step_autoreset`, the same semantics); any other
env is a Python loop over PettingZoo ParallelEnv copies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from marlmesh.config import EnvConfig
from marlmesh.envs import is_vectorized_env, make_env, make_vector_env
from marlmesh.envs.adapter import EnvAdapter, adapter_for
from marlmesh.envs.vector.base import VectorEnv
from marlmesh.spaces import SpaceSpec

log = logging.getLogger(__name__)


@dataclass
class CopyArrays:
    """What one step (or the first reset) of a block of ``b`` copies produced, agent-major.

    Attributes:
        obs: Per agent ``[b, *obs_shape]`` float32: the observation agents act on next (the new episode's first
            one in copies that were just reset).
        final: Per agent ``[b, *obs_shape]``: the ended episode's last observation (zeros where none ended).
        reward: ``[N, b]`` float32.
        terminated: ``[N, b]`` bool.
        truncated: ``[N, b]`` bool (agents still running in a copy whose episode ended are truncated).
        cost: ``[N, b]`` float32 collisions of the stepped state (zeros if the env has no collisions).
        positions: ``[N, b, D]`` float32 after the resets, or None if the env has no positions.
        ended: ``[b]`` bool: the copy's episode ended at this step (and the copy was reset).
    """

    obs: list[np.ndarray]
    final: list[np.ndarray]
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    cost: np.ndarray
    positions: np.ndarray | None
    ended: np.ndarray


class EnvCopies:
    """Env copies ``[lo, hi)`` of one env service, built and first reset with seed ``seed + b`` for copy ``b``.

    Args:
        config: The ``env`` section.
        seed: Base seed of the env service.
        lo: First copy index.
        hi: One past the last copy index.

    Raises:
        ValueError: If ``lo >= hi`` or the env has no agents.
    """

    def __init__(self, config: EnvConfig, seed: int, lo: int, hi: int) -> None:
        if not 0 <= lo < hi:
            raise ValueError(f"an env copy block needs 0 <= lo < hi, got [{lo}, {hi})")
        self.lo, self.hi = lo, hi
        self.vector: VectorEnv | None = None
        if is_vectorized_env(config):
            self.vector = make_vector_env(config, hi - lo)
            self.envs = []
            self.template = make_env(config)
        else:
            self.envs = [make_env(config) for _ in range(hi - lo)]
            self.template = self.envs[0]
        self.agent_names: list[str] = list(self.template.possible_agents)
        if not self.agent_names:
            raise ValueError(f"env {config.name!r} has no agents")
        self.adapter: EnvAdapter = adapter_for(self.template)
        self._discrete = [
            SpaceSpec.from_gym(self.template.action_space(a)).kind == "discrete" for a in self.agent_names
        ]
        self._obs_shapes = [self.template.observation_space(a).shape for a in self.agent_names]
        self._seed = seed

    def reset(self) -> CopyArrays:
        """First reset of every copy (copy ``b`` with seed ``seed + b``)."""
        if self.vector is not None:
            obs = self.vector.reset(self._seed + self.lo)
            out = self._empty()
            out.obs = obs
            out.positions = self.vector.positions() if out.positions is not None else None
            return out
        out = self._empty()
        for i, env in enumerate(self.envs):
            obs, _ = env.reset(seed=self._seed + self.lo + i)
            self._write_obs(out.obs, i, obs)
        self._write_positions(out)
        return out

    def step(self, actions: list[np.ndarray]) -> CopyArrays:
        """Step every copy with its rows of ``actions`` (per agent, ``[hi - lo, ...]``); reset ended copies."""
        if self.vector is not None:
            return self._step_vector(actions)
        names = self.agent_names
        out = self._empty()
        stepped = []
        for i, env in enumerate(self.envs):
            alive = set(env.agents)
            joint = {
                name: (int(actions[a][i]) if self._discrete[a] else actions[a][i])
                for a, name in enumerate(names)
                if name in alive
            }
            obs, rewards, terms, truncs, _ = env.step(joint)
            out.reward[:, i] = [rewards.get(name, 0.0) for name in names]
            out.terminated[:, i] = [terms.get(name, False) for name in names]
            out.truncated[:, i] = [truncs.get(name, False) for name in names]
            stepped.append(obs)
        # Collisions of the stepped state of every copy at once (before any reset), then per-copy episode ends.
        if self.adapter.has_collisions:
            out.cost[:] = self.adapter.collisions_batch(self.envs).T
        ended_any = (out.terminated | out.truncated).any(axis=0)
        for i, env in enumerate(self.envs):
            obs = stepped[i]
            if ended_any[i] or not env.agents:
                out.ended[i] = True
                agent_ended = out.terminated[:, i] | out.truncated[:, i]
                for a, name in enumerate(names):
                    if name in obs:
                        out.final[a][i] = obs[name]
                    if not agent_ended[a]:
                        out.truncated[a, i] = True
                obs, _ = env.reset()
            self._write_obs(out.obs, i, obs)
        self._write_positions(out)
        return out

    def _step_vector(self, actions: list[np.ndarray]) -> CopyArrays:
        assert self.vector is not None
        step = self.vector.step_autoreset(actions)
        has_positions = self.adapter.has_positions
        return CopyArrays(
            obs=step.obs,
            final=step.final,
            reward=step.reward,
            terminated=step.terminated,
            truncated=step.truncated,
            cost=step.cost if self.adapter.has_collisions else np.zeros_like(step.cost),
            positions=step.positions if has_positions else None,
            ended=step.ended,
        )

    def close(self) -> None:
        """Close every copy (best effort)."""
        if self.vector is not None:
            self.vector.close()
        for env in self.envs:
            try:
                env.close()
            except Exception:  # an env's close() bug must not block shutdown
                log.debug("env close failed", exc_info=True)

    def _empty(self) -> CopyArrays:
        b, n = self.hi - self.lo, len(self.agent_names)
        obs = [np.zeros((b, *shape), np.float32) for shape in self._obs_shapes]
        d = self.adapter.position_dim
        return CopyArrays(
            obs=obs,
            final=[np.zeros_like(o) for o in obs],
            reward=np.zeros((n, b), np.float32),
            terminated=np.zeros((n, b), bool),
            truncated=np.zeros((n, b), bool),
            cost=np.zeros((n, b), np.float32),
            positions=np.zeros((n, b, d), np.float32) if self.adapter.has_positions else None,
            ended=np.zeros(b, bool),
        )

    def _write_obs(self, target: list[np.ndarray], i: int, obs: dict[str, np.ndarray]) -> None:
        for a, name in enumerate(self.agent_names):
            target[a][i] = obs[name] if name in obs else 0.0

    def _write_positions(self, out: CopyArrays) -> None:
        if out.positions is not None:
            out.positions[:] = self.adapter.positions_batch(self.envs).transpose(1, 0, 2)

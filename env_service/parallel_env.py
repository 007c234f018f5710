"""A running env_service seen as a standard PettingZoo ``ParallelEnv`` (interop with other trainers and tools).

``RemoteParallelEnv("host:50051")`` joins the service as every agent and steps them together: one ``Step``
RPC per agent, issued concurrently (each blocks at the service's barrier until all have arrived).

Semantics follow the service (see :mod:`env_service.node`), which must host exactly one env copy
(``python -m env_service --num-envs 1``):

- The service seeds its env once at start (``--seed S``: the copy is reset with seed ``S``) and resets it
  by itself when an episode ends, continuing the env's RNG. A local env reset once with ``seed=S`` and
  then with ``reset()`` sees the same episodes. ``reset(seed=...)`` cannot reseed a remote env: the seed is
  only accepted when it equals the ``seed`` this client was told the service uses (or when that is unknown).
- :meth:`reset` returns the first observation of the current episode; it is only possible at the start of
  the session or after an episode ended (a mid-episode reset raises, since the service cannot restart an
  episode on demand).
- :meth:`step` returns the rewards of the step and, when the episode ends, the episode's last observation
  (the service has already started the next one, which the following :meth:`reset` returns).

A service started with ``runtime.tls`` (mutual TLS, :mod:`marlmesh.tls`) needs a client certificate of its CA:
``RemoteParallelEnv(address, tls=config.runtime.tls)`` dials as the run's ``launcher`` identity (from
``keys_dir`` or ``ca_file/cert_file/key_file``); ``tls_name`` picks another identity of the keys dir, and a
loaded :class:`~marlmesh.tls.TlsIdentity` is used as given.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marlmesh.config import TlsConfig
from marlmesh.env_client import EnvClient
from marlmesh.observation import AgentObservation
from marlmesh.spaces import SpaceSpec
from marlmesh.tls import LAUNCHER, TlsIdentity, load_identity


def to_gym_space(spec: SpaceSpec) -> spaces.Space:
    """The gymnasium space of a marlmesh :class:`~marlmesh.spaces.SpaceSpec`."""
    if spec.kind == "discrete":
        return spaces.Discrete(spec.n)
    shape = tuple(spec.shape)
    low = np.asarray(spec.low, np.float32).reshape(shape) if spec.low else -np.inf
    high = np.asarray(spec.high, np.float32).reshape(shape) if spec.high else np.inf
    return spaces.Box(low=low, high=high, shape=shape, dtype=np.float32)


class RemoteParallelEnv(ParallelEnv):
    """PettingZoo Parallel API over a running env_service.

    Args:
        address: ``host:port`` of the env service.
        seed: The seed the service was started with, if known (checked against ``reset(seed=...)``).
        timeout_s: How long to wait for the service to answer at start, and the deadline of unary calls.
        tls: Dial with mutual TLS: a ``runtime.tls`` config section (plaintext when not enabled), or a loaded
            identity. None: plaintext.
        tls_name: The identity whose certificate a ``runtime.tls`` section selects (default ``launcher``).

    Raises:
        ConnectionError: If the service does not answer within ``timeout_s`` (e.g. a TLS handshake failed).
        ConfigError: If a TLS file is missing or wrong (the message names the setting and the file).
        ValueError: If the service hosts more than one env copy.
    """

    metadata = {"name": "marlmesh_remote_v0", "is_parallelizable": True}

    def __init__(
        self,
        address: str,
        *,
        seed: int | None = None,
        timeout_s: float = 30.0,
        tls: TlsConfig | TlsIdentity | None = None,
        tls_name: str = LAUNCHER,
    ) -> None:
        self.address = address
        self.service_seed = seed
        identity = load_identity(tls, tls_name) if isinstance(tls, TlsConfig) else tls
        self._client = EnvClient(address, timeout_s=timeout_s, step_timeout_s=timeout_s + 60.0, tls_identity=identity)
        spec = self._client.wait_ready(timeout_s)
        if spec.num_envs != 1:
            raise ValueError(
                f"env_service at {address} hosts {spec.num_envs} env copies; RemoteParallelEnv needs exactly 1 "
                "(start it with --num-envs 1)"
            )
        ordered = sorted(spec.agents, key=lambda a: a.index)
        self.possible_agents = [a.name for a in ordered]
        self._index = {a.name: a.index for a in ordered}
        self._obs_spaces = {a.name: to_gym_space(SpaceSpec.from_proto(a.observation_space)) for a in ordered}
        self._act_specs = {a.name: SpaceSpec.from_proto(a.action_space) for a in ordered}
        self._act_spaces = {n: to_gym_space(s) for n, s in self._act_specs.items()}
        self.agents: list[str] = []
        self._views: dict[str, AgentObservation] | None = None
        self._episode_start = False
        self._process_id = f"remote-{uuid.uuid4().hex}"
        self._joined = False

    # -- spaces ------------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        """Observation space of ``agent``."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """Action space of ``agent``."""
        return self._act_spaces[agent]

    # -- Parallel API --------------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Observations of the first step of the current episode.

        Raises:
            ValueError: If ``seed`` differs from the service's seed.
            RuntimeError: If called in the middle of an episode.
        """
        if seed is not None and self.service_seed is not None and seed != self.service_seed:
            raise ValueError(
                f"the env_service at {self.address} was seeded with {self.service_seed}; a remote env cannot be "
                f"reseeded with {seed} (restart the service with --seed {seed})"
            )
        if not self._joined:
            self._views = {
                name: self._client.join(index, f"{self._process_id}-{index}")[1] for name, index in self._index.items()
            }
            self._joined = True
            self._episode_start = next(iter(self._views.values())).tick == 0
            if not self._episode_start:
                raise RuntimeError(
                    f"env_service at {self.address} is in the middle of an episode (tick "
                    f"{next(iter(self._views.values())).tick}); connect to a freshly started service"
                )
        elif not self._episode_start:
            raise RuntimeError("reset() in the middle of an episode: a remote env resets only when an episode ends")
        assert self._views is not None
        self.agents = list(self.possible_agents)
        return {n: v.obs[0].copy() for n, v in self._views.items()}, {n: {} for n in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Submit every live agent's action; returns ``(obs, rewards, terminations, truncations, infos)``.

        Raises:
            RuntimeError: If called before :meth:`reset` or after the episode ended.
            ValueError: If an agent's action is missing.
        """
        if self._views is None or not self.agents:
            raise RuntimeError("step() needs reset() first (and again after an episode ends)")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agents {missing}")
        futures = {}
        for name in self.agents:
            index = self._index[name]
            tick = self._views[name].tick
            action = self._batch_action(name, actions[name])
            futures[name] = self._client.step_future(index, tick, action)
        views = {}
        for name, fut in futures.items():
            try:
                views[name] = self._client.step_result(fut)[0]
            except grpc.RpcError as exc:
                raise ConnectionError(f"env_service at {self.address}: {exc.code().name}: {exc.details()}") from None
        self._views.update(views)
        obs, rew, term, trunc, infos = {}, {}, {}, {}, {}
        ended = False
        for name, v in views.items():
            done = bool(v.terminated[0] or v.truncated[0])
            ended = ended or done
            obs[name] = (v.final_obs[0] if done else v.obs[0]).copy()
            rew[name] = float(v.reward[0])
            term[name] = bool(v.terminated[0])
            trunc[name] = bool(v.truncated[0])
            infos[name] = {"cost": float(v.cost[0])}
        self._episode_start = ended
        self.agents = [] if ended else list(self.agents)
        return obs, rew, term, trunc, infos

    def _batch_action(self, name: str, action: Any) -> np.ndarray:
        spec = self._act_specs[name]
        if spec.kind == "discrete":
            return np.asarray([int(action)], np.int64)
        return np.asarray(action, np.float32).reshape(1, *spec.shape)

    def render(self) -> None:
        """Rendering happens in the service, not here."""
        return None

    def state(self) -> np.ndarray:
        """Not available remotely."""
        raise NotImplementedError("the global state is not served by env_service")

    def close(self) -> None:
        """Leave the service (it stops waiting for these agents) and close the channel."""
        if self._joined:
            for index in self._index.values():
                try:
                    self._client.leave(index)
                except grpc.RpcError:
                    pass
            self._joined = False
        self._client.close()

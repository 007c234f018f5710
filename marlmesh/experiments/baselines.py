"""Evaluation-only baselines: a ``random`` policy and scripted controllers chosen per task.

Both act through the same evaluation path as a trained policy: an ``env_service`` process hosts B copies
of the env with the evaluation seed (``seed + eval.seed_offset``), one client per agent joins and steps it
behind the barrier, and the episode statistics come from the env service. A baseline cell writes a
``summary.json`` with the same ``eval.*`` fields as ``marlmesh train`` (``env_steps`` 0, no bus traffic)::

    python -m marlmesh.baselines scripted --run-dir DIR [-c CONFIG] [--set key=value]... [--episodes N]

The scripted controller (docs/benchmarks.md, "Baselines": about -27 per episode against about -79 for random, N=3,
25 steps, local_ratio 0.5) reads the mpe2 ``simple_spread`` observation of its own agent
(``[own vel (2), own pos (2), landmark rel pos (2N), other agents rel pos (2(N-1)), comm (2(N-1))]``),
solves the agent-to-landmark assignment that minimises the summed distance (every agent sees every agent
and landmark, so all agents compute the same assignment), and steers its predicted resting point (the point
where the agent would stop if it did nothing afterwards, given MPE's damping) onto its landmark: it accelerates
when far and brakes when close. With discrete actions it picks the action whose resting point is closest; with
continuous actions (``env.kwargs.continuous_actions=true``, a ``Box(0, 1, (5,))`` whose force is
``(a2 - a1, a4 - a3)``) it solves for the force that puts the resting point on the landmark, clipped per axis
to the largest force, so it can also push diagonally.

Two weaker variants differ only in how an agent picks its landmark; they are the ceilings of conventions that
decentralized learners can settle on (``python -m marlmesh.spread_diagnostics`` tells which one a run uses):

- ``scripted-priority``: agents take turns in index order; each takes the landmark nearest to it that no
  lower-indexed agent took (every agent can compute this from its own observation).
- ``scripted-fixed``: agent i always heads for landmark i, whatever the positions (fixed roles: no
  coordination needed at all).

Which scripted controller a ``scripted*`` baseline uses depends on ``env.name`` (:data:`SCRIPTED_TASKS`; an env
not listed gets the simple_spread controller, which checks the observation layout). For the speaker-listener
task without the env's channel (``marlmesh.speaker_listener_nocomm``, docs/tasks.md) the speaker does nothing
(its action has no env effect) and the listener steers its resting point like the spread controller:

- ``scripted``: onto the goal landmark, read from the goal colour that only the reference-only setting
  ``env.kwargs.goal_in_obs=true`` puts in its observation: perfect communication.
- ``scripted-centroid``: onto the centroid of the three landmarks, the point that minimises the expected squared
  distance to a goal it cannot know: no communication.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc
import numpy as np

from marlmesh.config import Config, ConfigError, dump_config, load_config
from marlmesh.experiments.pursuit_controller import scripted_pursuit
from marlmesh.spaces import SpaceSpec
from marlmesh.tls import TlsIdentity

if TYPE_CHECKING:
    from pettingzoo import ParallelEnv

    from marlmesh.envs.vector.base import VectorEnv

#: MPE physics (mpe2 ``core.World`` / ``Agent`` defaults, used by simple_spread).
MPE_DT = 0.1
MPE_DAMPING = 0.25
MPE_SENSITIVITY = 5.0
#: Discrete MPE actions: no-op, -x, +x, -y, +y.
MPE_DIRECTIONS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.float64)

ASSIGNMENTS = ("hungarian", "priority", "fixed")
"""How :class:`ScriptedSpreadPolicy` picks its landmark (see the module docstring)."""


class BaselinePolicy(Protocol):
    """A batched policy for one agent: observations ``[B, obs_dim]`` -> actions ``[B]`` (or ``[B, *shape]``)."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations."""
        ...


class RandomPolicy:
    """Uniform random actions.

    Args:
        space: The agent's action space.
        seed: RNG seed (each agent gets its own).
    """

    def __init__(self, space: SpaceSpec, seed: int) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Sample one action per env copy."""
        batch = obs.shape[0]
        if self.space.kind == "discrete":
            return self.rng.integers(0, self.space.n, size=batch, dtype=np.int64)
        low = np.asarray(self.space.low or [-1.0], np.float32)
        high = np.asarray(self.space.high or [1.0], np.float32)
        shape = (batch, *self.space.shape)
        return self.rng.uniform(np.broadcast_to(low, self.space.shape), np.broadcast_to(high, self.space.shape), shape)


def best_assignment(cost: np.ndarray) -> np.ndarray:
    """Landmark index per agent minimising the summed cost (exact for up to 8 agents, greedy beyond).

    Args:
        cost: ``[N agents, L landmarks]`` with ``L >= N``.
    """
    n, m = cost.shape
    if n <= 8 and math.perm(m, n) <= 40_320:
        best, best_cost = None, math.inf
        for perm in itertools.permutations(range(m), n):
            c = cost[range(n), perm].sum()
            if c < best_cost - 1e-12:
                best, best_cost = perm, c
        return np.asarray(best)
    out = np.full(n, -1)
    c = cost.astype(float).copy()
    for _ in range(n):
        i, j = np.unravel_index(np.argmin(c), c.shape)
        out[i] = j
        c[i, :] = np.inf
        c[:, j] = np.inf
    return out


NO_LANDMARK_COST = 1e6
"""Assignment cost of the placeholder landmarks an agent gets when it sees fewer landmarks than agents."""


#: The continuous MPE action space: ``Box(0, 1, (5,))``, force ``(a2 - a1, a4 - a3)`` (a0 is unused).
MPE_BOX = SpaceSpec(kind="box", shape=(5,), low=(0.0,) * 5, high=(1.0,) * 5)


def resting_displacement(vel: np.ndarray, force: np.ndarray) -> np.ndarray:
    """Displacement until an MPE agent stops if it applies ``force`` (in [-1, 1] per axis) once, then nothing.

    mpe2 integrates the position with the current velocity first, then damps and accelerates; afterwards the
    velocity decays geometrically by ``1 - MPE_DAMPING`` per step.
    """
    v_next = vel * (1 - MPE_DAMPING) + force * MPE_SENSITIVITY * MPE_DT
    return vel * MPE_DT + v_next * MPE_DT / MPE_DAMPING


def force_to_rest_at(vel: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The force (clipped to [-1, 1] per axis) whose resting displacement is ``goal`` (inverse of the above)."""
    v_next = (goal - vel * MPE_DT) * MPE_DAMPING / MPE_DT
    return np.clip((v_next - vel * (1 - MPE_DAMPING)) / (MPE_SENSITIVITY * MPE_DT), -1.0, 1.0)


def box_action(force: np.ndarray) -> np.ndarray:
    """The ``Box(0, 1, (5,))`` action that applies ``force``: ``[0, -fx+, fx+, -fy+, fy+]`` (positive parts)."""
    fx, fy = float(force[0]), float(force[1])
    return np.array([0.0, max(-fx, 0.0), max(fx, 0.0), max(-fy, 0.0), max(fy, 0.0)], np.float32)


def mpe_move_is_continuous(space: SpaceSpec, who: str) -> bool:
    """Whether ``space`` is MPE's continuous move space (``Box(0, 1, (5,))``) rather than ``Discrete(5)``.

    Raises:
        ValueError: If it is neither (``who`` names the controller in the message).
    """
    if space == MPE_BOX:
        return True
    if space.kind != "discrete" or space.n != 5:
        raise ValueError(
            f"{who} needs an MPE move action space, Discrete(5) or Box(0, 1, (5,)), "
            f"got {space.kind} {space.n if space.kind == 'discrete' else space.shape}"
        )
    return False


def steer(vel: np.ndarray, target: np.ndarray, continuous: bool) -> int | np.ndarray:
    """The MPE move that brings the resting point of an agent moving at ``vel`` onto ``target`` (relative).

    Discrete: the move whose resting point is closest; continuous: the ``Box(0, 1, (5,))`` action whose force
    (clipped per axis) puts the resting point on the target.
    """
    if continuous:
        return box_action(force_to_rest_at(vel, target))
    rest = resting_displacement(vel, MPE_DIRECTIONS)
    return int(np.argmin(np.linalg.norm(rest - target, axis=1)))


class ScriptedSpreadPolicy:
    """Landmark assignment each step (Hungarian by default) + braking, for mpe2 ``simple_spread``.

    Discrete or continuous actions; with ``env.time_feature`` it ignores the time value at the end of the
    observation. With ``env.obs_radius`` the controller acts on the same partial observation as a learned
    policy: it assigns itself and the agents it sees to the landmarks it sees (an agent that gets no visible
    landmark, or sees none, heads for the centre of the arena, where landmarks are spawned).

    Args:
        agent_index: This agent's index (its place in the env's agent order).
        num_agents: N (simple_spread has N landmarks).
        space: The agent's action space: ``Discrete(5)`` or ``Box(0, 1, (5,))``.
        obs_dim: Length of the observation vector: ``6 N``, or ``8 N - 1`` with ``env.obs_radius`` (one
            visibility flag per landmark and per other agent appended).
        assignment: One of :data:`ASSIGNMENTS`: ``hungarian`` (the summed distance is minimal), ``priority``
            (in index order, each agent takes the nearest landmark left) or ``fixed`` (agent i takes landmark
            i). Under ``env.obs_radius`` each rule applies to what the agent sees; a ``fixed`` agent whose
            landmark is out of sight heads for the centre.

    Raises:
        ValueError: If the spaces are not those of simple_spread, or for an unknown assignment.
    """

    def __init__(
        self, agent_index: int, num_agents: int, space: SpaceSpec, obs_dim: int, assignment: str = "hungarian"
    ) -> None:
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"unknown landmark assignment {assignment!r} (known: {', '.join(ASSIGNMENTS)})")
        self.assignment = assignment
        self.continuous = mpe_move_is_continuous(space, "the scripted simple_spread controller")
        full, partial = 6 * num_agents, 8 * num_agents - 1
        masked = {full: False, partial: True, full + 1: False, partial + 1: True}
        """Whether a layout of this length has visibility flags; ``+ 1``: env.time_feature's value comes last."""
        if obs_dim not in masked:
            raise ValueError(
                f"the scripted baseline reads the simple_spread observation layout (6N = {full} values for "
                f"N={num_agents}, or {partial} with env.obs_radius; one more with env.time_feature), got "
                f"{obs_dim} values; is env.name mpe2.simple_spread_v3?"
            )
        self.index = agent_index
        self.n = num_agents
        self.others = [j for j in range(num_agents) if j != agent_index]
        self.flags_at = full if masked[obs_dim] else None
        """Start of the visibility flags (landmarks, then the other agents), or None (full observability)."""

    def target(self, ob: np.ndarray) -> np.ndarray:
        """Relative position of this agent's assigned landmark in one observation."""
        n = self.n
        landmarks = ob[4 : 4 + 2 * n].reshape(n, 2)
        rel = np.zeros((n, 2))
        rel[self.others] = ob[4 + 2 * n : 4 + 2 * n + 2 * (n - 1)].reshape(n - 1, 2)
        # fully observed = every landmark and agent visible (then this is the plain assignment over everyone)
        at = self.flags_at
        flags = np.ones(2 * n - 1, bool) if at is None else ob[at : at + 2 * n - 1] > 0.5
        seen = np.flatnonzero(flags[:n])
        team = sorted([self.index] + [j for m, j in enumerate(self.others) if flags[n + m]])
        centre = -ob[2:4]  # own position is absolute: the arena's centre relative to this agent
        if seen.size == 0:
            return centre
        if self.assignment == "fixed":
            return landmarks[self.index] if flags[self.index] else centre
        cost = np.linalg.norm(rel[team][:, None, :] - landmarks[seen][None, :, :], axis=-1)
        if self.assignment == "priority":
            for row in range(team.index(self.index) + 1):  # the agents before this one choose first
                pick = int(np.argmin(cost[row]))
                if not np.isfinite(cost[row, pick]):
                    return centre  # every landmark in sight is taken
                cost[:, pick] = np.inf
            return landmarks[seen[pick]]
        if len(team) > seen.size:  # more agents than landmarks in sight: the extra ones get no landmark
            cost = np.hstack([cost, np.full((len(team), len(team) - seen.size), NO_LANDMARK_COST)])
        pick = int(best_assignment(cost)[team.index(self.index)])
        return landmarks[seen[pick]] if pick < seen.size else centre

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One action per env copy, steering the predicted resting point onto the agent's landmark."""
        actions = [steer(ob[0:2], self.target(ob), self.continuous) for ob in np.asarray(obs, np.float64)]
        return np.stack(actions) if self.continuous else np.asarray(actions, np.int64)


class IdlePolicy:
    """Always action 0: an agent whose action has no effect (the speaker of ``speaker_listener_nocomm``).

    Args:
        space: The agent's action space (``Discrete``).

    Raises:
        ValueError: If the space is not discrete.
    """

    def __init__(self, space: SpaceSpec) -> None:
        if space.kind != "discrete":
            raise ValueError(f"the idle speaker needs a Discrete action space, got {space.kind} {space.shape}")

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Zeros, one per env copy."""
        return np.zeros(obs.shape[0], np.int64)


LISTENER_GOALS = ("told", "centroid")
"""Where :class:`ScriptedListenerPolicy` heads: the goal it is told, or the landmarks' centroid."""


class ScriptedListenerPolicy:
    """The speaker-listener task's listener: steer the resting point onto a landmark-derived target.

    The observation is ``[vel (2), landmarks relative to the listener (2 each), goal colour (3)]``; the goal
    colour is there only with ``env.kwargs.goal_in_obs=true``.

    Args:
        space: ``Discrete(5)`` or ``Box(0, 1, (5,))``.
        obs_dim: 8 (no goal colour) or 11.
        goal: ``told`` (head for the goal landmark: needs the goal colour) or ``centroid`` (head for the
            centroid of the landmarks, ignoring any goal colour).

    Raises:
        ValueError: For another layout, an unknown goal, or ``told`` without the goal colour.
    """

    LANDMARKS = 3

    def __init__(self, space: SpaceSpec, obs_dim: int, goal: str) -> None:
        if goal not in LISTENER_GOALS:
            raise ValueError(f"unknown listener goal {goal!r} (known: {', '.join(LISTENER_GOALS)})")
        self.continuous = mpe_move_is_continuous(space, "the scripted listener")
        blind, told = 2 + 2 * self.LANDMARKS, 2 + 2 * self.LANDMARKS + 3
        if obs_dim not in (blind, told):
            raise ValueError(
                f"the scripted listener reads [vel (2), landmarks (6), goal colour (3, with goal_in_obs)], "
                f"i.e. {blind} or {told} values, got {obs_dim}"
            )
        if goal == "told" and obs_dim != told:
            raise ValueError(
                "the perfect-communication listener reads the goal from its observation, which only the "
                "reference-only setting env.kwargs.goal_in_obs=true gives it (use scripted-centroid without it)"
            )
        self.goal = goal

    def target(self, ob: np.ndarray) -> np.ndarray:
        """The target relative to the listener in one observation."""
        landmarks = ob[2 : 2 + 2 * self.LANDMARKS].reshape(self.LANDMARKS, 2)
        colour = ob[2 + 2 * self.LANDMARKS :]
        if self.goal == "centroid" or not colour.any():  # nothing heard (env.kwargs.goal_loss): the best guess
            return landmarks.mean(axis=0)
        return landmarks[int(np.argmax(colour))]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One action per env copy."""
        actions = [steer(ob[0:2], self.target(ob), self.continuous) for ob in np.asarray(obs, np.float64)]
        return np.stack(actions) if self.continuous else np.asarray(actions, np.int64)


ScriptedFactory = Callable[[str, int, int, SpaceSpec, int, int], BaselinePolicy]
"""``(baseline name, agent index, N, action space, obs length, seed) -> policy`` of one task's scripted controller."""


@dataclass(frozen=True)
class ScriptedTask:
    """The scripted controllers of one task.

    Attributes:
        baselines: The scripted baseline names that fit the task.
        build: Builds one agent's controller for one of those names (a controller that draws random numbers
            seeds them from ``seed``; the deterministic ones ignore it).
    """

    baselines: tuple[str, ...]
    build: ScriptedFactory


def _spread_controller(
    name: str, agent_index: int, num_agents: int, action: SpaceSpec, obs_dim: int, seed: int
) -> BaselinePolicy:
    assignment = "hungarian" if name == "scripted" else name.removeprefix("scripted-")
    return ScriptedSpreadPolicy(agent_index, num_agents, action, obs_dim, assignment)


def _speaker_listener_controller(
    name: str, agent_index: int, num_agents: int, action: SpaceSpec, obs_dim: int, seed: int
) -> BaselinePolicy:
    if num_agents != 2:
        raise ValueError(f"speaker-listener has 2 agents, the env has {num_agents}")
    if agent_index == 0:
        return IdlePolicy(action)
    return ScriptedListenerPolicy(action, obs_dim, "told" if name == "scripted" else "centroid")


def _pursuit_controller(
    name: str, agent_index: int, num_agents: int, action: SpaceSpec, obs_dim: int, seed: int
) -> BaselinePolicy:
    return scripted_pursuit(agent_index, num_agents, action, obs_dim, seed)


SPREAD = ScriptedTask(("scripted", "scripted-priority", "scripted-fixed"), _spread_controller)
"""simple_spread: the Hungarian controller and its two weaker assignment variants."""
SPEAKER_LISTENER = ScriptedTask(("scripted", "scripted-centroid"), _speaker_listener_controller)
"""speaker-listener without the env's channel: perfect communication (goal_in_obs) and none (centroid)."""
PURSUIT = ScriptedTask(("scripted",), _pursuit_controller)
"""pursuit: chase the prey in sight, else sweep (perfect communication with ``env.kwargs.shared_vision=true``)."""

SCRIPTED_TASKS: dict[str, ScriptedTask] = {
    "mpe2.simple_spread_v3": SPREAD,
    "marlmesh.simple_spread": SPREAD,
    "marlmesh.speaker_listener_nocomm": SPEAKER_LISTENER,
    "marlmesh.pursuit": PURSUIT,
}
"""``env.name`` -> its scripted controllers; an env not listed gets :data:`SPREAD` (which checks the layout)."""

BASELINES = ("random", *dict.fromkeys(name for task in (SPREAD, *SCRIPTED_TASKS.values()) for name in task.baselines))
"""Every baseline name: ``random`` fits any env; which ``scripted*`` names fit depends on the task."""


def scripted_task(env_name: str) -> ScriptedTask:
    """The scripted controllers of ``env.name`` (:data:`SPREAD` for an env not in :data:`SCRIPTED_TASKS`)."""
    return SCRIPTED_TASKS.get(env_name, SPREAD)


def make_policy(
    name: str, env_name: str, agent_index: int, num_agents: int, action: SpaceSpec, obs_dim: int, seed: int
) -> BaselinePolicy:
    """Build a baseline policy by name (one of :data:`BASELINES`) for one agent of env ``env_name``.

    Raises:
        ValueError: For an unknown name, or a baseline that does not fit the env (the message names both).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    if name == "random":
        return RandomPolicy(action, seed * 1000 + agent_index)
    task = scripted_task(env_name)
    if name not in task.baselines:
        raise ValueError(
            f"baseline {name!r} does not fit env {env_name!r} (its scripted baselines: {', '.join(task.baselines)})"
        )
    try:
        return task.build(name, agent_index, num_agents, action, obs_dim, seed)
    except ValueError as exc:
        raise ValueError(f"baseline {name!r} does not fit env {env_name!r}: {exc}") from None


def team_policies(env: ParallelEnv | VectorEnv, env_name: str, name: str, seed: int) -> list[BaselinePolicy]:
    """Baseline ``name``'s policy for every agent of ``env`` (a ParallelEnv or a vectorized env), in agent order."""
    agents = list(env.possible_agents)
    return [
        make_policy(
            name,
            env_name,
            i,
            len(agents),
            SpaceSpec.from_gym(env.action_space(a)),
            int(np.prod(env.observation_space(a).shape)),
            seed,
        )
        for i, a in enumerate(agents)
    ]


def evaluate_in_process(config: Config, name: str, episodes: int, seed: int) -> list[float]:
    """Sum-over-agents returns of ``episodes`` episodes stepped in this process (no services; for tests).

    The env copy is reset with ``seed + episode`` for each episode.
    """
    from marlmesh.envs import make_env

    env = make_env(config.env)
    policies = dict(zip(env.possible_agents, team_policies(env, config.env.name, name, seed), strict=True))
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total = 0.0
        while env.agents:
            actions = {a: policies[a].act(np.asarray(obs[a], np.float32)[None])[0] for a in env.agents}
            obs, rewards, _, _, _ = env.step({a: int(x) if np.ndim(x) == 0 else x for a, x in actions.items()})
            total += float(sum(rewards.values()))
        returns.append(total)
    env.close()
    return returns


def evaluate_vector_env(
    env: VectorEnv,
    env_name: str,
    name: str,
    seed: int,
    observe: Callable[[list[np.ndarray]], None] | None = None,
) -> np.ndarray:
    """Sum-over-agents return of one episode in each of the vectorized env's copies, stepped in this process.

    Copy ``b`` is reset with ``seed + b`` (as :func:`evaluate_in_process` seeds its episode ``b``), so
    ``env.num_envs`` copies give the same episodes as that many sequential ones, in one batched run.

    Args:
        env: The vectorized env (``num_envs`` = the number of episodes).
        env_name: Its ``env.name`` (picks the scripted controller).
        name: The baseline.
        seed: Seed of copy 0.
        observe: Called with every step's observations (per agent), e.g. to measure what agents see.

    Returns:
        ``[num_envs]`` returns (summed over agents and over the episode).
    """
    policies = team_policies(env, env_name, name, seed)
    obs = env.reset(seed=seed)
    total = np.zeros(env.num_envs)
    running = np.ones(env.num_envs, bool)
    while running.any():
        out = env.step([p.act(o) for p, o in zip(policies, obs, strict=True)])
        total += np.where(running, out.reward.sum(axis=0), 0.0)
        running &= ~(out.terminated | out.truncated).any(axis=0)
        obs = out.obs
        if observe is not None:
            observe(obs)
    return total


def _agent_loop(
    name: str,
    agent: int,
    address: str,
    config: Config,
    seed: int,
    stop: threading.Event,
    errors: list[str],
    tls_identity: TlsIdentity | None = None,
) -> None:
    """One agent's client: join the env service, act with the baseline until ``stop`` (mTLS if given)."""
    from marlmesh.env_client import EnvClient

    client = EnvClient(
        address,
        timeout_s=config.runtime.rpc_timeout_s,
        max_message_bytes=config.runtime.max_message_bytes,
        step_timeout_s=config.env.step_deadline_ms / 1000.0 + config.runtime.rpc_timeout_s,
        tls_identity=tls_identity,
    )
    try:
        spec, ob = client.join(agent, f"baseline-{os.getpid()}-{agent}")
        me = spec.agents[agent]
        action_space = SpaceSpec.from_proto(me.action_space)
        obs_dim = int(np.prod(ob.obs.shape[1:]))
        policy = make_policy(name, config.env.name, agent, len(spec.agents), action_space, obs_dim, seed)
        while not stop.is_set():
            ob, _ = client.step(agent, ob.tick, policy.act(np.asarray(ob.obs)))
    except grpc.RpcError as exc:
        if not stop.is_set():
            errors.append(f"agent {agent}: {exc.code().name}: {exc.details()}")
    except ValueError as exc:
        errors.append(str(exc))
        stop.set()
    finally:
        try:
            client.leave(agent)
        except grpc.RpcError:
            pass
        client.close()


def run_baseline(
    config: Config, run_dir: Path, name: str, *, episodes: int, num_envs: int, timeout_s: float = 900.0
) -> dict[str, object]:
    """Evaluate a baseline through an env service process; write and return ``summary.json``.

    Raises:
        MeshError: If the env service fails, an agent fails, or the episodes do not finish in time.
    """
    from marlmesh.launch.evaluate import episode_summary, format_eval_table, wait_for_episodes
    from marlmesh.launch.mesh import Mesh, MeshError
    from marlmesh.v1 import env_pb2

    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(dump_config(config))
    seed = config.seed + config.eval.seed_offset
    start = time.monotonic()
    mesh = Mesh(config, config_path, run_dir, "eval", f"baseline-{name}", seed, num_envs)
    stop = threading.Event()
    errors: list[str] = []
    threads: list[threading.Thread] = []

    def check() -> None:
        if errors:
            raise MeshError(f"baseline {name}: {errors[0]}")
        mesh.check_alive()

    try:
        # only the env process: the baseline agents are clients in this process
        mesh.start_env()
        channel, stub = mesh.env_stub()
        with channel:
            spec = stub.GetSpec(env_pb2.GetSpecRequest(), timeout=config.runtime.startup_timeout_s, wait_for_ready=True)
            threads = [
                threading.Thread(
                    target=_agent_loop,
                    args=(name, i, mesh.env_address, config, config.seed, stop, errors, mesh.tls_identity),
                    name=f"baseline-agent-{i}",
                    daemon=True,
                )
                for i in range(len(spec.agents))
            ]
            for t in threads:
                t.start()
            stats = wait_for_episodes(
                stub, episodes, timeout_s=timeout_s, check=check, what=f"baseline {name}", poll_s=0.1
            )
        processes = mesh.processes()
    finally:
        stop.set()
        mesh.stop()
        for t in threads:
            t.join(timeout=10)
    wall = round(time.monotonic() - start, 2)
    result = episode_summary(
        stats,
        spec,
        episodes,
        deterministic=name != "random",
        seed=seed,
        num_envs=num_envs,
        wall_seconds=wall,
        processes=processes,
    )
    summary = {
        "run_dir": str(run_dir),
        "status": "done",
        "baseline": name,
        "env_steps": 0,
        "episodes": 0,
        "wall_seconds": wall,
        "processes": processes,
        "restarts": {},
        "bus": {"messages_sent": 0, "bytes_sent": 0, "dropped": {}, "delivery_latency_p50_seconds": None},
        "eval": result,
        "config": {
            "env": config.env.name,
            "algo": None,
            "channel": None,
            "num_envs": num_envs,
            "seed": config.seed,
            "baseline": name,
        },
    }
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    tmp.replace(run_dir / "summary.json")
    print(format_eval_table(result), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m marlmesh.baselines NAME --run-dir DIR`` (NAME: one of :data:`BASELINES`)."""
    p = argparse.ArgumentParser(prog="python -m marlmesh.baselines", description=__doc__.split("\n")[0])
    p.add_argument("baseline", choices=BASELINES)
    p.add_argument("--run-dir", required=True, help="where config.yaml, logs/ and summary.json go")
    p.add_argument("-c", "--config", default=None, help="YAML run config (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default: eval.episodes)")
    ns = p.parse_args(argv)
    from marlmesh.launch.mesh import MeshError
    from marlmesh.plugins import PluginError, load

    try:
        config = load_config(ns.config, ns.set)
        load("envs", config.env.name)
    except (ConfigError, PluginError) as exc:
        print(f"marlmesh: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    episodes = ns.episodes or config.eval.episodes
    print(f"baseline {ns.baseline}: {episodes} episodes, run directory {ns.run_dir}", flush=True)
    try:
        run_baseline(config, Path(ns.run_dir), ns.baseline, episodes=episodes, num_envs=config.eval.num_envs)
    except (MeshError, grpc.RpcError) as exc:
        print(f"marlmesh: error: baseline {ns.baseline}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

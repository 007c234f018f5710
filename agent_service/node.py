"""The actor loop of one agent (plain logic; gRPC and ZeroMQ clients are passed in).

Per env step: the staged loop (:mod:`marlmesh.staged_loop`: ``encode``, the communication rounds over this
agent's bus endpoint, then ``act``); submit the action to the env barrier. In training mode the step (own
observation, received messages, action, behaviour log-prob, reward) is recorded and every T steps a fragment
goes to this agent's learner.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np

from agent_service.learner_link import LearnerLink
from agent_service.weight_sync import WeightSync, weight_sync_for
from comm_bus.bus import Bus
from comm_bus.exchange import BusExchange
from marlmesh import plugins
from marlmesh.config import Config
from marlmesh.env_client import EnvClient, StepInterrupted
from marlmesh.policy_runtime import PolicyRuntime
from marlmesh.policy_spec import PolicySpec, policy_spec_for
from marlmesh.rollout import RolloutRecorder
from marlmesh.staged_loop import StagedStep, act, communicate, restage
from marlmesh.weights_check import WEIGHTS_REJECT_CAUSES

if TYPE_CHECKING:
    from agent_service.reward_sharing import RewardSharing

log = logging.getLogger(__name__)


@dataclass
class AgentCounters:
    """What the agent did, for logs, metrics and the run summary."""

    steps: int = 0
    env_steps: int = 0
    late_actions: int = 0
    weights_loaded: int = 0
    policy_version: int = -1
    rejected_messages: int = 0
    rejoins: int = 0
    rounds_sent: int = 0
    """Bus rounds this agent transmitted: ``rounds`` per completed step, plus those of a step cut short at stop,
    minus those of steps it took alone (no live peer, so nothing went out and no bytes were counted)."""
    heard_rows_per_round: collections.Counter[int] = field(default_factory=collections.Counter)
    """Round k -> message rows (sender x env copy) received and accepted in that round, summed over steps."""
    fragments_discarded: collections.Counter[str] = field(default_factory=collections.Counter)
    weights_rejected: collections.Counter[str] = field(
        default_factory=lambda: collections.Counter(dict.fromkeys(WEIGHTS_REJECT_CAUSES, 0))
    )
    """Weights versions refused before use, by cause (:data:`~marlmesh.weights_check.WEIGHTS_REJECT_CAUSES`)."""

    def count_rounds(self, step: StagedStep) -> None:
        """Add one step's communication: rounds sent, messages rejected, rows heard per round."""
        self.rounds_sent += step.rounds_sent
        self.rejected_messages += step.rejected
        for k, (_, mask) in enumerate(step.inboxes):
            self.heard_rows_per_round[k] += int(mask.sum())

    def as_dict(self, rounds: int) -> dict[str, object]:
        """JSON-ready counters (the agent's part of ``summary.json``) of a channel with ``rounds`` rounds."""
        return {
            "steps": self.steps,
            "env_steps": self.env_steps,
            "late_actions": self.late_actions,
            "weights_loaded": self.weights_loaded,
            "policy_version": self.policy_version,
            "rejected_messages": self.rejected_messages,
            "rejoins": self.rejoins,
            "rounds_sent": self.rounds_sent,
            "heard_rows_per_round": [self.heard_rows_per_round[k] for k in range(rounds)],
            "fragments_discarded": dict(self.fragments_discarded),
            "weights_rejected": dict(self.weights_rejected),
        }


class AgentNode:
    """One agent.

    Args:
        config: The run's config.
        agent_index: This agent's index.
        env: Client of the env service.
        make_bus: Builds the bus endpoint once N and the rounds are known (``(num_agents, rounds) -> Bus``);
            not called for silent channels.
        learner: Link to this agent's learner (training), or None (evaluation).
        initial_params: Parameters to act with when there is no learner (evaluation).
        deterministic: Greedy/mean actions instead of sampling.
        make_runtime: Builds the policy runtime from the spec (default: the channel's torch policy in a
            :class:`~marlmesh.policies.torch_runtime.TorchRuntime` with its own action sampler; the edge install
            passes an ONNX runtime).
    """

    def __init__(
        self,
        config: Config,
        agent_index: int,
        env: EnvClient,
        make_bus: Callable[[int, int], Bus],
        learner: LearnerLink | None,
        initial_params: tuple[int, dict[str, np.ndarray]] | None = None,
        deterministic: bool = False,
        make_runtime: Callable[[PolicySpec], PolicyRuntime] | None = None,
    ) -> None:
        self.config = config
        self.index = agent_index
        self.env = env
        self.learner = learner
        self.deterministic = deterministic
        self.counters = AgentCounters()
        self.process_id = f"{os.getpid()}-{time.time_ns()}"
        self.channel = plugins.load("channels", config.channel.name)(config.channel)
        spec_msg, self._ob = env.join(agent_index, self.process_id)
        self._joining = True  # first step after a (re)join: peers may still be starting
        self.spec: PolicySpec = policy_spec_for(spec_msg, agent_index, config)
        self.num_envs = spec_msg.num_envs
        if make_runtime is None:
            from marlmesh.policies.torch_runtime import TorchRuntime, sampler_seed

            policy = self.channel.build_policy(self.spec)
            self.runtime: PolicyRuntime = TorchRuntime(policy, seed=sampler_seed(config.seed, agent_index))
        else:
            self.runtime = make_runtime(self.spec)
        if learner is not None:  # refuse weights that do not fit this policy before the agent ever sees them
            learner.expect_layout(self.runtime.param_shapes())
            self.counters.weights_rejected = learner.weights_rejected
        self.bus = make_bus(self.spec.num_agents, self.channel.rounds) if self.channel.rounds > 0 else None
        self.exchange = None if self.bus is None else BusExchange({agent_index: self.bus})
        self.recorder = (
            RolloutRecorder(
                config.train.rollout_steps,
                self.num_envs,
                self.spec.obs_shape,
                self.spec.action_space,
                self.channel.rounds,
                self.spec.num_agents,
                self.spec.message_dim,
            )
            if learner is not None
            else None
        )
        self.weights: WeightSync = weight_sync_for(config, learner, self.num_envs)
        self.finished = False
        """Lockstep: the agent reached the final tick, pushed its last fragment and stopped stepping."""
        self._stop = threading.Event()
        """:meth:`run`'s stop event: a bus round stops waiting for peers (and the step ends) once it is set."""
        if initial_params is not None:
            self._load(*initial_params)
        self.reward_sharing = self._reward_sharing()

    def _reward_sharing(self) -> RewardSharing | None:
        """DG-MAPPO reward sharing over the bus (training only; see :mod:`agent_service.reward_sharing`)."""
        cfg = self.config.algo.dgmappo.reward_sharing
        if not cfg.enabled or self.recorder is None or self.bus is None:
            return None
        from agent_service.reward_sharing import RewardSharing

        return RewardSharing(cfg, self.bus, self.index)

    # -- weights -----------------------------------------------------------------------------------
    def _load(self, version: int, params: dict[str, np.ndarray]) -> None:
        self.runtime.load_params(params)
        self.counters.policy_version = version
        self.counters.weights_loaded += 1

    def wait_for_weights(self, timeout: float) -> None:
        """Training: act only with the learner's parameters (its initial or resumed version).

        Raises:
            TimeoutError: If no weights arrive in time.
        """
        assert self.learner is not None
        if not self.learner.wait_first_weights(timeout):
            raise TimeoutError(f"no weights from learner at {self.learner.address} within {timeout:.0f}s")
        first = self.learner.newer_weights(self.counters.policy_version)
        if first is not None:
            self._load(*first)

    def _maybe_swap_weights(self) -> None:
        newer = self.weights.between_steps(self.counters.policy_version)
        if newer is not None:
            self._load(*newer)

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Communicate, act, submit the action and record the transition."""
        self._maybe_swap_weights()
        ob = self._ob
        # Right after (re)joining, peers may still be starting (importing torch, joining): wait for their
        # first messages up to the startup timeout instead of counting round timeouts.
        staged = communicate(
            self.channel,
            {self.index: self.runtime},
            {self.index: ob},
            self.exchange,
            num_agents=self.spec.num_agents,
            timeout_s=self.config.runtime.startup_timeout_s if self._joining else None,
            stop=self._stop,
        )
        mine = staged[self.index]
        if mine.interrupted or self._stop.is_set():  # shutting down: what went out still counts
            self.counters.rounds_sent += mine.rounds_sent
            return
        self.counters.count_rounds(mine)
        inboxes = mine.inboxes
        if self.recorder is not None and self.recorder.full:
            assert self.learner is not None
            self.learner.push(self.recorder.finish(ob.obs, inboxes))
            fresh = self.weights.after_push(self.counters.policy_version)
            if fresh is not None:  # lockstep: act with the version trained on this fragment from now on
                self._load(*fresh)
                mine.state = restage(self.runtime, ob.obs, inboxes)
        if self.weights.is_final(ob.tick):
            self._finish()
            return
        action_np, logp, out = act(self.runtime, mine, self.deterministic)
        if self.recorder is not None:
            self.recorder.add_decision(ob.obs, inboxes, action_np, logp, out.value, self.counters.policy_version)
        try:
            nxt, applied = self.env.step(self.index, ob.tick, action_np)
        except StepInterrupted:  # shutting down: peers that already left would hold the barrier to its deadline
            return
        if not applied:
            self.counters.late_actions += 1
        if self.recorder is not None:
            reward = nxt.reward if self.reward_sharing is None else self.reward_sharing.share(nxt)
            self.recorder.add_outcome(reward, nxt.terminated, nxt.truncated, nxt.final_obs, nxt.cost)
        self._ob = nxt
        self._joining = False
        self.counters.steps += 1
        self.counters.env_steps += self.num_envs

    def _finish(self) -> None:
        """Lockstep: stop at the final tick (a fragment cut short by a rejoin is discarded and counted)."""
        if self.recorder is not None and self.recorder.size:
            self.counters.fragments_discarded["run_end"] += 1
            self.recorder.size = 0
        self.finished = True
        log.info("final tick %d reached at version %d; stepping stopped", self._ob.tick, self.counters.policy_version)

    def rejoin(self, stop: threading.Event, timeout: float) -> bool:
        """After losing the env: join again (backoff), dropping the partial fragment. False if it never came back."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                _, self._ob = self.env.join(self.index, self.process_id)
                self._joining = True
            except grpc.RpcError:
                stop.wait(delay)
                delay = min(2.0, delay * 2)
                continue
            if self.recorder is not None and self.recorder.size:
                self.counters.fragments_discarded["env_lost"] += 1
                self.recorder.size = 0
            self.counters.rejoins += 1
            log.info("rejoined the env at tick %d", self._ob.tick)
            return True
        return False

    def _interrupt_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.env.interrupt()

    def run(self, stop: threading.Event, on_step: Callable[[AgentNode], None] | None = None) -> None:
        """Step until ``stop`` is set; reconnect to the env if it goes away.

        Raises:
            ConnectionError: If the env stays unreachable for ``runtime.startup_timeout_s``.
        """
        self._stop = stop
        # On stop, cancel a Step waiting at the env's barrier (peers that left would hold it to its deadline);
        # a watcher thread does it, so the step itself stays one plain blocking call.
        threading.Thread(target=self._interrupt_on, args=(stop,), name="stop-watcher", daemon=True).start()
        while not stop.is_set() and not self.finished:
            try:
                self.step()
            except grpc.RpcError as exc:
                if stop.is_set():
                    break
                log.warning("env step failed (%s: %s); rejoining", exc.code().name, exc.details())
                if not self.rejoin(stop, self.config.runtime.startup_timeout_s):
                    if stop.is_set():
                        break
                    raise ConnectionError(f"env_service at {self.env.address} did not come back") from None
            if on_step is not None and not self.finished:
                on_step(self)

    def summary(self) -> dict[str, object]:
        """Counters of this agent and its bus, JSON-ready."""
        out: dict[str, object] = {
            **self.counters.as_dict(self.channel.rounds),
            "finished": self.finished,
            "bus": self.bus.totals.as_dict() if self.bus is not None else None,
            "bus_trace": self.bus.trace_status() if self.bus is not None else None,
        }
        if self.reward_sharing is not None:
            out["reward_sharing_rows_heard"] = self.reward_sharing.rows_heard
        if self.learner is not None:
            out["fragments_created"] = self.learner.fragments_created
            out["fragments_sent"] = self.learner.fragments_sent
            out["fragments_dropped"] = dict(self.learner.fragments_dropped)
            out["weights_versions_received"] = self.learner.versions_received
        return out

    def close(self) -> None:
        """Leave the env, close the bus and flush the learner link."""
        try:
            self.env.leave(self.index)
        except grpc.RpcError as exc:  # the env then waits for this agent until it misses enough deadlines
            log.warning("could not leave the env (%s: %s)", exc.code().name, exc.details())
        if self.bus is not None:
            self.bus.close()
        if self.learner is not None:
            self.learner.close()

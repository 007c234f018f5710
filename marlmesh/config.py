"""Configuration: one YAML file -> a validated, documented model.

Every key has a default, a type and a docstring. Unknown keys and bad values fail at start with the key
path and, for a misspelt key, the nearest valid name. ``--set a.b=c`` overrides any key (values are parsed
as YAML scalars). The resolved config is written into the run directory by the launcher.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_validator

from marlmesh.entity_layout import ENTITY_LAYOUT_ENVS


class ConfigError(ValueError):
    """The configuration is invalid. The message is one line that says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Strict):
    """The environment hosted by ``env_service``."""

    name: str = "mpe2.simple_spread_v3"
    """A registered env name (see ``marlmesh plugins``) or ``module:factory`` returning a PettingZoo
    ParallelEnv."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the env factory, e.g. ``N``, ``max_cycles``, ``local_ratio``."""
    num_envs: int = Field(32, ge=1, le=4096)
    """B: independent env copies stepped together; every message carries B rows."""
    workers: int = Field(1, ge=1, le=64)
    """Processes stepping the B copies (contiguous blocks, ``env_service/env_workers.py``); 1 = in the env
    service itself. While the env steps, the agents wait, so a second core for the env service (e.g. a
    2-CPU env pod) shortens every step. Results are identical for every value. At most ``num_envs``."""
    obs_radius: float | None = Field(None, gt=0)
    """Partial observability radius (MPE scenarios simple_spread, simple_reference, simple_speaker_listener):
    landmarks and other agents farther than this (env units) are zeroed in an agent's observation and one
    visibility flag per entity is appended (the observation grows). Unset = full observability."""
    time_feature: bool = False
    """Append the elapsed share of the episode, ``t / max_cycles`` in [0, 1], to every agent's observation
    (``marlmesh/envs/time_obs.py``). With a fixed horizon the return still to come depends on the steps left;
    a local critic that sees them predicts it far better. Needs an env with ``max_cycles`` (MPE)."""
    step_deadline_ms: float = Field(10_000.0, gt=0)
    """Barrier deadline: after the first action of a tick arrives, agents missing after this long get a
    default action (counted)."""
    max_missed_deadlines: int = Field(3, ge=1)
    """An agent that misses this many deadlines in a row is no longer waited for until it steps again."""

    @model_validator(mode="after")
    def _workers_fit(self) -> EnvConfig:
        if self.workers > self.num_envs:
            raise ValueError(f"workers ({self.workers}) must not exceed num_envs ({self.num_envs})")
        return self


class GilbertElliottConfig(_Strict):
    """Two-state Markov (Gilbert-Elliott) burst loss, advanced once per message on each link and env copy."""

    p_good_to_bad: float = Field(0.01, ge=0.0, le=1.0)
    """Probability of moving from the good to the bad state before a message."""
    p_bad_to_good: float = Field(0.3, ge=0.0, le=1.0)
    """Probability of moving from the bad to the good state before a message."""
    loss_good: float = Field(0.0, ge=0.0, le=1.0)
    """Loss probability in the good state."""
    loss_bad: float = Field(0.5, ge=0.0, le=1.0)
    """Loss probability in the bad state."""

    def mean_loss(self) -> float:
        """Long-run loss rate (stationary distribution of the chain)."""
        total = self.p_good_to_bad + self.p_bad_to_good
        bad = self.p_good_to_bad / total if total > 0 else 0.0
        return bad * self.loss_bad + (1.0 - bad) * self.loss_good


class LinkConfig(_Strict):
    """Parameters of one directed link (netem semantics, see docs/link-emulation.md).

    Per message (one env copy's row on one directed link): range check -> loss -> drop-tail queue ->
    delay (latency + jitter) -> serialization at the link rate:
    ``visible_at = max(now + delay, previous visible_at) + bits / rate_bps``.
    """

    rate_bps: float | None = Field(None, gt=0)
    """Link rate in bit/s; unset = unlimited (no serialization delay)."""
    latency_ms: float = Field(0.0, ge=0)
    """Fixed one-way delay."""
    jitter_ms: float = Field(0.0, ge=0)
    """Delay variation added to the latency (see ``jitter_distribution``); the delay never goes below 0."""
    jitter_distribution: Literal["uniform", "normal"] = "uniform"
    """``uniform``: U(-jitter, +jitter) (netem's default); ``normal``: N(0, jitter^2)."""
    reorder: bool = False
    """Let a message with a smaller jitter overtake an earlier one (only without a rate limit)."""
    loss: float = Field(0.0, ge=0.0, le=1.0)
    """Bernoulli loss probability per message (``loss_model: bernoulli``)."""
    loss_model: Literal["bernoulli", "gilbert_elliott"] = "bernoulli"
    """``bernoulli`` (independent, ``loss``) or ``gilbert_elliott`` (bursts, ``gilbert_elliott.*``)."""
    gilbert_elliott: GilbertElliottConfig = Field(default_factory=GilbertElliottConfig)
    range: float | None = Field(None, gt=0)
    """Radio range in env units (distance between agent positions); unset = unlimited."""
    queue_limit: int | None = Field(None, ge=1)
    """Drop-tail queue limit in messages in flight on the link; unset = unlimited."""
    queue_limit_bytes: int | None = Field(None, ge=1)
    """Drop-tail queue limit in bytes in flight on the link; unset = unlimited."""

    def is_ideal(self) -> bool:
        """True when the link imposes no constraint at all."""
        lossless = self.loss == 0 if self.loss_model == "bernoulli" else self.gilbert_elliott.mean_loss() == 0
        return (
            self.rate_bps is None
            and self.latency_ms == 0
            and self.jitter_ms == 0
            and lossless
            and self.range is None
            and self.queue_limit is None
            and self.queue_limit_bytes is None
        )


class LinkOverride(_Strict):
    """Different parameters for some directed links. Keys left out inherit ``bus.links.default``.

    ``src``/``dst`` are agent indices or ``"*"`` (any). Later overrides win over earlier ones.
    """

    src: int | Literal["*"] = "*"
    dst: int | Literal["*"] = "*"
    rate_bps: float | None = Field(None, gt=0)
    latency_ms: float | None = Field(None, ge=0)
    jitter_ms: float | None = Field(None, ge=0)
    loss: float | None = Field(None, ge=0.0, le=1.0)
    range: float | None = Field(None, gt=0)
    queue_limit: int | None = Field(None, ge=1)
    queue_limit_bytes: int | None = Field(None, ge=1)

    def matches(self, src: int, dst: int) -> bool:
        """Whether this override applies to the directed link ``src -> dst``."""
        return self.src in ("*", src) and self.dst in ("*", dst)


class LinksConfig(_Strict):
    """Link emulation between agents (``marlmesh.links`` plugin + parameters)."""

    model: str | None = None
    """Link model plugin: ``ideal`` (no constraint), ``netem`` (the parameters below) or ``trace`` (replays
    ``trace_file`` on top of them). Unset: ``trace`` if ``trace_file`` is set, else ``netem`` if any
    constraint is set, else ``ideal``."""
    default: LinkConfig = Field(default_factory=LinkConfig)
    """Parameters of every directed link."""
    overrides: list[LinkOverride] = Field(default_factory=list)
    """Per-link exceptions, e.g. ``[{src: 0, dst: 2, loss: 0.5}]``."""
    shared_medium: bool = False
    """One transmitter per sender (a radio): everything an agent sends is serialized one message after the
    other at ``rate_bps``, and one round's message to several peers is transmitted once."""
    trace_file: str | None = None
    """CSV or JSONL file of recorded per-link latency/loss/rate over time (``model: trace``); the format is
    documented in ``comm_bus/link_trace.py``."""

    def resolved_model(self) -> str:
        """The link model name after applying the default rule."""
        if self.model is not None:
            return self.model
        if self.trace_file:
            return "trace"
        constrained = not self.default.is_ideal() or bool(self.overrides) or self.shared_medium
        return "netem" if constrained else "ideal"

    @model_validator(mode="after")
    def _consistent(self) -> LinksConfig:
        if self.model == "ideal" and (not self.default.is_ideal() or self.overrides or self.shared_medium):
            raise ValueError(
                "model 'ideal' has no constraints; use model 'netem' (or leave model unset) to emulate "
                "rate/latency/jitter/loss/range/queue limits"
            )
        if self.model == "trace" and not self.trace_file:
            raise ValueError("model 'trace' needs bus.links.trace_file")
        return self


class TraceConfig(_Strict):
    """Recording of every message's fate (sent, visible at, dropped and why) into ``RUN_DIR/bus_trace.bin``."""

    enabled: bool = True
    max_records_per_agent: int = Field(250_000, ge=0)
    """Records written per agent (one per message row and link); later ones are counted, not written."""


class SecurityConfig(_Strict):
    """Authenticated, encrypted bus transport (ZeroMQ CURVE); see ``comm_bus/security.py``."""

    curve: bool = False
    """Encrypt every bus connection and admit only the agents' own public keys."""
    keys_dir: str | None = None
    """Folder written by ``marlmesh keys gen``: ``agent-<i>.key`` (public) and ``agent-<i>.key_secret``."""

    @model_validator(mode="after")
    def _keys_when_curve(self) -> SecurityConfig:
        if self.curve and not self.keys_dir:
            raise ValueError("curve needs keys_dir (create one with 'marlmesh keys gen DIR --agents N')")
        return self


class BusConfig(_Strict):
    """The agent-to-agent communication bus (ZeroMQ, brokerless) and its link emulation."""

    clock: Literal["sim", "wall"] = "sim"
    """``sim``: simulated time (deterministic: same seed, same delivery trace); ``wall``: real delays and
    real per-round deadlines."""
    dt_ms: float = Field(100.0, gt=0)
    """Sim clock: simulated duration of one env step (MPE's dt is 0.1 s)."""
    round_interval_ms: float | None = Field(None, gt=0)
    """Sim clock: length of one communication round; round k of tick t is sent at ``t*dt + k*interval`` and
    read at ``t*dt + (k+1)*interval``. Unset: ``dt / rounds``."""
    round_timeout_ms: float = Field(5_000.0, gt=0)
    """Sim: longest real wait for a live peer's frame of a round (a dead peer; counted as ``round_timeout``).
    Wall: the per-round deadline; what is not visible by then is seen in a later round or never."""
    lifespan_ms: float = Field(1_000.0, gt=0)
    """Mailbox entries older than this (bus clock, since the sender sent them) are no longer used."""
    header_bytes: int = Field(32, ge=0)
    """Per-message header overhead added to the payload bytes (counted and serialized on links)."""
    quantization: Literal["fp32", "fp16", "int8"] = "fp32"
    """Wire format of float payloads: fp16 halves and int8 (with a per-row scale) quarters the bytes."""
    links: LinksConfig = Field(default_factory=LinksConfig)
    trace: TraceConfig = Field(default_factory=TraceConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)


class DGATConfig(_Strict):
    """Settings of the ``dgat`` channel (distributed graph attention, docs/algorithms.md)."""

    hops: int = Field(2, ge=1, le=6)
    """K: attention hops, i.e. bus rounds per env step (round k carries ``z^k``)."""
    actor: Literal["joint", "two_stream"] = "joint"
    """How the actor reads ``[o_i, ô_i]``. ``joint``: one MLP over the concatenation. ``two_stream``: the action
    logits (or Gaussian means) are ``f_i(o_i) + g_i(ô_i)``, two MLPs whose hidden units do not mix, with ``g_i``'s
    output layer initialised to zero, so the policy starts as an independent one and the messages only add a
    learned correction (the critic is ``V_i(LayerNorm([o_i, ô_i]))`` either way)."""


class MeanFieldConfig(_Strict):
    """Settings of the ``meanfield`` channel."""

    summary: Literal["embedding", "action"] = "embedding"
    """What each agent sends: ``embedding`` = a learned ``tanh(W o_i)`` of ``message_dim`` floats; ``action`` =
    its action distribution given its own observation alone (Categorical probabilities, or the tanh of a Box
    action mean), zero-padded to ``message_dim`` (which must be at least the number of actions)."""


class BlackboardConfig(_Strict):
    """Settings of the ``blackboard`` channel (Co2PO): hazard-gated intent/yield entries."""

    threshold_init: float = Field(0.5, gt=0, lt=1)
    """Initial hazard threshold: an entry is sent in an env copy only when the predicted hazard exceeds it."""
    target_rate: float = Field(0.2, gt=0, le=1)
    """Share of (step, env copy) rows in which an agent should send; the learner moves the threshold toward the
    hazard quantile that gives this rate."""
    threshold_ema: float = Field(0.1, gt=0, le=1)
    """Step size of that move per update (exponential moving average toward the quantile)."""


class ChannelConfig(_Strict):
    """What agents say to each other (``marlmesh.channels`` plugin)."""

    name: str = "none"
    """``none`` (no communication), ``broadcast`` (each agent sends an encoding of its observation), ``dgat``
    (K-hop distributed graph attention), ``meanfield`` (fixed-size summary, receivers average it) or
    ``blackboard`` (Co2PO: hazard-gated intent/yield entries)."""
    message_dim: int = Field(16, ge=1, le=4096)
    """Size of one message vector (one row per env copy on the wire)."""
    dgat: DGATConfig = Field(default_factory=DGATConfig)
    """Used when ``name`` is ``dgat``."""
    meanfield: MeanFieldConfig = Field(default_factory=MeanFieldConfig)
    """Used when ``name`` is ``meanfield``."""
    blackboard: BlackboardConfig = Field(default_factory=BlackboardConfig)
    """Used when ``name`` is ``blackboard``."""


class PPOConfig(_Strict):
    """PPO hyper-parameters (CleanRL naming)."""

    lr: float = Field(5e-4, gt=0)
    adam_eps: float = Field(1e-5, gt=0)
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_coef: float = Field(0.2, gt=0)
    epochs: int = Field(10, ge=1)
    minibatches: int = Field(4, ge=1)
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    grad_clip: Literal["per_group", "joint"] = "per_group"
    """How ``max_grad_norm`` applies: ``per_group`` clips the critics' heads, the actor head and what both use
    (message encoders, attention) each on its own, so a large value-loss gradient never shrinks a policy step;
    ``joint`` clips all of the policy's parameters as one vector (CleanRL's PPO), which makes the actor's steps
    small while the critic is still far off. ``mappo-central``'s groups are its actors and its central critic."""
    norm_adv: bool = True
    """Normalise advantages per minibatch (per agent: every learner sees only its agent)."""
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of actor and critic MLPs (tanh, orthogonal init)."""
    value_norm: bool = False
    """Value normalisation (as in MAPPO): the local critic learns ``(return - mean) / std`` with running statistics
    of the agent's own returns (kept in the policy, see ``StagedPolicy.return_mean``), so its loss and gradients
    do not scale with the size of the returns. Returns of -20 against an initial value of 0 otherwise give a
    critic gradient far above ``max_grad_norm``, and the critic learns slowly."""
    value_norm_beta: float = Field(0.99, ge=0, lt=1)
    """EMA decay of the return statistics per update (the first update takes its batch's statistics)."""
    actor_net: Literal["mlp", "entity"] = "mlp"
    """The network of the actor stream that reads the agent's own observation (``ippo``, ``mappo-central``'s
    actors, and ``dgmappo`` with ``channel.dgat.actor: two_stream``, where it is ``f_i``). ``mlp``: a tanh MLP over
    the flat observation. ``entity``: ``marlmesh/policies/entity_actor.py``, which reads the observation as the
    own velocity, a set of landmarks and a set of other agents and is invariant to their order, so it cannot
    learn "agent i takes landmark i" and learns a rule on positions instead (one hidden width,
    ``hidden_sizes[0]``, throughout). Needs an env whose observation layout ``marlmesh/entity_layout.py`` knows
    (``mpe2.simple_spread_v3``). The critic stays an MLP."""
    anneal_lr: bool = False
    """Decay the learning rate linearly from ``lr`` to 0 over the run's budget (as CleanRL's ``anneal_lr``). A
    learner measures progress as the larger of ``samples trained / train.total_env_steps`` and ``seconds since
    the learner started / train.max_wall_seconds``, so a run cut by its wall-clock budget still ends near 0 (a
    restarted learner resumes both its sample count and its running time from the checkpoint). ``mappo-central``
    uses its env steps and its own running time the same way."""


class Co2POConfig(_Strict):
    """Constrained part of ``co2po``: hazard predictor, cost critic, PPO-Lagrangian."""

    cost_limit: float = Field(0.02, ge=0)
    """Budget on the mean cost per step (MPE: collisions an agent is in per step)."""
    lagrange_init: float = Field(0.0, ge=0)
    """Initial Lagrange multiplier."""
    lagrange_lr: float = Field(0.5, gt=0)
    """Dual-ascent step: ``lambda <- max(0, lambda + lr * (mean cost per step - cost_limit))`` per update."""
    hazard_horizon: int = Field(5, ge=1)
    """H: the hazard label of step t is 1 when a cost occurs in steps t..t+H-1 of the same episode (looked up
    within the fragment)."""
    hazard_coef: float = Field(0.5, ge=0)
    """Weight of the hazard BCE loss."""
    cost_vf_coef: float = Field(0.5, ge=0)
    """Weight of the cost critic's loss."""


class RewardSharingConfig(_Strict):
    """DG-MAPPO reward sharing: every agent sends its reward over the bus and trains on a mix with its neighbours'.

    After each env step an agent sends its reward (one float per env copy, channel ``reward``) to its live peers
    over the same emulated links as its messages (range, loss, rate; bytes counted in ``bus.*``) and records
    ``(1 - weight) * r_i + weight * mean(r_j of the neighbours heard)`` in its fragment (its own reward where it
    heard nobody), which its learner trains on.
    """

    enabled: bool = False
    weight: float = Field(0.5, ge=0.0, le=1.0)
    """Share of the neighbours' mean reward in the reward an agent trains on (0 = own reward only)."""


class GossipConfig(_Strict):
    """Gossip (D-SGD) parameter mixing between neighbour learners over the bus (``learner_service/gossip.py``).

    Every ``period`` updates each learner runs ``rounds`` gossip rounds: ``theta_i <- sum_j W_ij theta_j`` with
    Metropolis-Hastings weights on the current comm graph (learners alive and whose agents heard each other in
    the latest fragment). Its messages use the run's link emulation (``bus.links``, ``bus.quantization``,
    ``bus.header_bytes``) and are counted in ``bus.gossip`` of the summary.
    """

    enabled: bool = False
    period: int = Field(1, ge=1)
    """Mix after every ``period``-th update of a learner."""
    rounds: int = Field(1, ge=1, le=16)
    """Gossip rounds per mixing (each: a neighbour list, then the parameters)."""
    slot_ms: float = Field(1000.0, gt=0)
    """Bus-clock time a gossip message has to become visible (latency + serialization at ``rate_bps``); a later
    one is not mixed (counted as ``expired``)."""
    timeout_ms: float = Field(5000.0, gt=0)
    """Longest real wait for a neighbour learner's message of a round (a dead or slow learner)."""


class DGMAPPOConfig(_Strict):
    """Optional parts of DG-MAPPO (``algo.name=dgmappo``)."""

    reward_sharing: RewardSharingConfig = Field(default_factory=RewardSharingConfig)
    gossip: GossipConfig = Field(default_factory=GossipConfig)


class AlgoConfig(_Strict):
    """The learning algorithm (``marlmesh.algos`` plugin)."""

    name: str = "ippo"
    """``ippo``, ``dgmappo``, ``mfppo``, ``co2po`` (decentralized), or ``mappo-central`` (the CENTRALIZED
    REFERENCE: one process, a central critic over the joint observation; see ``marlmesh/centralized``)."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    co2po: Co2POConfig = Field(default_factory=Co2POConfig)
    """Used when ``name`` is ``co2po``."""
    dgmappo: DGMAPPOConfig = Field(default_factory=DGMAPPOConfig)
    """Used when ``name`` is ``dgmappo``."""

    @model_validator(mode="after")
    def _dgmappo_options(self) -> AlgoConfig:
        for part in ("reward_sharing", "gossip"):
            if getattr(self.dgmappo, part).enabled and self.name != "dgmappo":
                raise ValueError(f"algo.dgmappo.{part}.enabled=true needs algo.name=dgmappo, got {self.name!r}")
        return self


class TrainConfig(_Strict):
    """Training budget and cadence."""

    total_env_steps: int = Field(1_000_000, ge=1)
    """Stop after this many env steps (single-env steps summed over the B copies)."""
    rollout_steps: int = Field(100, ge=1)
    """T: batched steps per rollout fragment sent to the learner (a fragment holds T x B samples)."""
    max_wall_seconds: float | None = Field(None, gt=0)
    """Optional wall-clock budget; training stops at whichever limit comes first."""
    checkpoint_keep: int = Field(3, ge=1)
    """Checkpoints kept per agent (older ones are deleted)."""
    torch_threads: int = Field(1, ge=1)
    """torch intra-op threads per process (many processes share few cores)."""
    weight_sync: Literal["async", "lockstep"] = "async"
    """How an agent picks up its learner's weights. ``async``: the newest version that has arrived, between
    steps, never waiting (learners and agents overlap; runs are not repeatable). ``lockstep``: synchronous
    on-policy PPO, reproducible under ``bus.clock=sim``: after pushing rollout fragment k the agent waits for
    the version its learner trained on fragments 1..k and acts with it; the run ends at an exact tick
    (``total_env_steps / num_envs`` rounded up to whole fragments) instead of at a progress poll.
    ``marlmesh sweep`` runs its training cells in lockstep."""
    lockstep_timeout_s: float = Field(300.0, gt=0)
    """Lockstep: longest wait for the learner's version after a fragment; past it the agent fails with an
    error naming the version it waited for."""


class EvalConfig(_Strict):
    """Evaluation after training and for ``marlmesh eval``."""

    episodes: int = Field(100, ge=1)
    num_envs: int = Field(50, ge=1, le=4096)
    deterministic: bool = True
    """Greedy/mean actions instead of sampling."""
    seed_offset: int = 1_000_003
    """Evaluation env seed = ``seed + seed_offset``."""


class RestartConfig(_Strict):
    """Supervision by the local launcher: how a crashed env, agent or learner process is restarted.

    A process that exits on its own while the run goes on is restarted after ``backoff_s``, then
    ``2 * backoff_s``, ``4 * backoff_s``... (at most ``backoff_max_s``), up to ``max_restarts`` times per
    process; then the run fails naming the process and its log tail. A restarted process reuses its previous
    gRPC port, so clients reconnect to the same address; an agent rejoins the env, a learner resumes from its
    newest valid checkpoint, an env continues its tick count (agents rejoin it).
    """

    max_restarts: int = Field(3, ge=0)
    """Crash restarts allowed per process over the whole run (0 = fail at the first crash). Restarts
    scheduled by a ``faults`` entry do not count against this budget."""
    backoff_s: float = Field(1.0, ge=0)
    """Delay before the first restart of a process; doubles with each further restart of that process."""
    backoff_max_s: float = Field(30.0, ge=0)
    """Upper bound of the restart delay."""


class TlsConfig(_Strict):
    """Optional mutual TLS on every gRPC server and channel (see ``marlmesh/tls.py``).

    Each process has its own identity (``env``, ``agent-<i>``, ``learner-<i>``, ``launcher``). Its files are,
    first match: the flags ``--tls-ca/--tls-cert/--tls-key`` or ``MARLMESH_TLS_CA/CERT/KEY`` (``{id}`` is
    replaced by the agent index, ``{name}`` by the identity); ``ca_file``/``cert_file``/``key_file`` below;
    ``keys_dir/ca.crt``, ``keys_dir/<name>.tls.crt``, ``keys_dir/<name>.tls.key``.
    """

    enabled: bool = False
    """Serve and dial gRPC over TLS with client-certificate verification (plaintext when false)."""
    keys_dir: str | None = None
    """Folder written by ``marlmesh keys gen``: ``ca.crt`` and ``<name>.tls.crt`` / ``<name>.tls.key`` per process."""
    ca_file: str | None = None
    """PEM file of the CA that signs every process's certificate (overrides ``keys_dir/ca.crt``)."""
    cert_file: str | None = None
    """PEM certificate of this process; ``{name}`` is replaced by its identity (overrides ``keys_dir``)."""
    key_file: str | None = None
    """PEM private key of this process; ``{name}`` is replaced by its identity (overrides ``keys_dir``)."""
    server_name: str = Field("marlmesh", min_length=1)
    """DNS name every server certificate carries and every client checks (``marlmesh keys gen --server-name``)."""

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsConfig:
        if self.enabled and not self.keys_dir and not (self.ca_file and self.cert_file and self.key_file):
            raise ValueError(
                "enabled needs keys_dir (create one with 'marlmesh keys gen DIR --agents N') "
                "or all of ca_file, cert_file and key_file"
            )
        return self


class RuntimeConfig(_Strict):
    """Process and network settings."""

    host: str = "127.0.0.1"
    """Address every server binds and every client dials (loopback unless told otherwise)."""
    rpc_timeout_s: float = Field(30.0, gt=0)
    """Deadline of every unary RPC."""
    startup_timeout_s: float = Field(120.0, gt=0)
    """How long the launcher waits for every process to become healthy."""
    progress_interval_s: float = Field(2.0, gt=0)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent."""
    restart: RestartConfig = Field(default_factory=RestartConfig)
    """Restart policy of crashed processes (local launcher)."""
    tls: TlsConfig = Field(default_factory=TlsConfig)
    """Mutual TLS on every gRPC connection (off by default)."""


class KillFault(_Strict):
    """Kill one process (SIGKILL, like a crash or an evicted pod) when the run reaches ``at_env_steps``.

    The launcher checks fault triggers every ``runtime.progress_interval_s`` against the env-step counter,
    so the kill happens within one progress interval of ``at_env_steps``.
    """

    kind: Literal["kill"]
    role: Literal["agent", "learner", "env"]
    """Which process: an agent, a learner, or the env service."""
    agent: int | None = Field(None, ge=0)
    """Agent index (required for ``agent`` and ``learner``; must be unset for ``env``)."""
    at_env_steps: int = Field(ge=0)
    """Kill once the run has done this many env steps."""
    restart_after_env_steps: int | None = Field(None, ge=0)
    """Restart the process once the run has done this many more env steps; unset = it stays down for
    the rest of the run. An env kill must use 0 (env steps cannot advance while the env is down)."""

    @model_validator(mode="after")
    def _target(self) -> KillFault:
        if self.role in ("agent", "learner") and self.agent is None:
            raise ValueError(f"a kill fault of role {self.role!r} needs 'agent: <index>'")
        if self.role == "env":
            if self.agent is not None:
                raise ValueError("a kill fault of role 'env' takes no 'agent'")
            if self.restart_after_env_steps != 0:
                raise ValueError(
                    "a kill fault of role 'env' needs 'restart_after_env_steps: 0' "
                    "(env steps cannot advance while the env is down)"
                )
        return self


class PartitionFault(_Strict):
    """Cut a set of directed bus links for an interval (drops with cause ``partition``)."""

    kind: Literal["partition"]
    links: list[tuple[NonNegativeInt, NonNegativeInt]] = Field(min_length=1)
    """Directed links ``[src, dst]`` (agent indices) that lose every message while the fault lasts."""
    from_env_steps: int = Field(ge=0)
    to_env_steps: int = Field(ge=0)

    @model_validator(mode="after")
    def _interval(self) -> PartitionFault:
        if self.to_env_steps <= self.from_env_steps:
            raise ValueError("to_env_steps must be greater than from_env_steps")
        return self


class DegradeFault(_Strict):
    """Change the parameters of some bus links for an interval."""

    kind: Literal["degrade"]
    links: list[tuple[NonNegativeInt, NonNegativeInt]] = Field(min_length=1)
    """Directed links ``[src, dst]`` (agent indices) that are degraded while the fault lasts."""
    from_env_steps: int = Field(ge=0)
    to_env_steps: int = Field(ge=0)
    rate_bps: float | None = Field(None, gt=0)
    """Link rate in bit/s during the fault."""
    loss: float | None = Field(None, ge=0.0, le=1.0)
    """Bernoulli loss probability during the fault."""
    latency_ms: float | None = Field(None, ge=0)
    """One-way latency of the link during the fault (replaces the configured latency)."""

    @model_validator(mode="after")
    def _something_changes(self) -> DegradeFault:
        if self.to_env_steps <= self.from_env_steps:
            raise ValueError("to_env_steps must be greater than from_env_steps")
        if self.rate_bps is None and self.loss is None and self.latency_ms is None:
            raise ValueError("a degrade fault needs at least one of rate_bps, loss, latency_ms")
        return self


Fault = Annotated[KillFault | PartitionFault | DegradeFault, Field(discriminator="kind")]
"""One entry of the ``faults`` schedule, selected by its ``kind``."""


class Config(_Strict):
    """A whole marlmesh run."""

    seed: int = 0
    env: EnvConfig = Field(default_factory=EnvConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    channel: ChannelConfig = Field(default_factory=ChannelConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    faults: list[Fault] = Field(default_factory=list)
    """Fault schedule driven by the launcher (kill / partition / degrade entries); empty = no faults."""

    @model_validator(mode="after")
    def _entity_actor_fits(self) -> Config:
        if self.algo.ppo.actor_net != "entity":
            return self
        if self.env.name not in ENTITY_LAYOUT_ENVS:
            raise ValueError(
                f"algo.ppo.actor_net=entity needs an env with a known entity layout ({', '.join(ENTITY_LAYOUT_ENVS)}),"
                f" got env.name={self.env.name!r}"
            )
        channel = self.channel
        if channel.name not in ("none", "dgat") or (channel.name == "dgat" and channel.dgat.actor != "two_stream"):
            shown = "dgat with channel.dgat.actor=joint" if channel.name == "dgat" else repr(channel.name)
            raise ValueError(
                "algo.ppo.actor_net=entity replaces the actor that reads the own observation alone: it needs "
                f"channel.name=none or channel.name=dgat with channel.dgat.actor=two_stream, got {shown}"
            )
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into ``(["a", "b", "c"], value)``; the value is a YAML scalar.

    Raises:
        ConfigError: If the item has no ``=`` or an empty key.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.total_env_steps=20000")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment in {key!r}")
    return parts, _parse_scalar(raw)


def _parse_scalar(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``--set`` override applied."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _models_in(annotation: Any) -> list[Any]:
    """Pydantic models inside an annotation (through ``list[...]``, unions and ``Annotated``)."""
    if getattr(annotation, "model_fields", None) is not None:
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _valid_keys_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):  # list index: stay on the list's annotation
            continue
        candidates = _models_in(model)
        tagged = [m for m in candidates if _literal_kind(m) == part]
        if tagged:  # discriminated union member, e.g. faults.0.kill
            model = tagged[0]
            continue
        fields = candidates[0].model_fields if len(candidates) == 1 else None
        if fields is None or part not in fields:
            return []
        model = fields[part].annotation
    candidates = _models_in(model)
    return sorted(candidates[0].model_fields) if len(candidates) == 1 else []


def _literal_kind(model: Any) -> Any:
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 else None


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
    path = ".".join(str(p) for p in loc) or "<root>"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys_at(loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?" if near else ""
        return f"unknown config key {path!r}{hint} (valid keys here: {', '.join(valid)})"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across sections names its keys itself
        return f"config: {msg}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"config key {path!r}: {msg}{shown}"


def validate(data: dict[str, Any]) -> Config:
    """Validate a plain dict into a :class:`Config`.

    Raises:
        ConfigError: One line listing every problem with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    Raises:
        ConfigError: If the file is missing or unreadable, or the result does not validate.
    """
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    return validate(apply_overrides(data, overrides or []))


def dump_config(config: Config) -> str:
    """The resolved config as YAML (every key, defaults included)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

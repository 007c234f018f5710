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
    obs_radius: float | None = None
    """Partial observability radius (MPE). Not implemented yet: must stay unset."""
    step_deadline_ms: float = Field(10_000.0, gt=0)
    """Barrier deadline: after the first action of a tick arrives, agents missing after this long get a
    default action (counted)."""
    max_missed_deadlines: int = Field(3, ge=1)
    """An agent that misses this many deadlines in a row is no longer waited for until it steps again."""

    @model_validator(mode="after")
    def _obs_radius_not_yet(self) -> EnvConfig:
        if self.obs_radius is not None:
            raise ValueError("obs_radius (partial observability) is not implemented yet; leave it unset")
        return self


class LinkConfig(_Strict):
    """Parameters of one directed link (netem semantics, see DESIGN.md)."""

    rate_bps: float | None = Field(None, gt=0)
    """Link rate in bit/s; unset = unlimited."""
    latency_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    loss: float = Field(0.0, ge=0.0, le=1.0)
    """Bernoulli loss probability per message."""
    range: float | None = Field(None, gt=0)
    """Radio range in env units; unset = unlimited."""
    queue_limit: int | None = Field(None, ge=1)
    """Drop-tail queue limit in messages; unset = unlimited."""

    def is_ideal(self) -> bool:
        """True when the link imposes no constraint at all."""
        return (
            self.rate_bps is None
            and self.latency_ms == 0
            and self.jitter_ms == 0
            and self.loss == 0
            and self.range is None
            and self.queue_limit is None
        )


class LinksConfig(_Strict):
    """Link emulation between agents."""

    model: str = "ideal"
    """Link model plugin (``marlmesh.links``)."""
    default: LinkConfig = Field(default_factory=LinkConfig)

    @model_validator(mode="after")
    def _ideal_only_for_now(self) -> LinksConfig:
        if self.model == "ideal" and not self.default.is_ideal():
            raise ValueError(
                "link constraints (rate/latency/jitter/loss/range/queue_limit) need a link-emulation model; "
                "only 'ideal' is installed in this version, so leave bus.links.default at its defaults"
            )
        return self


class BusConfig(_Strict):
    """The agent-to-agent communication bus (ZeroMQ, brokerless)."""

    clock: Literal["sim", "wall"] = "sim"
    """``sim``: rounds complete when every live peer's message arrived (deterministic); ``wall``: real
    deadlines."""
    round_timeout_ms: float = Field(5_000.0, gt=0)
    """Longest wait for peers' messages of one round before going on with what arrived (counted)."""
    header_bytes: int = Field(32, ge=0)
    """Per-message header overhead counted in bytes sent."""
    links: LinksConfig = Field(default_factory=LinksConfig)


class ChannelConfig(_Strict):
    """What agents say to each other (``marlmesh.channels`` plugin)."""

    name: str = "none"
    """``none`` (no communication) or ``broadcast`` (each agent sends an encoding of its observation)."""
    message_dim: int = Field(16, ge=1, le=4096)
    """Size of one message vector."""


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
    norm_adv: bool = True
    """Normalise advantages per minibatch (per agent: every learner sees only its agent)."""
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of actor and critic MLPs (tanh, orthogonal init)."""


class AlgoConfig(_Strict):
    """The learning algorithm (``marlmesh.algos`` plugin)."""

    name: str = "ippo"
    ppo: PPOConfig = Field(default_factory=PPOConfig)


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
    """Cut a set of directed bus links for an interval (drops with cause ``partition``). Not implemented yet."""

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
    """Change the parameters of some bus links for an interval. Not implemented yet."""

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
    """Added latency during the fault."""

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

"""``bus``: the comm bus, its link emulation, trace and security (what the transport layer reads)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from marlmesh.config.base import StrictModel

DEFAULT_QUEUE_LIMIT = 1000
"""Default ``queue_limit``: netem's default ``limit`` (packets), here messages per directed link and env copy."""


class GilbertElliottConfig(StrictModel):
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


class LinkConfig(StrictModel):
    """Parameters of one directed link (netem semantics, see docs/link-emulation.md).

    Per message (one env copy's row on one directed link): range check -> loss -> drop-tail queue ->
    delay (latency + jitter) -> serialization at the link rate:
    ``visible_at = max(now + delay, previous visible_at) + bits / rate_bps`` -> dropped as ``expired`` (never
    queued) if the receiver would first read it older than ``bus.lifespan_ms``.
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
    queue_limit: int | None = Field(DEFAULT_QUEUE_LIMIT, ge=1)
    """Drop-tail queue limit in messages in flight on the link (sent, not yet visible), counted per env copy;
    ``null`` = unlimited. The default, 1000, is netem's own default ``limit`` (one netem queue per directed link
    and env copy); like netem's it counts rows still in their delay. Rows the receiver would first read older than
    ``bus.lifespan_ms`` are never queued, so at the default lifespan (1 s) at most lifespan / round interval rows
    (20 at two rounds per 100 ms step) are in flight and the limit acts only with a longer lifespan, bounding the
    queue as a netem qdisc does. Alone it is no constraint (nothing is in flight without delay or a rate limit)."""
    queue_limit_bytes: int | None = Field(None, ge=1)
    """Drop-tail queue limit in bytes in flight on the link, counted per env copy; unset = unlimited."""

    def is_ideal(self) -> bool:
        """True when the link imposes no constraint at all.

        Queue limits do not count: without delay or a rate limit nothing is ever in flight, so they never drop.
        """
        lossless = self.loss == 0 if self.loss_model == "bernoulli" else self.gilbert_elliott.mean_loss() == 0
        return (
            self.rate_bps is None and self.latency_ms == 0 and self.jitter_ms == 0 and lossless and self.range is None
        )


class LinkOverride(StrictModel):
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
    """Unset: inherit; ``null``: no queue limit on these links."""
    queue_limit_bytes: int | None = Field(None, ge=1)

    def matches(self, src: int, dst: int) -> bool:
        """Whether this override applies to the directed link ``src -> dst``."""
        return self.src in ("*", src) and self.dst in ("*", dst)


class LinksConfig(StrictModel):
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
                "rate/latency/jitter/loss/range (queue limits act only on delayed links)"
            )
        if self.model == "trace" and not self.trace_file:
            raise ValueError("model 'trace' needs bus.links.trace_file")
        return self


class TraceConfig(StrictModel):
    """Recording of every message's fate (sent, visible at, dropped and why) into ``RUN_DIR/bus_trace.bin``."""

    enabled: bool = True
    max_records_per_agent: int = Field(250_000, ge=0)
    """Records written per agent (one per message row and link); later ones are counted, not written."""


class SecurityConfig(StrictModel):
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


class BusConfig(StrictModel):
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
    """Mailbox entries older than this (bus clock, since the sender sent them) are no longer used; a row the
    receiver would first read older than this is dropped by its sender's link (counted as ``expired``)."""
    header_bytes: int = Field(32, ge=0)
    """Per-message header overhead added to the payload bytes (counted and serialized on links)."""
    quantization: Literal["fp32", "fp16", "int8"] = "fp32"
    """Wire format of float payloads: fp16 halves and int8 (with a per-row scale) quarters the bytes."""
    links: LinksConfig = Field(default_factory=LinksConfig)
    trace: TraceConfig = Field(default_factory=TraceConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)

"""Link faults from the ``faults:`` schedule, applied by the sender's link emulation.

- ``partition``: every message on the listed directed links is dropped (cause ``partition``) while the
  fault lasts.
- ``degrade``: the listed links take other parameters (rate, loss, latency, jitter) while it lasts.

A fault lasts from ``from_env_steps`` (inclusive) to ``to_env_steps`` (exclusive, None = until the end),
measured in env steps (single-env steps summed over the B copies, i.e. ``tick * B``), so the same schedule
hits the same ticks on every run. Links are ``(src, dst)`` pairs; ``"*"`` matches any agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from marlmesh.config.bus import LinkConfig

Endpoint = int | str


@dataclass(frozen=True)
class LinkFault:
    """One scheduled fault on a set of directed links."""

    kind: str  # "partition" | "degrade"
    links: tuple[tuple[Endpoint, Endpoint], ...]
    from_env_steps: int
    to_env_steps: int | None = None
    changes: dict[str, float] = field(default_factory=dict)  # degrade: LinkConfig fields to override

    def active(self, env_steps: int) -> bool:
        """Whether the fault holds at ``env_steps``."""
        return env_steps >= self.from_env_steps and (self.to_env_steps is None or env_steps < self.to_env_steps)

    def covers(self, src: int, dst: int) -> bool:
        """Whether the directed link ``src -> dst`` is one of the fault's links."""
        return any(s in ("*", src) and d in ("*", dst) for s, d in self.links)


class LinkFaults:
    """The link part of a fault schedule, queried by a sender per message."""

    def __init__(self, faults: Sequence[LinkFault]) -> None:
        for f in faults:
            if f.kind not in ("partition", "degrade"):
                raise ValueError(f"link fault kind {f.kind!r}: expected 'partition' or 'degrade'")
        self.faults = list(faults)

    @classmethod
    def from_config(cls, faults: Sequence[object]) -> LinkFaults:
        """The ``partition``/``degrade`` entries of a ``faults`` schedule (``kill`` is the launcher's)."""
        out = []
        for f in faults:
            kind = getattr(f, "kind", None)
            if kind not in ("partition", "degrade"):
                continue
            changes = {
                k: float(getattr(f, k))
                for k in ("rate_bps", "loss", "latency_ms", "jitter_ms")
                if getattr(f, k, None) is not None
            }
            links = tuple((int(s), int(d)) for s, d in f.links)
            out.append(LinkFault(kind, links, int(f.from_env_steps), f.to_env_steps, changes))
        return cls(out)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def partitioned(self, src: int, dst: int, env_steps: int) -> bool:
        """Whether ``src -> dst`` is cut at ``env_steps``."""
        return any(f.kind == "partition" and f.active(env_steps) and f.covers(src, dst) for f in self.faults)

    def degrade(self, link: LinkConfig, src: int, dst: int, env_steps: int) -> LinkConfig:
        """``link`` with every active degrade fault on ``src -> dst`` applied (later faults win)."""
        for f in self.faults:
            if f.kind == "degrade" and f.active(env_steps) and f.covers(src, dst) and f.changes:
                link = link.model_copy(update=f.changes)
        return link

"""Link model plugins (``marlmesh.links``): which parameters every directed link has, at every moment.

- ``ideal``: no constraint at all. The bus skips emulation (every row is visible when it is sent).
- ``netem``: ``bus.links.default`` with ``bus.links.overrides`` per link (fixed over time).
- ``trace``: ``netem`` whose parameters follow a recorded per-link series (:mod:`comm_bus.link_trace`).

The fate of each message is decided by :class:`comm_bus.link_emulation.LinkEmulator` from these parameters.
"""

from __future__ import annotations

from marlmesh.config.bus import LinkConfig, LinksConfig


def resolve_link(config: LinksConfig, src: int, dst: int) -> LinkConfig:
    """``bus.links.default`` with every matching override applied (later overrides win)."""
    link = config.default
    for ov in config.overrides:
        if ov.matches(src, dst):
            changes = {k: getattr(ov, k) for k in ov.model_fields_set if k not in ("src", "dst")}
            if changes:
                link = link.model_copy(update=changes)
    return link


class IdealLink:
    """No loss, no delay, unlimited rate and range: every message is visible as soon as it is sent.

    Args:
        config: The ``bus.links`` section (unused: nothing to configure).
    """

    name = "ideal"
    ideal = True

    def __init__(self, config: LinksConfig) -> None:
        self.config = config

    def params_for(self, src: int, dst: int, now: float) -> LinkConfig:
        """An unconstrained link."""
        return LinkConfig()


class NetemLink:
    """Fixed per-link parameters: ``bus.links.default`` plus ``bus.links.overrides``.

    Args:
        config: The ``bus.links`` section.
    """

    name = "netem"
    ideal = False

    def __init__(self, config: LinksConfig) -> None:
        self.config = config
        self._cache: dict[tuple[int, int], LinkConfig] = {}

    def params_for(self, src: int, dst: int, now: float) -> LinkConfig:
        """Parameters of ``src -> dst`` (the same at every time)."""
        key = (src, dst)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = resolve_link(self.config, src, dst)
        return found


class TraceLink(NetemLink):
    """Per-link parameters replayed from ``bus.links.trace_file`` over the netem parameters.

    Args:
        config: The ``bus.links`` section (``trace_file`` must be set).

    Raises:
        ValueError: If the trace file is missing or malformed (the message names the line).
    """

    name = "trace"

    def __init__(self, config: LinksConfig) -> None:
        super().__init__(config)
        from comm_bus.link_trace import LinkTrace

        if not config.trace_file:
            raise ValueError("bus.links.trace_file: the 'trace' link model needs a trace file")
        self.trace = LinkTrace.load(config.trace_file)

    def params_for(self, src: int, dst: int, now: float) -> LinkConfig:
        """The netem parameters of ``src -> dst`` updated by the trace records in force at ``now``."""
        return self.trace.at(super().params_for(src, dst, now), src, dst, now)

"""SIGINT/SIGTERM as a stop request for a launcher loop (``marlmesh train``, the centralized trainer)."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """While installed, SIGINT and SIGTERM set :attr:`event` instead of raising; :meth:`restore` undoes it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[int] = []
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._previous:
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        self.event.set()

    @property
    def signal_name(self) -> str | None:
        """Name of the first signal received (``SIGINT``), None if none."""
        return signal.Signals(self.received[0]).name if self.received else None

    def restore(self) -> None:
        """Put the previous handlers back."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)

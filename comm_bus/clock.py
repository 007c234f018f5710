"""Bus clocks: when a round's message is sent and when the round's inbox is read.

- :class:`SimClock` (default): simulated time. Tick ``t`` starts at ``t * dt``; round ``k`` occupies
  ``[t*dt + k*I, t*dt + (k+1)*I)`` where ``I`` is the round interval: messages are sent at its start and
  read at its end, so a message whose link delay exceeds ``I`` is seen in a later round (stale) or, past
  the lifespan, never. Transport underneath is lossless and the emulation alone decides visibility, so the
  same seed gives the same deliveries whatever the machine load.
- :class:`WallClock`: real time (``time.time()``, seconds since the epoch, shared by processes on one host;
  across hosts the emulated delays are only as good as clock synchronisation). A round is read when every
  peer's message is visible or at the round deadline.
"""

from __future__ import annotations

import math
import time


class SimClock:
    """Simulated bus time.

    Args:
        dt: Simulated seconds per env step.
        round_interval: Simulated seconds per communication round.
    """

    name = "sim"
    strict = True  # a frame sent exactly at the read instant belongs to the next round

    def __init__(self, dt: float, round_interval: float) -> None:
        if dt <= 0 or round_interval <= 0:
            raise ValueError(f"sim clock needs dt > 0 and round_interval > 0, got {dt}, {round_interval}")
        self.dt = dt
        self.round_interval = round_interval

    def send_time(self, tick: int, round: int) -> float:
        """Bus time at which round ``round`` of tick ``tick`` is sent."""
        return tick * self.dt + round * self.round_interval

    def read_time(self, tick: int, round: int) -> float:
        """Bus time at which that round's inbox is read."""
        return tick * self.dt + (round + 1) * self.round_interval

    def usable_until(self, tick: int, round: int, sent_at: float, lifespan: float) -> float:
        """The last read of round ``round`` at which a row sent at ``sent_at`` is still fresh (-inf: none).

        Round ``round``'s inbox is read once per tick; a row that becomes visible after this read is first read
        older than ``lifespan`` (the mailbox's test, ``read time - sent_at <= lifespan``), so it is never used.
        """
        if self.read_time(tick, round) - sent_at > lifespan:
            return -math.inf
        t = tick + max(0, int((lifespan - (self.read_time(tick, round) - sent_at)) // self.dt))
        # settle float rounding on the exact test the mailbox applies
        while self.read_time(t + 1, round) - sent_at <= lifespan:
            t += 1
        while self.read_time(t, round) - sent_at > lifespan:
            t -= 1
        return self.read_time(t, round)


class WallClock:
    """Real time: sends and reads happen now."""

    name = "wall"
    strict = False

    def send_time(self, tick: int, round: int) -> float:
        """Now."""
        return time.time()

    def read_time(self, tick: int, round: int) -> float:
        """Now."""
        return time.time()

    def usable_until(self, tick: int, round: int, sent_at: float, lifespan: float) -> float:
        """The latest visibility time at which a row sent at ``sent_at`` can still be read fresh."""
        return sent_at + lifespan

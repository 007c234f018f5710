"""The bus end of ``marlmesh bench fuzz``: a real :class:`~comm_bus.bus.Bus` in its own process.

``python -m marlmesh.bench.fuzz_bus_target --max-frame-bytes M`` binds agent 1 of 3 on 127.0.0.1 and prints
``READY <bus endpoint> <control endpoint>``. It drains its PULL socket the way an agent does (``Bus.collect``),
reads every held frame out of the mailbox (the read path of accepted frames) and answers each request on its
control REP socket with its counters as JSON: ``frames_received``, ``frame_drops`` (by cause: frames refused by
the receive path) and ``row_drops`` (rows dropped later by the mailbox). The request ``stop`` makes it exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import zmq
from prometheus_client import CollectorRegistry

from comm_bus.addressing import PeerAddressing
from comm_bus.bus import Bus
from comm_bus.metrics import BusMetrics
from marlmesh import contract, process

AGENT, NUM_AGENTS = 1, 3
CHANNEL = "fuzz-control"
READ_TIMES = (-1.0, 0.5, 1e12)
"""Mailbox read times of every accepted frame: before, around and long after any visibility time."""


def counters(bus: Bus) -> dict[str, object]:
    """Frames received, frames dropped by the receive path (by cause) and rows dropped by the mailbox."""
    rows = Counter(bus.mailbox.counts) + Counter(bus.transport.auth_counts)
    frames = Counter(bus.totals.dropped)
    frames.subtract(rows)
    return {
        "frames_received": bus.totals.frames_received,
        "frame_drops": {k: v for k, v in sorted(frames.items()) if v},
        "row_drops": {k: v for k, v in sorted(rows.items()) if v},
    }


def serve(max_frame_bytes: int) -> None:
    """Run the bus until a ``stop`` request."""
    ctx = zmq.Context()
    bus = Bus(  # binds a port the OS assigns; it never dials its (absent) peers: it only receives
        AGENT,
        NUM_AGENTS,
        PeerAddressing.os_assigned(),
        max_frame_bytes=max_frame_bytes,
        metrics=BusMetrics(CollectorRegistry()),
        context=ctx,
    )
    control = ctx.socket(zmq.REP)
    control.setsockopt(zmq.LINGER, 0)
    control.bind("tcp://127.0.0.1:*")
    endpoint = f"tcp://{contract.LOCAL_HOST}:{bus.bound_port}"
    print("READY", endpoint, control.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    poller = zmq.Poller()
    poller.register(control, zmq.POLLIN)
    while True:
        bus.collect(tick=0, round=0, channel=CHANNEL, expected=[], timeout_s=0)
        for src, channel, rnd in list(bus.mailbox.slots):
            for now in READ_TIMES:
                bus.mailbox.read(src, channel, rnd, now)
        bus.mailbox.slots.clear()
        if not poller.poll(5):
            continue
        request = control.recv()
        bus.collect(tick=0, round=0, channel=CHANNEL, expected=[], timeout_s=0)
        control.send_string(json.dumps(counters(bus)))
        if request == b"stop":
            break
    bus.close()
    control.close(0)
    ctx.term()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m marlmesh.bench.fuzz_bus_target", description=__doc__)
    p.add_argument("--max-frame-bytes", type=int, default=8192, help="larger frames are refused")
    ns = p.parse_args(argv)
    process.exit_with_parent()
    serve(ns.max_frame_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

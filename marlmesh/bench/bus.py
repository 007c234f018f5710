"""``marlmesh bench bus``: the bus API against raw pyzmq, two processes on 127.0.0.1, in the same run.

Measured (each a median over ``--repeats`` interleaved trials, so that a noisy neighbour hits both sides):

- delivered logical messages/s through :class:`comm_bus.bus.Bus` (ideal links, sim clock; one envelope
  carries ``--batch`` rows, each row one logical message of 256 B or 4 KiB) vs raw pyzmq PUSH/PULL of
  frames of the same size: ``ratio_256``, ``ratio_4096``;
- round-trip time of one message through the bus API (send, peer collects and answers, collect) vs a raw
  pyzmq REQ/REP round trip of the same size: ``rtt_p50_us``/``rtt_p99_us`` vs ``raw_rtt_p50_us``/``raw_rtt_p99_us``,
  and ``rtt_ratio`` (bus p50 / raw p50);
- the cost of emulation: the bus throughput with netem links switched on (1 ms latency, 0.5 ms jitter,
  1 % loss, 1 Gbit/s) over the ideal bus: ``emulation_ratio_256``.

The result also records the load average before and after the run and the git commit.
With ``--json`` the last line printed is one JSON object; ``--out FILE`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
EMULATED = [
    "bus.links.default.latency_ms=1",
    "bus.links.default.jitter_ms=0.5",
    "bus.links.default.loss=0.01",
    "bus.links.default.rate_bps=1e9",
]


def _port_table() -> Any:
    """Ports of the two endpoints of one pair, each filled in by its process once bound (0: not yet)."""
    return mp.get_context("spawn").Array("i", 2)


def _await_ports(table: Any, count: int, timeout: float = 60.0) -> list[int]:
    """The first ``count`` ports of ``table`` once their processes have bound them."""
    deadline = time.monotonic() + timeout
    while not all(table[:count]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench bus: the other process did not bind its socket within {timeout:.0f}s")
        time.sleep(0.01)
    return list(table[:count])


def _bus(index: int, table: Any, overrides: list[str]):  # noqa: ANN202 (imports stay in the child)
    from prometheus_client import CollectorRegistry

    from comm_bus.addressing import PeerAddressing
    from comm_bus.bus import Bus
    from comm_bus.metrics import BusMetrics
    from marlmesh.config import load_config

    cfg = load_config(None, ["bus.trace.enabled=false", "bus.lifespan_ms=1e9", *overrides]).bus
    addressing = PeerAddressing.os_assigned(HOST, "(the pair's shared array)")
    bus = Bus(index, 2, addressing, config=cfg, metrics=BusMetrics(CollectorRegistry()))
    table[index] = bus.bound_port
    bus.dial_peers(_await_ports(table, 2))
    return bus


def _bus_sender(table: Any, row_bytes: int, batch: int, frames: int, overrides: list[str], ready: Any) -> None:
    bus = _bus(0, table, overrides)
    payload = {"msg": np.ones((batch, row_bytes // 4), np.float32)}
    ready.wait()
    for tick in range(frames):
        bus.send(tick=tick, round=0, channel="bench", payload=payload, peers=[1])
    time.sleep(1.0)
    bus.close()


def _bus_receiver(table: Any, frames: int, overrides: list[str], ready: Any, out: Any) -> None:
    bus = _bus(1, table, overrides)
    ready.wait()
    start = None
    delivered = 0
    for tick in range(frames):
        got = bus.collect(tick=tick, round=0, channel="bench", expected=[0], timeout_s=30)
        if start is None:
            start = time.perf_counter()
        delivered += int(got[0].latencies.size) if 0 in got else 0
    elapsed = time.perf_counter() - (start or time.perf_counter())
    out.send({"delivered": delivered, "seconds": elapsed, "first_frame_excluded": True})
    bus.close()


def _raw_sender(table: Any, row_bytes: int, count: int, ready: Any) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.connect(f"tcp://{HOST}:{_await_ports(table, 1)[0]}")
    frame = b"\x01" * row_bytes
    ready.wait()
    for _ in range(count):
        sock.send(frame, copy=row_bytes > 1024)
    time.sleep(1.0)
    sock.close(0)


def _bind_raw(sock: Any, table: Any) -> None:
    """Bind ``sock`` to a port the OS assigns and publish it as entry 0 of ``table``."""
    import zmq

    sock.bind(f"tcp://{HOST}:0")
    table[0] = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def _raw_receiver(table: Any, count: int, ready: Any, out: Any) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PULL)
    _bind_raw(sock, table)
    ready.wait()
    sock.recv()
    start = time.perf_counter()
    for _ in range(count - 1):
        sock.recv(copy=False)
    out.send({"delivered": count - 1, "seconds": time.perf_counter() - start})
    sock.close(0)


def _bus_echo(table: Any, rounds: int, row_bytes: int, ready: Any) -> None:
    bus = _bus(1, table, [])
    ready.wait()
    for tick in range(rounds):
        got = bus.collect(tick=tick, round=0, channel="ping", expected=[0], timeout_s=30)
        bus.send(tick=tick, round=0, channel="pong", payload=got[0].payload, peers=[0])
    time.sleep(0.5)
    bus.close()


def _bus_pinger(table: Any, rounds: int, row_bytes: int, ready: Any, out: Any) -> None:
    bus = _bus(0, table, [])
    payload = {"msg": np.ones((1, row_bytes // 4), np.float32)}
    ready.wait()
    rtts = []
    for tick in range(rounds):
        t0 = time.perf_counter()
        bus.send(tick=tick, round=0, channel="ping", payload=payload, peers=[1])
        bus.collect(tick=tick, round=0, channel="pong", expected=[1], timeout_s=30)
        rtts.append(time.perf_counter() - t0)
    out.send({"rtts": rtts[len(rtts) // 10 :]})  # the first 10 % warm up
    bus.close()


def _raw_echo(table: Any, rounds: int, ready: Any) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REP)
    _bind_raw(sock, table)
    ready.wait()
    for _ in range(rounds):
        sock.send(sock.recv())
    sock.close(0)


def _raw_pinger(table: Any, rounds: int, row_bytes: int, ready: Any, out: Any) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(f"tcp://{HOST}:{_await_ports(table, 1)[0]}")
    frame = b"\x01" * row_bytes
    ready.wait()
    rtts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sock.send(frame)
        sock.recv()
        rtts.append(time.perf_counter() - t0)
    out.send({"rtts": rtts[len(rtts) // 10 :]})
    sock.close(0)


def _pair(target_a: Any, args_a: tuple, target_b: Any, args_b: tuple, timeout: float = 120.0) -> dict[str, Any]:
    """Run two processes; ``target_b`` reports a result over a pipe."""
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    a = ctx.Process(target=target_a, args=(*args_a, ready), daemon=True)
    b = ctx.Process(target=target_b, args=(*args_b, ready, send), daemon=True)
    b.start()
    a.start()
    time.sleep(1.5)  # both processes imported, bound and connected
    ready.set()
    try:
        if not recv.poll(timeout):
            raise RuntimeError(f"benchmark worker {target_b.__name__} gave no result within {timeout:.0f}s")
        return recv.recv()
    finally:
        for p in (a, b):
            p.join(5)
            if p.is_alive():
                p.kill()


def measure_throughput(row_bytes: int, batch: int, logical: int, overrides: list[str] | None = None) -> float:
    """Delivered logical messages/s through the bus API."""
    frames = max(10, logical // batch)
    table = _port_table()
    extra = overrides or []
    res = _pair(_bus_sender, (table, row_bytes, batch, frames, extra), _bus_receiver, (table, frames, extra))
    return res["delivered"] / res["seconds"]


def measure_raw_throughput(row_bytes: int, count: int) -> float:
    """Delivered frames/s with raw pyzmq PUSH/PULL."""
    table = _port_table()
    res = _pair(_raw_sender, (table, row_bytes, count), _raw_receiver, (table, count))
    return res["delivered"] / res["seconds"]


def _percentiles(rtts: list[float]) -> tuple[float, float]:
    arr = np.asarray(rtts) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def run(repeats: int = 3, batch: int = 64, messages: int = 200_000, rtt_rounds: int = 2_000) -> dict[str, Any]:
    """Run every measurement ``repeats`` times (interleaved) and return the result record."""
    from marlmesh.bench.meshrun import load_average, machine

    load_before = load_average()
    trials: dict[str, list[float]] = {
        k: [] for k in ("bus_256", "raw_256", "bus_4096", "raw_4096", "emu_256", "rtt50", "rtt99", "raw50", "raw99")
    }
    for r in range(repeats):
        print(f"bench bus: trial {r + 1}/{repeats}", file=sys.stderr, flush=True)
        trials["bus_256"].append(measure_throughput(256, batch, messages))
        trials["raw_256"].append(measure_raw_throughput(256, messages))
        trials["emu_256"].append(measure_throughput(256, batch, messages, EMULATED))
        trials["bus_4096"].append(measure_throughput(4096, batch, messages // 8))
        trials["raw_4096"].append(measure_raw_throughput(4096, messages // 8))
        table = _port_table()
        p50, p99 = _percentiles(
            _pair(_bus_echo, (table, rtt_rounds, 256), _bus_pinger, (table, rtt_rounds, 256))["rtts"]
        )
        trials["rtt50"].append(p50)
        trials["rtt99"].append(p99)
        table = _port_table()
        p50, p99 = _percentiles(_pair(_raw_echo, (table, rtt_rounds), _raw_pinger, (table, rtt_rounds, 256))["rtts"])
        trials["raw50"].append(p50)
        trials["raw99"].append(p99)
    med = {k: statistics.median(v) for k, v in trials.items()}
    return {
        "benchmark": "bus",
        "ratio_256": round(med["bus_256"] / med["raw_256"], 3),
        "ratio_4096": round(med["bus_4096"] / med["raw_4096"], 3),
        "bus_msgs_per_s_256": round(med["bus_256"]),
        "raw_msgs_per_s_256": round(med["raw_256"]),
        "bus_msgs_per_s_4096": round(med["bus_4096"]),
        "raw_msgs_per_s_4096": round(med["raw_4096"]),
        "emulated_msgs_per_s_256": round(med["emu_256"]),
        "emulation_ratio_256": round(med["emu_256"] / med["bus_256"], 3),
        "rtt_p50_us": round(med["rtt50"], 1),
        "rtt_p99_us": round(med["rtt99"], 1),
        "raw_rtt_p50_us": round(med["raw50"], 1),
        "raw_rtt_p99_us": round(med["raw99"], 1),
        "rtt_ratio": round(med["rtt50"] / med["raw50"], 2),
        "batch_rows_per_envelope": batch,
        "repeats": repeats,
        "trials": {k: [round(x, 1) for x in v] for k, v in trials.items()},
        "machine": {"cpus": mp.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_before": load_before,
        **machine(),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench bus``."""
    p.add_argument("--repeats", type=int, default=3, help="interleaved trials per measurement (median reported)")
    p.add_argument("--batch", type=int, default=64, help="rows (logical messages) per envelope")
    p.add_argument("--messages", type=int, default=200_000, help="logical 256 B messages per throughput trial")
    p.add_argument("--rtt-rounds", type=int, default=2_000, help="round trips per latency trial")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")


def main(ns: argparse.Namespace) -> int:
    """Run the benchmark and print a table (and JSON)."""
    result = run(ns.repeats, ns.batch, ns.messages, ns.rtt_rounds)
    print(
        f"bus vs raw pyzmq, 256 B:  {result['bus_msgs_per_s_256']:>12,} vs {result['raw_msgs_per_s_256']:>12,} msg/s"
        f"  ratio {result['ratio_256']}\n"
        f"bus vs raw pyzmq, 4 KiB:  {result['bus_msgs_per_s_4096']:>12,} vs {result['raw_msgs_per_s_4096']:>12,} msg/s"
        f"  ratio {result['ratio_4096']}\n"
        f"emulation on (256 B):     {result['emulated_msgs_per_s_256']:>12,} msg/s"
        f"  ratio to ideal {result['emulation_ratio_256']}\n"
        f"round trip p50/p99:       bus {result['rtt_p50_us']}/{result['rtt_p99_us']} us,"
        f" raw REQ/REP {result['raw_rtt_p50_us']}/{result['raw_rtt_p99_us']} us (p50 ratio {result['rtt_ratio']})"
    )
    from marlmesh.bench import emit

    return emit(ns, result)

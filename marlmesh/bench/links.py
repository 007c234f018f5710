"""``marlmesh bench links``: training steps/s over saturated links against ideal links, in one run.

Three in-process teams (:class:`marlmesh.launch.inprocess.InProcessTeam`) of the same config are built in this
process, differing only in their links:

- ``ideal``: ``bus.links.default={}`` (the baseline);
- ``saturated``: the ``--saturated`` overrides (default: 1 kbit/s and 50 ms on every link, far below what a
  two-round channel sends), with the default drop-tail ``queue_limit``;
- ``saturated_unbounded``: the same links with ``queue_limit: null`` (no queue limit).

After a warm-up of each team (``--warmup`` fragments), ``--repeats`` cycles step every team in turn through
``--fragments`` rollout fragments (``train.rollout_steps`` env steps of the B copies, then the lockstep PPO
update of every learner), so every window does the same work: interleaved, so a noisy neighbour on the shared
machine hits them alike. Reported per cell: the median env steps per wall second and per CPU second of the
bench's process (which other processes do not change), their ratios to ``ideal``, and from the cell's buses at
the end: the delivery latency p50 (bus clock), the drops by cause and the frames held in the receivers'
mailboxes.

With ``--json`` the last line printed is one JSON object; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from marlmesh.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/dgmappo.yaml"
SATURATED = ["bus.links.default.rate_bps=1000", "bus.links.default.latency_ms=50"]
"""Default ``--saturated`` links: a 96-byte row takes 0.77 s at 1 kbit/s, a two-round channel sends one every 50 ms."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench links``."""
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument(
        "--saturated",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"link overrides of the saturated cells (default: {' '.join(SATURATED)})",
    )
    p.add_argument("--fragments", type=int, default=2, help="rollout fragments per measured window")
    p.add_argument("--warmup", type=int, default=1, help="rollout fragments of each cell before the first window")
    p.add_argument("--repeats", type=int, default=3, help="interleaved trials per cell (medians reported)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def cell_configs(ns: argparse.Namespace) -> dict[str, Config]:
    """The config of every cell: the given one in lockstep with an unbounded budget, then the cell's links.

    Raises:
        ConfigError: If a flag, key or value is invalid.
    """
    if ns.repeats < 1 or ns.fragments < 1 or ns.warmup < 0:
        raise ConfigError(
            f"--repeats and --fragments must be >= 1, --warmup >= 0, got {ns.repeats}, {ns.fragments}, {ns.warmup}"
        )
    saturated = ns.saturated or SATURATED
    base = [*ns.set, "train.weight_sync=lockstep", "train.total_env_steps=1000000000000", "train.max_wall_seconds=null"]
    cells = {
        "ideal": [*base, "bus.links.default={}"],
        "saturated": [*base, "bus.links.default={}", *saturated],
        "saturated_unbounded": [*base, "bus.links.default={}", *saturated, "bus.links.default.queue_limit=null"],
    }
    return {name: load_config(ns.config, sets) for name, sets in cells.items()}


def _window(team: Any, fragments: int) -> tuple[float, float]:
    """Env steps per wall second and per CPU second of this process (all threads) over ``fragments`` fragments.

    Each fragment ends with the PPO updates. CPU time is what the team itself used, so it holds still when other
    processes load the machine; wall time does not.
    """
    steps0, t0, cpu0 = team.env_steps, time.monotonic(), time.process_time()
    end = steps0 + fragments * team.config.train.rollout_steps * team.num_envs
    while team.env_steps < end:
        team.step()
    steps = team.env_steps - steps0
    return steps / (time.monotonic() - t0), steps / (time.process_time() - cpu0)


def bus_state(team: Any) -> dict[str, Any]:
    """Delivery latency p50, drops and held mailbox frames of a team's buses (None fields without a bus)."""
    from marlmesh.launch.summary import bus_summary

    bus = bus_summary(team.agent_stats())
    buses = [] if team.exchange is None else list(team.exchange.buses.values())
    return {
        "link_model": team.config.bus.links.resolved_model(),
        "delivery_latency_p50_seconds": bus["delivery_latency_p50_seconds"],
        "messages_sent": bus["messages_sent"],
        "messages_received": bus["messages_received"],
        "dropped": bus["dropped"],
        "mailbox_held_frames": sum(len(slot.held) for b in buses for slot in b.mailbox.slots.values()),
    }


def run(ns: argparse.Namespace, configs: dict[str, Config], log: Any) -> dict[str, Any]:
    """Warm up every cell, then interleaved windows; returns the result record."""
    from marlmesh.bench.meshrun import machine
    from marlmesh.launch.inprocess import InProcessTeam

    load_before = machine()["load_average"]
    teams = {name: InProcessTeam(config, run_dir=None) for name, config in configs.items()}
    rates: dict[str, list[float]] = {name: [] for name in teams}
    cpu_rates: dict[str, list[float]] = {name: [] for name in teams}
    try:
        for team in teams.values():
            _window(team, ns.warmup)
        for r in range(ns.repeats):
            for name, team in teams.items():
                wall, cpu = _window(team, ns.fragments)
                rates[name].append(wall)
                cpu_rates[name].append(cpu)
            log(
                f"{r + 1}/{ns.repeats}: "
                + ", ".join(f"{name} {rates[name][-1]:.0f}/s ({cpu_rates[name][-1]:.0f}/CPU s)" for name in teams)
            )
        states = {name: bus_state(team) for name, team in teams.items()}
    finally:
        for team in teams.values():
            team.close()
    ideal, ideal_cpu = statistics.median(rates["ideal"]), statistics.median(cpu_rates["ideal"])
    cells = {}
    for name in teams:
        median, cpu = statistics.median(rates[name]), statistics.median(cpu_rates[name])
        cells[name] = {
            "steps_per_s": round(median, 1),
            "ratio_to_ideal": round(median / ideal, 3) if ideal > 0 else None,
            "steps_per_cpu_s": round(cpu, 1),
            "cpu_ratio_to_ideal": round(cpu / ideal_cpu, 3) if ideal_cpu > 0 else None,
            "windows": [round(x, 1) for x in rates[name]],
            "cpu_windows": [round(x, 1) for x in cpu_rates[name]],
            **states[name],
        }
    config = configs["ideal"]
    return {
        "benchmark": "links",
        "config": str(ns.config),
        "overrides": list(ns.set),
        "saturated": list(ns.saturated or SATURATED),
        "algo": config.algo.name,
        "channel": config.channel.name,
        "num_envs": config.env.num_envs,
        "lifespan_ms": config.bus.lifespan_ms,
        "default_queue_limit": configs["saturated"].bus.links.default.queue_limit,
        "fragments_per_window": ns.fragments,
        "warmup_fragments": ns.warmup,
        "repeats": ns.repeats,
        "cells": cells,
        "load_average_before": load_before,
        **machine(),
    }


def main(ns: argparse.Namespace) -> int:
    """``marlmesh bench links``."""
    from marlmesh.bench import emit
    from marlmesh.launch.inprocess import check_inprocess

    try:
        configs = cell_configs(ns)
        for config in configs.values():
            check_inprocess(config)
    except ConfigError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr if ns.json else sys.stdout, flush=True)

    result = run(ns, configs, log)
    if not ns.json:
        for name, cell in result["cells"].items():
            log(
                f"{name}: {cell['steps_per_s']}/s ({cell['ratio_to_ideal']}x ideal), {cell['steps_per_cpu_s']}/CPU s "
                f"({cell['cpu_ratio_to_ideal']}x ideal), p50 latency {cell['delivery_latency_p50_seconds']}, "
                f"held frames {cell['mailbox_held_frames']}"
            )
    return emit(ns, result)

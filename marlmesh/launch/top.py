"""``marlmesh top``: a live terminal view of a running mesh, read from the processes' Prometheus endpoints.

Per agent: batched steps per second (over the refresh interval), bus messages sent and received, messages
dropped (all causes), the policy version it acts with; per env: env steps per second and episodes. The
endpoints come from ``RUN_DIR/processes.json`` (written by ``marlmesh train``, with each process's
``metrics_port``) or from ``--endpoint NAME=HOST:PORT`` flags (e.g. pods behind a port-forward).

``marlmesh top RUN_DIR`` refreshes every ``--interval`` seconds until Ctrl-C; ``--once`` prints one snapshot
(rates over one interval) and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 2.0
TABLE_ROLES = ("agent", "env")
"""Roles the table shows (a learner's port exports no steps or messages; Prometheus scrapes it)."""


@dataclass(frozen=True)
class Target:
    """One Prometheus endpoint: ``name`` (``agent-0``, ``env``), role and URL."""

    name: str
    role: str
    url: str


@dataclass
class Reading:
    """What one scrape of a target gives (None where the target does not expose it)."""

    steps: float | None = None
    messages_sent: float | None = None
    messages_received: float | None = None
    dropped: float | None = None
    policy_version: float | None = None
    episodes: float | None = None
    error: str | None = None


def targets_from_run_dir(run_dir: Path, host: str = "127.0.0.1") -> list[Target]:
    """Every agent and env process of ``RUN_DIR/processes.json`` that has a metrics port.

    Raises:
        ValueError: If the file is missing or malformed, or no process has a metrics port.
    """
    path = run_dir / "processes.json"
    try:
        table = json.loads(path.read_text())
    except OSError:
        raise ValueError(f"{path} not found: RUN_DIR must be the run directory of a running 'marlmesh train'") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    found = [
        Target(str(p["name"]), str(p["role"]), f"http://{host}:{int(p['metrics_port'])}/metrics")
        for p in table
        if isinstance(p, dict) and p.get("role") in TABLE_ROLES and int(p.get("metrics_port") or 0) > 0
    ]
    if not found:
        raise ValueError(f"{path} lists no process with a metrics_port (started by an older marlmesh?)")
    return found


def parse_endpoint(text: str) -> Target:
    """``NAME=HOST:PORT`` (role from the name: ``agent-2`` -> agent) -> a target.

    Raises:
        ValueError: If the text is not of that form.
    """
    name, sep, addr = text.partition("=")
    host, colon, port = addr.rpartition(":")
    if not sep or not name or not colon or not host or not port.isdigit():
        raise ValueError(f"--endpoint {text!r}: expected NAME=HOST:PORT, e.g. agent-0=127.0.0.1:9100")
    return Target(name, name.split("-")[0], f"http://{host}:{port}/metrics")


def _read_metrics(text: str) -> Reading:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type == "counter":  # a labelled counter has no samples until its first increment
            totals.setdefault(f"{family.name}_total", 0.0)
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return Reading(
        steps=totals.get("marlmesh_agent_steps_total", totals.get("marlmesh_env_steps_total")),
        messages_sent=totals.get("marlmesh_bus_messages_sent_total"),
        messages_received=totals.get("marlmesh_bus_messages_received_total"),
        dropped=totals.get("marlmesh_bus_dropped_total"),
        policy_version=totals.get("marlmesh_agent_policy_version"),
        episodes=totals.get("marlmesh_env_episodes_total"),
    )


def scrape(target: Target, timeout_s: float = SCRAPE_TIMEOUT_S) -> Reading:
    """Read one endpoint; an unreachable or broken endpoint gives a reading with ``error`` set."""
    try:
        with urllib.request.urlopen(target.url, timeout=timeout_s) as resp:  # noqa: S310 (http to a known port)
            return _read_metrics(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Reading(error=str(getattr(exc, "reason", exc)))


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def _order(t: Target) -> tuple[bool, str, int]:
    tail = t.name.rsplit("-", 1)[-1]
    return t.role != "env", t.role, int(tail) if tail.isdigit() else -1


def render(targets: list[Target], before: dict[str, Reading], after: dict[str, Reading], seconds: float) -> str:
    """The table of one refresh: rates from ``before`` to ``after`` over ``seconds``."""
    lines = [
        f"{'process':<12} {'steps/s':>9} {'steps':>10} {'msgs sent':>11} {'msgs recv':>11} {'dropped':>9} "
        f"{'policy v':>9}  status"
    ]
    for t in sorted(targets, key=_order):
        a, b = after[t.name], before.get(t.name)
        rate = None
        if a.steps is not None and b is not None and b.steps is not None and seconds > 0:
            rate = (a.steps - b.steps) / seconds
        status = "up" if a.error is None else f"down ({a.error})"
        lines.append(
            f"{t.name:<12} {_num(rate, '.1f'):>9} {_num(a.steps):>10} {_num(a.messages_sent):>11} "
            f"{_num(a.messages_received):>11} {_num(a.dropped):>9} {_num(a.policy_version):>9}  {status}"
        )
    return "\n".join(lines)


def run(
    targets: list[Target],
    *,
    interval_s: float,
    once: bool,
    out: Callable[[str], None],
    clear: bool,
) -> int:
    """Refresh until Ctrl-C (or one snapshot with ``once``); exit code 1 if no target answered."""
    before = {t.name: scrape(t) for t in targets}
    t0 = time.monotonic()
    try:
        while True:
            time.sleep(interval_s)
            after = {t.name: scrape(t) for t in targets}
            t1 = time.monotonic()
            header = f"marlmesh top  {time.strftime('%H:%M:%S')}  ({len(targets)} endpoints, every {interval_s:g}s)"
            table = render(targets, before, after, t1 - t0)
            out(("\033[H\033[2J" if clear else "") + header + "\n" + table)
            if once:
                return 0 if any(r.error is None for r in after.values()) else 1
            before, t0 = after, t1
    except KeyboardInterrupt:
        return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``marlmesh top``."""
    p = sub.add_parser("top", help="live view of a running mesh (per agent steps/s, messages, drops, version)")
    p.add_argument("run_dir", nargs="?", type=Path, help="run directory of a running 'marlmesh train'")
    p.add_argument("--endpoint", action="append", default=[], metavar="NAME=HOST:PORT", help="a metrics endpoint")
    p.add_argument("--host", default="127.0.0.1", help="host of the ports in processes.json")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (rates are over it)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.set_defaults(func=main)


def main(ns: argparse.Namespace) -> int:
    """``marlmesh top``."""
    try:
        if ns.interval <= 0:
            raise ValueError(f"--interval must be > 0, got {ns.interval}")
        targets = [parse_endpoint(e) for e in ns.endpoint]
        if ns.run_dir is not None:
            targets += targets_from_run_dir(ns.run_dir, ns.host)
        if not targets:
            raise ValueError("give a RUN_DIR of a running 'marlmesh train' or at least one --endpoint")
    except ValueError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 2
    return run(
        targets,
        interval_s=ns.interval,
        once=ns.once,
        out=lambda text: print(text, flush=True),
        clear=sys.stdout.isatty() and not ns.once,
    )

"""``marlmesh bench soak --minutes M [--json]``: run a real mesh for M minutes and check that it holds up.

It trains with the given config (default: built-in defaults with the ``broadcast`` channel, N=3) for M
minutes of wall-clock time counted from the first progress tick (process start-up is not included),
samples every process's resident memory (RSS) along the way, and reports:

- env steps done and throughput, restarts (per process) and restart events;
- rollout fragments: created by agents, trained on by learners, and dropped with the reason, with the
  check that every fragment is either trained on or counted as dropped (``fragments.unaccounted == 0``);
- RSS per process over time and its growth after warm-up (median of the last samples against the median
  of the first samples after warm-up).

With ``--json`` the last line printed is one JSON object (the same as ``RUN_DIR/soak.json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from marlmesh.launch.mesh import Mesh
    from marlmesh.launch.progress import Progress

HELP = "run a real mesh for M minutes: steps, restarts, fragment accounting, memory growth"

LEARNER_SIDE_LOSSES = ("superseded", "shutdown", "non_finite_update")
"""Learner drop reasons of fragments it had accepted. Its other reasons (``wrong_agent``, ``bad_tensor``,
``closed`` and the column checks of :data:`marlmesh.rollout.FRAGMENT_REJECT_CAUSES`) are refusals the agent
counts too (``rejected`` / ``push_failed``)."""


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux ``/proc``), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class MemorySampler:
    """RSS samples per process name: ``(seconds since start, pid, rss bytes)``."""

    samples: dict[str, list[tuple[float, int, int]]] = field(default_factory=lambda: collections.defaultdict(list))

    def sample(self, procs: list[tuple[str, int]], t: float) -> None:
        """Sample every ``(name, pid)``."""
        for name, pid in procs:
            rss = rss_bytes(pid)
            if rss is not None:
                self.samples[name].append((round(t, 1), pid, rss))

    def report(self, warmup_s: float, window: int = 3) -> dict[str, dict[str, object]]:
        """Per process: samples, RSS at start / after warm-up / at the end (MB) and growth after warm-up (%).

        Only the samples of the process's last incarnation count (a restart starts a new memory history).
        """
        out: dict[str, dict[str, object]] = {}
        for name, rows in sorted(self.samples.items()):
            pid = rows[-1][1]
            mine = [(t, rss) for t, p, rss in rows if p == pid]
            warm = [rss for t, rss in mine if t >= mine[0][0] + warmup_s] or [mine[-1][1]]
            at_warm = statistics.median(warm[:window])
            at_end = statistics.median(warm[-window:])
            out[name] = {
                "pid": pid,
                "samples": len(mine),
                "rss_start_mb": round(mine[0][1] / 2**20, 1),
                "rss_after_warmup_mb": round(at_warm / 2**20, 1),
                "rss_end_mb": round(at_end / 2**20, 1),
                "rss_max_mb": round(max(r for _, r in mine) / 2**20, 1),
                "growth_after_warmup_pct": round(100.0 * (at_end - at_warm) / at_warm, 2) if at_warm else None,
                "series_mb": [[t, round(r / 2**20, 1)] for t, r in mine],
            }
        return out


def _incarnations(record: dict[str, object]) -> list[dict[str, object]]:
    """The ledgers of a process's earlier incarnations, then its final counters."""
    earlier = [e for e in record.get("earlier_incarnations") or [] if isinstance(e, dict)]
    return [*earlier, record]


def _counts(record: dict[str, object], key: str) -> collections.Counter[str]:
    return collections.Counter({str(k): int(v) for k, v in (record.get(key) or {}).items()})


def fragment_accounting(summary: dict[str, object]) -> dict[str, object]:
    """Where every rollout fragment went, from the agents' and learners' counters over all their incarnations.

    ``created == trained + sum(dropped)`` when nothing is lost unaccounted (``unaccounted`` is the
    difference). A killed process's counters come from its fragment ledger (:mod:`marlmesh.ledger`); what it
    still held when it died is counted as ``agent:lost_in_kill`` (created, not yet sent or dropped) or
    ``learner:lost_in_kill`` (received, not yet trained or dropped). A push in flight when its agent was
    killed may or may not have reached the learner: ``in_flight_at_kill`` counts those, so
    ``0 <= unaccounted <= in_flight_at_kill``. ``complete`` says whether every earlier incarnation of a
    restarted process left its ledger.
    """
    agents = [a for a in summary.get("agents", []) if isinstance(a, dict)]
    learners = [lr for lr in summary.get("learners", []) if isinstance(lr, dict)]
    created = sent = trained = received = in_flight_at_kill = 0
    dropped: collections.Counter[str] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    for a in agents:
        for inc in _incarnations(a):
            inc_dropped = _counts(inc, "fragments_dropped")
            created += int(inc.get("fragments_created", 0))
            sent += int(inc.get("fragments_sent", 0))
            for reason, n in inc_dropped.items():
                dropped[f"agent:{reason}"] += n
            if inc is not a:  # a killed incarnation: what it created and never sent nor dropped died with it
                held = int(inc.get("fragments_created", 0)) - int(inc.get("fragments_sent", 0)) - inc_dropped.total()
                pushing = int(inc.get("fragments_in_flight", 0))  # reached the learner or not: unknown here
                in_flight_at_kill += pushing
                dropped["agent:lost_in_kill"] += max(held - pushing, 0)
    for lr in learners:
        for inc in _incarnations(lr):
            inc_dropped = _counts(inc, "fragments_dropped")
            received += int(inc.get("fragments_received", 0))
            trained += int(inc.get("fragments_trained", 0))
            for reason, n in inc_dropped.items():
                if reason in LEARNER_SIDE_LOSSES:
                    dropped[f"learner:{reason}"] += n
                else:
                    refused[reason] += n
            if inc is not lr:  # a killed incarnation: its queue died with it
                held = (
                    int(inc.get("fragments_received", 0)) - int(inc.get("fragments_trained", 0)) - inc_dropped.total()
                )
                dropped["learner:lost_in_kill"] += max(held, 0)
    dropped = +dropped  # zero counts (a kill that held nothing) are left out
    restarts = {str(k): int(v) for k, v in (summary.get("restarts") or {}).items()}
    ledgers = {
        f"{rec.get('role')}-{rec.get('agent_id')}": len(rec.get("earlier_incarnations") or [])
        for rec in (*agents, *learners)
    }
    return {
        "created": created,
        "sent_and_accepted": sent,
        "received_by_learners": received,
        "refused_by_learners": dict(refused),
        "trained": trained,
        "dropped": dict(sorted(dropped.items())),
        "dropped_total": sum(dropped.values()),
        "unaccounted": created - trained - sum(dropped.values()),
        "in_flight_at_kill": in_flight_at_kill,
        "complete": all(ledgers.get(name, 0) >= n for name, n in restarts.items() if name in ledgers),
    }


def run_soak(
    minutes: float,
    config_path: str | None,
    overrides: list[str],
    run_dir: Path,
    out: TextIO,
    sample_every_s: float = 5.0,
    warmup_fraction: float = 0.2,
) -> dict[str, object]:
    """Train for ``minutes`` of wall time, sampling memory; return the soak report (also ``RUN_DIR/soak.json``).

    Raises:
        ConfigError: If the config is invalid.
        MeshError: If a process fails for good.
    """
    from marlmesh.config import load_config
    from marlmesh.launch.train import check_plugins, train

    budget_s = minutes * 60.0
    config = load_config(
        config_path,
        [
            "channel.name=broadcast",
            *overrides,
            f"train.total_env_steps={10**15}",
            "train.max_wall_seconds=null",
        ],
    )
    check_plugins(config)
    sampler = MemorySampler()
    # the soak's clock starts at the first progress tick, once every process is up
    clock = {"start": 0.0, "steps_at_start": 0.0, "last_sample": -1e9, "seconds": 0.0, "steps": 0.0}

    def on_tick(mesh: Mesh, progress: Progress) -> bool:
        now = time.monotonic()
        if not clock["start"]:
            clock["start"], clock["steps_at_start"] = now, progress.env_steps
        if now - clock["last_sample"] >= sample_every_s:
            clock["last_sample"] = now
            alive = [(p.name, p.popen.pid) for p in mesh.procs if p.popen.poll() is None]
            sampler.sample(alive, now - clock["start"])
        clock["seconds"] = now - clock["start"]
        clock["steps"] = progress.env_steps - clock["steps_at_start"]
        return clock["seconds"] >= budget_s

    summary = train(config, run_dir, out=out, evaluate=False, on_tick=on_tick)
    wall = float(summary.get("wall_seconds") or 0.0)
    soak_seconds = clock["seconds"]
    memory = sampler.report(warmup_s=warmup_fraction * budget_s)
    growth = [m["growth_after_warmup_pct"] for m in memory.values() if m["growth_after_warmup_pct"] is not None]
    accounting = fragment_accounting(summary)
    report: dict[str, object] = {
        "bench": "soak",
        "minutes": minutes,
        "run_dir": str(run_dir),
        "status": summary.get("status"),
        "num_agents": len(summary.get("agents") or []),
        "env": config.env.name,
        "num_envs": config.env.num_envs,
        "channel": config.channel.name,
        "wall_seconds": wall,
        "soak_seconds": round(soak_seconds, 1),
        "env_steps": summary.get("env_steps"),
        "env_steps_per_second": round(clock["steps"] / soak_seconds, 1) if soak_seconds else None,
        "learner_versions": {str(lr.get("agent_id")): lr.get("version") for lr in summary.get("learners", [])},
        "restarts": summary.get("restarts"),
        "restart_events": summary.get("restart_events"),
        "fragments": accounting,
        "bus": {k: v for k, v in (summary.get("bus") or {}).items()},
        "memory_warmup_seconds": round(warmup_fraction * budget_s, 1),
        "memory_growth_after_warmup_max_pct": max(growth) if growth else None,
        "memory": memory,
    }
    (run_dir / "soak.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def format_report(r: dict[str, object]) -> str:
    """A few human-readable lines."""
    f = r["fragments"]
    assert isinstance(f, dict)
    mem = r["memory"]
    assert isinstance(mem, dict)
    lines = [
        f"soak: {r['soak_seconds']}s ({r['wall_seconds']}s with start and stop), {r['env_steps']:,} env steps "
        f"({r['env_steps_per_second']} steps/s), "
        f"restarts {sum((r['restarts'] or {}).values())}",
        f"fragments: created {f['created']}, trained {f['trained']}, dropped {f['dropped_total']} {f['dropped']}, "
        f"unaccounted {f['unaccounted']}",
    ]
    for name, m in mem.items():
        lines.append(
            f"  {name:<10} RSS {m['rss_after_warmup_mb']:>7.1f} MB after warm-up -> {m['rss_end_mb']:>7.1f} MB "
            f"({m['growth_after_warmup_pct']:+.2f} %)"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench soak``."""
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock duration (default 10)")
    p.add_argument("-c", "--config", default=None, help="YAML config (default: built-in defaults, broadcast)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/<time>-soak)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on the last line")


def run(ns: argparse.Namespace) -> int:
    """Entry point of ``marlmesh bench soak``."""
    from marlmesh.config import ConfigError
    from marlmesh.launch.mesh import MeshError
    from marlmesh.plugins import PluginError

    if ns.minutes <= 0:
        print("marlmesh: error: --minutes must be > 0", file=sys.stderr)
        return 2
    run_dir = Path(ns.run_dir) if ns.run_dir else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-soak"
    try:
        report = run_soak(ns.minutes, ns.config, ns.set, run_dir, sys.stdout, sample_every_s=ns.sample_every)
    except (ConfigError, PluginError) as exc:
        print(f"marlmesh: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except MeshError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if ns.json:
        print(json.dumps(report, default=float))
    return 0 if report["status"] in ("trained", "done") else 1

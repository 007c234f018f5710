"""What every launcher writes into a run directory: ``summary.json`` and the fields it is made of.

The decentralized mesh (:mod:`marlmesh.launch.train`) and the centralized reference
(:mod:`marlmesh.launch.centralized`) fill the same contract from these helpers.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import TextIO

import numpy as np

from marlmesh import ledger
from marlmesh.config import Config, dump_config
from marlmesh.launch.evaluate import evaluate_run, format_eval_table


def write_run_dir(config: Config, run_dir: Path) -> Path:
    """Create the run directory with ``plots/`` and the resolved ``config.yaml``; returns the config's path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plots").mkdir(exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(dump_config(config))
    return config_path


def plot_curves(run_dir: Path) -> None:
    """Write the learning curves into ``RUN_DIR/plots`` (skipped without matplotlib, which is in the train extra)."""
    try:
        from marlmesh.launch.plotting import plot_run

        plot_run(run_dir)
    except ImportError:
        pass


def read_stats(run_dir: Path, tag: str) -> list[dict[str, object]]:
    """The ``RUN_DIR/stats/<tag>-*.json`` records the processes wrote at exit (unreadable ones skipped).

    A process that was restarted also gets ``earlier_incarnations``: the fragment ledgers of its incarnations
    that exited (:mod:`marlmesh.ledger`).
    """
    out = []
    for path in sorted((run_dir / "stats").glob(f"{tag}-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        earlier = ledger.retired_ledgers(path)
        if earlier:
            record["earlier_incarnations"] = earlier
        out.append(record)
    return out


def bus_summary(agent_stats: list[dict[str, object]]) -> dict[str, object]:
    """Sum the agents' bus counters into the ``bus.*`` summary fields.

    ``messages_sent``/``bytes_sent`` count what senders offered to links (one message per env copy and
    receiver), ``messages_received`` what became visible, ``dropped`` maps cause -> count (link causes are
    counted by senders, receive-side ones by receivers), latencies are medians over agents (bus clock).
    """
    sent = bytes_sent = received = bytes_received = 0
    dropped: collections.Counter[str] = collections.Counter()
    p50s: dict[str, list[float]] = collections.defaultdict(list)
    for st in agent_stats:
        bus = st.get("bus") or {}
        sent += int(bus.get("messages_sent", 0))
        bytes_sent += int(bus.get("bytes_sent", 0))
        received += int(bus.get("messages_received", 0))
        bytes_received += int(bus.get("bytes_received", 0))
        dropped.update(bus.get("dropped", {}))
        for key in ("delivery_latency_p50_seconds", "transport_latency_p50_seconds", "age_of_information_p50_seconds"):
            if bus.get(key) is not None:
                p50s[key].append(float(bus[key]))
    out: dict[str, object] = {
        "messages_sent": sent,
        "bytes_sent": bytes_sent,
        "messages_received": received,
        "bytes_received": bytes_received,
        "dropped": dict(sorted(dropped.items())),
        "delivery_latency_p50_seconds": None,
        "transport_latency_p50_seconds": None,
        "age_of_information_p50_seconds": None,
    }
    out.update({k: float(np.median(v)) for k, v in p50s.items()})
    return out


def gossip_summary(learner_stats: list[dict[str, object]]) -> dict[str, object]:
    """``bus.gossip``: the learners' gossip traffic summed (empty when no learner gossiped).

    Holds ``messages_sent``, ``bytes_sent``, ``messages_received``, ``dropped`` (cause -> count, from the same link
    emulation as the agents' messages), ``mixings``, ``params_mixed`` and ``params_missing``.
    """
    gossips = [st["gossip"] for st in learner_stats if isinstance(st.get("gossip"), dict)]
    if not gossips:
        return {}
    totals = bus_summary([{"bus": g.get("bus") or {}} for g in gossips])
    out = {k: totals[k] for k in ("messages_sent", "bytes_sent", "messages_received", "bytes_received", "dropped")}
    for key in ("mixings", "params_mixed", "params_missing"):
        out[key] = sum(int(g.get(key, 0)) for g in gossips)
    return {"gossip": out}


def rejected_summary(
    agent_stats: list[dict[str, object]], learner_stats: list[dict[str, object]]
) -> dict[str, dict[str, int]]:
    """``rejected``: poison refused before use, summed over processes, cause -> count.

    ``fragments``: fragments the learners refused (``fragments_rejected``); ``updates``: updates the learners
    rolled back (``updates_rejected``); ``weights``: weights versions the agents refused (``weights_rejected``).
    Every cause a process reports is listed, also at 0.
    """

    def total(stats: list[dict[str, object]], key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in stats:
            for cause, n in dict(st.get(key) or {}).items():
                out[cause] = out.get(cause, 0) + int(n)
        return out

    return {
        "fragments": total(learner_stats, "fragments_rejected"),
        "updates": total(learner_stats, "updates_rejected"),
        "weights": total(agent_stats, "weights_rejected"),
    }


def merge_bus_trace(config: Config, run_dir: Path, agent_stats: list[dict[str, object]]) -> dict[str, object] | None:
    """Merge the agents' fate records into ``RUN_DIR/bus_trace.bin``; returns the ``bus.trace`` summary."""
    from comm_bus.trace import merge_traces

    parts = sorted((run_dir / "traces").glob("train-agent-*.rec"))
    if not parts:
        return None
    out = run_dir / "bus_trace.bin"
    meta = {
        "seed": config.seed,
        "clock": config.bus.clock,
        "link_model": config.bus.links.resolved_model(),
        # sim rounds that went on without a peer's frame after the wall-clock safety deadline (a dead or
        # stalled peer): nonzero means this trace depended on wall time and a rerun may differ
        "round_timeouts": sum(
            int((st.get("bus") or {}).get("dropped", {}).get("round_timeout", 0)) for st in agent_stats
        ),
    }
    records = merge_traces(parts, out, meta)
    truncated = any(bool((st.get("bus_trace") or {}).get("truncated")) for st in agent_stats)
    for part in parts:
        part.unlink()
    return {"path": str(out), "records": records, "truncated": truncated}


def config_summary(config: Config) -> dict[str, object]:
    """``config`` of the summary: env, algo, channel, B, seed, weight sync and ``runtime.insecure``."""
    return {
        "env": config.env.name,
        "algo": config.algo.name,
        "channel": config.channel.name,
        "num_envs": config.env.num_envs,
        "seed": config.seed,
        "weight_sync": config.train.weight_sync,
        "insecure": config.runtime.insecure,
    }


def evaluate_into(
    summary: dict[str, object], config: Config, config_path: Path, run_dir: Path, out: TextIO, note: str = ""
) -> None:
    """Evaluate the run's saved policies as processes into ``summary["eval"]`` and mark the run ``done``.

    Prints the evaluation table on ``out``.

    Raises:
        MeshError: If an evaluation process fails.
    """
    out.write(f"evaluating{note}...\n")
    out.flush()
    result = evaluate_run(
        config,
        config_path,
        run_dir,
        episodes=config.eval.episodes,
        num_envs=config.eval.num_envs,
        seed=config.seed + config.eval.seed_offset,
    )
    summary["eval"] = result
    summary["status"] = "done"
    out.write(format_eval_table(result) + "\n")


def write_summary(run_dir: Path, summary: dict[str, object]) -> None:
    """Write ``RUN_DIR/summary.json`` atomically."""
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    tmp.replace(run_dir / "summary.json")

"""Learning-curve PNGs from ``RUN_DIR/metrics.jsonl`` (needs matplotlib, in the ``train`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a marlmesh run directory?")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``plots/return.png``, ``plots/throughput.png`` and ``plots/losses.png``; return their paths.

    Raises:
        FileNotFoundError: If the run has no ``metrics.jsonl``.
    """
    recs = _records(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    written = []
    steps = [r["env_steps"] for r in recs]

    fig, ax = plt.subplots(figsize=(7, 4))
    pts = [
        (r["env_steps"], r["return_sum_recent_mean"], r.get("return_sum_recent_std") or 0.0)
        for r in recs
        if r.get("return_sum_recent_mean") is not None
    ]
    if pts:
        x, y, s = zip(*pts, strict=True)
        ax.plot(x, y, label="mean of last 100 episodes")
        ax.fill_between(
            x,
            [a - b for a, b in zip(y, s, strict=True)],
            [a + b for a, b in zip(y, s, strict=True)],
            alpha=0.2,
            label="± std",
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return (sum over agents)")
    ax.set_title(f"Learning curve — {run_dir.name}")
    ax.grid(alpha=0.3)
    if pts:  # a run too short to finish an episode has no curve to label
        ax.legend()
    written.append(_save(fig, plots / "return.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["steps_per_second"] for r in recs])
    ax.set_xlabel("env steps")
    ax.set_ylabel("env steps / s")
    ax.set_title("Throughput")
    ax.grid(alpha=0.3)
    written.append(_save(fig, plots / "throughput.png"))

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    agents = sorted({lr["agent_id"] for r in recs for lr in r.get("learners", [])})
    for key, ax in zip(("policy_loss", "value_loss", "entropy"), axes, strict=True):
        for agent in agents:
            xs, ys = [], []
            for r in recs:
                for lr in r.get("learners", []):
                    if lr["agent_id"] == agent and key in lr:
                        xs.append(r["env_steps"])
                        ys.append(lr[key])
            ax.plot(xs, ys, label=f"agent {agent}")
        ax.set_xlabel("env steps")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    if agents:
        axes[0].legend()
    written.append(_save(fig, plots / "losses.png"))
    return written


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

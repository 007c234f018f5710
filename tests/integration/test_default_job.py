"""The default job (``make train``: configs/default.yaml) as real processes, on a tiny budget: dgmappo with D-GAT
over the default's constrained links trains, evaluates, and its bus shows the links' loss and delay."""

import json
import math
from pathlib import Path

import pytest
from service_procs import ROOT, train

from marlmesh.config import load_config

pytestmark = pytest.mark.integration
DEFAULT = ROOT / "configs" / "default.yaml"
TINY = [  # the budget only: algorithm, channel and links stay the default's
    "env.num_envs=4",
    "train.total_env_steps=2400",
    "train.rollout_steps=50",
    "eval.episodes=8",
    "eval.num_envs=4",
    "runtime.progress_interval_s=0.5",
]


def test_the_default_job_trains_over_its_constrained_links(tmp_path: Path) -> None:
    config = load_config(DEFAULT, [])
    links = config.bus.links.default
    assert not links.is_ideal() and links.loss > 0 and links.rate_bps is not None
    run = tmp_path / "run"
    res = train(run, *TINY, config=DEFAULT, timeout=280)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 2400
    assert summary["eval"]["episodes"] == 8 and math.isfinite(summary["eval"]["return_sum_mean"])
    assert all(lr["updates"] >= 1 for lr in summary["learners"])
    bus = summary["bus"]
    sent = bus["messages_sent"]
    # 3 agents x 2 peers x 2 rounds per env step (an env step is one copy's row): a row per directed link is a message
    assert sent >= 3 * 2 * 2 * 2400
    assert 0.5 * links.loss * sent < bus["dropped"]["loss"] < 2 * links.loss * sent
    # sim clock, whatever the load: latency +- jitter plus the serialization of one row (D-GAT: message_dim
    # float32, the last one the sender's degree, plus the header; 96 bytes take 24 ms at 32 kbit/s)
    serialize = 8 * (4 * config.channel.message_dim + config.bus.header_bytes) / links.rate_bps
    low = (links.latency_ms - links.jitter_ms) / 1000 + serialize
    high = (links.latency_ms + links.jitter_ms) / 1000 + serialize
    assert low <= bus["delivery_latency_p50_seconds"] <= high

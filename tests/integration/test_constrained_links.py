"""`marlmesh train` over constrained links and a CURVE-secured bus (real processes): drops and delivery latency
match the settings, and only authenticated peers are heard."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from comm_bus.trace import read_trace
from tests.unit.test_link_emulation import binomial_interval

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secured_lossy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One smoke run that both tests below read: CURVE-secured bus (keys from `marlmesh keys gen`), slow lossy
    links and a partition of links 0<->1 (a mesh costs seven process starts, so the two share it)."""
    tmp = tmp_path_factory.mktemp("constrained")
    keys = tmp / "keys"
    gen = subprocess.run(
        [sys.executable, "-m", "marlmesh.cli", "keys", "gen", str(keys), "--agents", "3"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    run = tmp / "run"
    config = str(ROOT / "configs/smoke.yaml")
    args = [sys.executable, "-m", "marlmesh.cli", "train", "-c", config, "--run-dir", str(run)]
    partition = "faults=[{kind: partition, links: [[0, 1], [1, 0]], from_env_steps: 800, to_env_steps: 1600}]"
    for o in (
        "bus.links.default.rate_bps=20000",
        "bus.links.default.latency_ms=100",
        "bus.links.default.loss=0.1",
        partition,
        "bus.security.curve=true",
        f"bus.security.keys_dir={keys}",
    ):
        args += ["--set", o]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return keys, run


def test_smoke_run_over_a_slow_lossy_link(secured_lossy_run):
    _, run = secured_lossy_run
    summary = json.loads((run / "summary.json").read_text())
    bus = summary["bus"]
    sent, lost, cut = bus["messages_sent"], bus["dropped"].get("loss", 0), bus["dropped"].get("partition", 0)
    low, high = binomial_interval(sent - cut, 0.1, 0.999)  # loss applies to the messages not cut
    assert low <= lost <= high, (sent, lost)
    # one 8-float message + 32 B header = 64 B = 512 bit -> 25.6 ms at 20 kbit/s, plus 100 ms latency
    assert bus["delivery_latency_p50_seconds"] == pytest.approx(0.1 + 512 / 20000, abs=1e-9)
    assert bus["messages_received"] > 0.8 * (sent - cut)
    # the merged trace holds every message's fate and agrees with the counters
    trace = read_trace(run / "bus_trace.bin")
    assert bus["trace"]["records"] == len(trace) == sent and not bus["trace"]["truncated"]
    assert int((trace["cause"] == 2).sum()) == lost
    delivered = trace[trace["cause"] == 0]
    assert np.allclose(delivered["visible_at"] - delivered["sent_at"], 0.1256)
    # the partition cut exactly links 0<->1 during env steps [800, 1600) (ticks 200..399 at B=4), then recovered
    cut_rows = trace[trace["cause"] == 5]
    assert len(cut_rows) == cut == 2 * 200 * 4
    assert set(zip(cut_rows["src"].tolist(), cut_rows["dst"].tolist(), strict=True)) == {(0, 1), (1, 0)}
    assert cut_rows["tick"].min() == 200 and cut_rows["tick"].max() == 399
    after = delivered[(delivered["src"] == 0) & (delivered["dst"] == 1) & (delivered["tick"] >= 400)]
    assert len(after) > 0
    assert summary["eval"]["episodes"] == 8


def test_keys_gen_and_a_curve_secured_run(secured_lossy_run):
    keys, run = secured_lossy_run
    # the bus-keys Secret carries every agent's CURVE key pair (`keys gen` also writes a TLS Secret)
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((keys / "secret.yaml").read_text())}
    curve = sorted(secrets["marlmesh-bus-keys"]["data"])
    assert [f"agent-{i}.{part}" for i in range(3) for part in ("key", "key_secret")] == [
        k for k in curve if k.startswith("agent-")
    ], curve
    summary = json.loads((run / "summary.json").read_text())
    security = yaml.safe_load((run / "config.yaml").read_text())["bus"]["security"]
    assert security["curve"] is True and security["keys_dir"] == str(keys)
    assert summary["bus"]["messages_received"] > 0
    assert not summary["bus"]["dropped"].get("impersonation") and not summary["bus"]["dropped"].get("unauthenticated")
    for agent in summary["agents"]:
        assert len(agent["bus"]["received_from"]) == 2
    assert "(CURVE)" in (run / "logs" / "train-agent-0.log").read_text(), "the agent's start line names CURVE"

"""`marlmesh bench bus --json` runs its two-process measurements and prints one JSON object last."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_bus_prints_ratios_as_json():
    args = ["bench", "bus", "--repeats", "1", "--messages", "6400", "--rtt-rounds", "100", "--json"]
    res = subprocess.run([sys.executable, "-m", "marlmesh.cli", *args], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("ratio_256", "ratio_4096", "emulation_ratio_256", "rtt_p50_us", "raw_rtt_p50_us", "rtt_p99_us"):
        assert result[key] > 0, key
    assert result["ratio_256"] == pytest.approx(result["bus_msgs_per_s_256"] / result["raw_msgs_per_s_256"], rel=0.01)
    assert result["rtt_p99_us"] >= result["rtt_p50_us"]
    assert result["rtt_ratio"] == pytest.approx(result["rtt_p50_us"] / result["raw_rtt_p50_us"], rel=0.02)
    assert len(result["load_average_before"]) == len(result["load_average"]) == 3

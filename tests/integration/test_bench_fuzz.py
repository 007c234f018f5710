"""``marlmesh bench fuzz`` end to end: real env, learner and bus processes, every input accepted or counted."""

import json
import subprocess
import sys

import pytest

from marlmesh.bench import fuzz

pytestmark = pytest.mark.integration

SURFACES = set(fuzz.SURFACES)  # every gRPC method and the bus


def test_bench_fuzz_counts_every_input(tmp_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, "-m", "marlmesh.cli", "bench", "fuzz", "--inputs", "50", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == result
    assert set(result["surfaces"]) == SURFACES
    for name, s in result["surfaces"].items():
        assert s["sent"] == 50, name
        assert s["accepted"] + sum(s["rejected"].values()) == s["sent"], name
        assert s["crashes"] == 0 and s["unexpected"] == 0, (name, s)
        accounting = s["accounting"]
        assert accounting["ok"], (name, accounting)
        if name == "bus.receive":
            counted = accounting["frames_received"] + accounting["frames_dropped_counted_by_bus"]
            assert counted + accounting["refused_by_socket"] == s["sent"]
        elif name == "learner.WatchWeights":  # a loaded server may refuse a call after its client's deadline
            assert accounting["streams_counted_by_server"] + accounting["rejected_counted_by_server"] == s["sent"]
        else:
            assert accounting["rejected_seen_by_client"] == sum(s["rejected"].values()), name
            assert accounting["rejected_counted_by_server"] == accounting["rejected_seen_by_client"], name
    # the mix reaches the servers' validation, not only gRPC's decoding
    assert result["surfaces"]["learner.PushRollout"]["accounting"]["fragments_received"] > 0
    assert result["surfaces"]["control.Shutdown"]["accepted"] == 0
    totals = result["totals"]
    assert totals["inputs"] == 50 * len(SURFACES) and totals["crashes"] == 0 and totals["accounting_ok"]
    assert result["server_final_stats"]["exit_codes"] == {"env": 0, "learner-0": 0}

"""``marlmesh bench scale``'s bookkeeping of points (the meshes themselves: tests/integration/test_perf_commands.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import grpc
import pytest

from marlmesh.bench import scale


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "failed to connect to all addresses"


def _args(tmp_path: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    scale.add_arguments(p)
    return p.parse_args(
        ["--agents", "2,4", "--channels", "meanfield", "--modes", "eval", "--json", "--out", str(tmp_path / "s.json")]
    )


def test_a_point_whose_mesh_fails_is_listed_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    measured = []

    def fake_point(ns, config, channel, agents, mode, root):  # noqa: ANN001, ANN202 - the logic, not the mesh
        if agents == 2:
            raise _Unavailable()
        measured.append(agents)
        fig = {"processes": agents, "rss_mb": 60.0, "private_mb": 40.0, "start_s": 0.2, "start_cpu_s": 0.06}
        return {
            "mode": mode,
            "channel": channel,
            "num_agents": agents,
            "steps_per_s": 100.0,
            "bus_bytes_per_agent_env_step": 96.0,
            "cpu_agent_mean": 0.1,
            "roles": {"agent": fig},
        }

    monkeypatch.setattr(scale, "run_point", fake_point)
    assert scale.main(_args(tmp_path)) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    failed, ok = result["points"]
    assert failed == {
        "mode": "eval",
        "channel": "meanfield",
        "num_agents": 2,
        "skipped": "failed: UNAVAILABLE: failed to connect to all addresses",
    }
    assert ok["num_agents"] == 4 and measured == [4]
    assert result["agent_start"] == "fork"

"""An agent whose only peer has left steps alone, and its bus accounting says so.

A real N=2 mesh (env + 2 agent processes acting with version-0 checkpoints, meanfield channel over a shared
medium) on 127.0.0.1. Agent 1 stops; agent 0 keeps stepping with no live peer, so none of its rounds goes out.
``rounds_sent`` must count only the rounds that did (the bench divides bytes by it: counting lone rounds made
the meanfield bytes per step at N=2 look smaller than at N=4 whenever a stop left one agent alone).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from service_procs import env_stats, eval_mesh, wait_tick

pytestmark = pytest.mark.integration
NUM_ENVS = 2
ROW_BYTES = 8 * 4 + 32  # smoke: message_dim 8 float32 + 32 header bytes


@pytest.mark.parametrize("agent_start", ["fork", "exec"])  # forked from the fork server, or exec'd: the same agent
def test_rounds_taken_alone_are_not_counted_as_sent(tmp_path: Path, agent_start: str) -> None:
    sets = ["env.kwargs.N=2", "algo.name=mfppo", "channel.name=meanfield", "bus.links.shared_medium=true"]
    sets.append(f"runtime.agent_start={agent_start}")
    mesh = eval_mesh(tmp_path, [*sets, f"env.num_envs={NUM_ENVS}"])
    try:
        mesh.start()
        wait_tick(mesh, 5)
        leaver = mesh.find("agent", 1).popen
        leaver.send_signal(signal.SIGTERM)
        assert leaver.wait(timeout=30) == 0
        after_leave = env_stats(mesh)
        assert list(after_leave.live_agents) == [0], "agent 1's Leave did not reach the env"
        left_at = after_leave.tick
        wait_tick(mesh, left_at + 10, all_alive=False)  # agent 0 now steps alone
        stayer = mesh.find("agent", 0)
        stayer.popen.send_signal(signal.SIGTERM)
        assert stayer.popen.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while not stayer.stats_file.is_file():
            assert time.monotonic() < deadline, "agent 0 wrote no stats"
            time.sleep(0.05)
        stats = json.loads(stayer.stats_file.read_text())
    finally:
        mesh.stop()
    bus = stats["bus"]
    assert stats["start"] == agent_start
    assert stats["steps"] >= left_at + 10
    # it sent while its peer was there, and only then: one frame (one radio transmission) per round sent
    assert 5 <= stats["rounds_sent"] <= left_at + 1 < stats["steps"], (left_at, stats)
    assert bus["frames_sent"] == stats["rounds_sent"]
    assert bus["bytes_sent"] == stats["rounds_sent"] * NUM_ENVS * ROW_BYTES

"""An agent stops promptly on SIGTERM even while a bus round waits for a peer that has already left.

A real N=3 mesh (env + 3 agent processes acting with version-0 checkpoints, broadcast channel, sim clock) on
127.0.0.1. Agent 0 goes silent first; the other two then wait in a bus round for its frame, which does not come.
With ``bus.round_timeout_ms`` at 60 s, an agent that only noticed its stop signal after the round wait would
need about a minute; it must exit within a few seconds of its own signal.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from service_procs import env_tick, eval_mesh, wait_tick

pytestmark = pytest.mark.integration
ROUND_TIMEOUT_S = 60.0
STOP_BOUND_S = 10.0


def _seconds_to_exit(procs: list[subprocess.Popen]) -> list[float]:
    """SIGTERM every process at once; seconds until each exited (exit code 0 asserted)."""
    start = time.monotonic()
    for p in procs:
        p.send_signal(signal.SIGTERM)
    out = []
    for p in procs:
        assert p.wait(timeout=ROUND_TIMEOUT_S + 30) == 0, f"{p.args} exited with {p.returncode}"
        out.append(time.monotonic() - start)
    return out


def test_agents_stop_promptly_while_waiting_in_a_round_for_a_silent_peer(tmp_path: Path) -> None:
    mesh = eval_mesh(tmp_path, [f"bus.round_timeout_ms={ROUND_TIMEOUT_S * 1000:.0f}", "env.num_envs=2"])
    silent = mesh_agent = None
    try:
        mesh.start()
        wait_tick(mesh, 5)
        # Agent 0 goes silent without leaving (SIGSTOP: deterministic, unlike racing a SIGTERM against the
        # end of its step); the others wait in a bus round for its frame, as for a peer that has just left.
        silent = mesh.find("agent", 0).popen
        silent.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        tick = env_tick(mesh)
        time.sleep(1.0)
        assert env_tick(mesh) == tick, "the other agents kept stepping: nothing waits for agent 0"
        rest = _seconds_to_exit([mesh.find("agent", i).popen for i in (1, 2)])
        mesh_agent, silent = silent, None
        mesh_agent.send_signal(signal.SIGCONT)
        last = _seconds_to_exit([mesh_agent])
        print(f"agents 1, 2 stopped in {rest[0]:.2f}s, {rest[1]:.2f}s; agent 0 (resumed) in {last[0]:.2f}s")
        assert max(rest + last) < STOP_BOUND_S, (rest, last)
        for i in (0, 1, 2):
            assert "stopped after" in mesh.find("agent", i).log_path.read_text()
    finally:
        if silent is not None:
            silent.send_signal(signal.SIGCONT)
        mesh.stop()

"""Supervisor logic with stand-in processes: backoff, restart on the same port, fault holds, giving up."""

import subprocess
import sys
from pathlib import Path

import pytest

from marlmesh.config import RestartConfig
from marlmesh.launch.mesh import MeshError, Proc
from marlmesh.launch.supervise import Supervisor


class FakeMesh:
    """Just what the supervisor uses; children are tiny python processes."""

    def __init__(self, run_dir: Path, lifetimes: dict[str, float]):
        self.run_dir = run_dir
        self.procs = []
        self.respawned: list[tuple[str, list[str]]] = []
        for name, life in lifetimes.items():
            role, _, idx = name.partition("-")
            log = run_dir / f"{name}.log"
            log.write_text(f"{name} started\nlast words of {name}\n")
            p = Proc(role, int(idx) if idx else -1, self._child(life), log, run_dir / f"{name}.port", run_dir / "s")
            p.port = 4000 + len(self.procs)
            self.procs.append(p)

    @staticmethod
    def _child(life: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({life})"])

    def respawn(self, proc, extra_args=None):
        proc.previous_pids.append(proc.popen.pid)
        self.respawned.append((proc.name, list(extra_args or [])))
        proc.popen = self._child(60)
        proc.port_file.write_text(str(proc.port))

    def port_ready(self, proc):
        return proc.port_file.exists()

    def checkpoint_dir(self, agent_id):
        return self.run_dir / f"ckpt-{agent_id}"

    def stop(self):
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def mesh(tmp_path):
    m = FakeMesh(tmp_path, {"env": 60, "agent-0": 60, "learner-0": 60})
    yield m
    m.stop()


def test_crash_is_restarted_after_backoff_then_the_run_gives_up(mesh):
    clock = Clock()
    sup = Supervisor(mesh, RestartConfig(max_restarts=2, backoff_s=1.0, backoff_max_s=1.5), 30.0, clock=clock)
    agent = mesh.procs[1]
    agent.popen.kill()
    agent.popen.wait()
    sup.check()  # crash seen: restart due in 1 s
    assert mesh.respawned == [] and sup.restarts["agent-0"] == 0
    clock.t += 1.01
    sup.check()
    assert mesh.respawned == [("agent-0", [])] and sup.restarts["agent-0"] == 1
    assert sup.events[0].cause == "crash" and sup.events[0].delay_s == 1.0
    sup.check()  # port file written: up again
    assert sup.is_up(agent)
    agent.popen.kill()
    agent.popen.wait()
    sup.check()
    clock.t += 1.4  # second backoff is capped at 1.5 s
    sup.check()
    assert sup.restarts["agent-0"] == 1
    clock.t += 0.2
    sup.check()
    assert sup.restarts["agent-0"] == 2 and sup.events[1].delay_s == 1.5
    sup.check()
    agent.popen.kill()
    agent.popen.wait()
    with pytest.raises(MeshError) as info:
        sup.check()
    msg = str(info.value)
    assert "agent-0" in msg and "max_restarts=2" in msg and "last words of agent-0" in msg
    assert sup.restart_counts() == {"env": 0, "agent-0": 2, "learner-0": 0}
    table = (mesh.run_dir / "processes.json").read_text()
    assert str(agent.popen.pid) in table and str(agent.previous_pids[0]) in table


def test_fault_kill_is_held_until_its_env_step_and_env_restart_jumps_ticks(mesh):
    clock = Clock()
    sup = Supervisor(mesh, RestartConfig(max_restarts=0), 30.0, clock=clock)
    env, _, learner = mesh.procs
    sup.observe(env_steps=500, tick=125)
    sup.kill(learner, restart_at_env_steps=700)
    assert learner.popen.poll() is not None
    sup.check()  # held: neither restarted nor a crash (max_restarts=0 would raise)
    sup.observe(env_steps=700, tick=175)
    sup.check()
    assert mesh.respawned == [("learner-0", [])] and sup.events[-1].cause == "fault"
    sup.kill(env, restart_at_env_steps=700)
    sup.check()
    assert mesh.respawned[-1] == ("env", ["--start-tick", str(175 + 1_000_000)])
    assert sup.restart_counts() == {"env": 1, "agent-0": 0, "learner-0": 1}
    assert sup.crash_restarts == {}

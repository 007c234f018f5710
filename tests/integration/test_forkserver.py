"""The agents' fork server (marlmesh/launch/forkserver.py): real server and child processes, the real agent entry.

A forked agent must be what an exec'd ``python -m agent_service`` is: the same argv, exactly the environment it
was given, its own session and log file; signals reach it only while it runs; it dies with the server, and the
server with the launcher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from marlmesh import contract
from marlmesh.launch.forkserver import ForkServer, ForkServerError

ENTRY = "agent_service.__main__:run"
REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":  # exited, not yet reaped by a parent that is itself gone
            return True
        time.sleep(0.05)
    return False


def _waiting_agent_args(tmp_path: Path) -> list[str]:
    """An agent that waits (up to 60 s) for an env nobody runs: a real, long-lived child."""
    return [
        "--config",
        str(REPO / "configs" / "ippo.yaml"),
        "--agent-id",
        "0",
        "--env-addr",
        "127.0.0.1:1",
        "--set",
        "runtime.startup_timeout_s=60",
        "--port-file",
        str(tmp_path / "never.port"),
    ]


@pytest.fixture()
def server(tmp_path: Path):
    fs = ForkServer(["agent_service.__main__"], tmp_path / "forkserver.log")
    yield fs
    fs.close()


def test_child_gets_argv_environment_log_and_session(server: ForkServer, tmp_path: Path) -> None:
    child = server.spawn(ENTRY, ["--help"], dict(os.environ), tmp_path / "help.log")
    assert child.wait(30) == 0
    assert "usage: python -m agent_service" in (tmp_path / "help.log").read_text()

    # exactly the environment given: a variable the launcher has but the child was not given is absent, and a
    # config named only by MARLMESH_CONFIG is the one the agent reads (its error names it)
    env = {k: v for k, v in os.environ.items() if not k.startswith(contract.PREFIX)}
    env[contract.CONFIG.name] = str(tmp_path / "no-such.yaml")
    child = server.spawn(ENTRY, ["--agent-id", "0"], env, tmp_path / "env.log")
    assert child.wait(30) == 2
    text = (tmp_path / "env.log").read_text()
    assert "agent_service: error:" in text and "no-such.yaml" in text, text

    child = server.spawn(ENTRY, _waiting_agent_args(tmp_path), dict(os.environ), tmp_path / "wait.log")
    try:
        assert os.getsid(child.pid) == child.pid  # its own session, like Popen(start_new_session=True)
        assert int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == server.pid
        assert child.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.2)
    finally:
        child.terminate()
    assert child.wait(30) in (0, 3, -signal.SIGTERM)
    child.kill()  # ended and reaped: a no-op, whatever process the pid may belong to now


def test_an_entry_that_raises_exits_1_with_its_traceback(server: ForkServer, tmp_path: Path) -> None:
    child = server.spawn("marlmesh.launch.forkserver:no_such_function", [], dict(os.environ), tmp_path / "bad.log")
    assert child.wait(30) == 1
    assert "AttributeError" in (tmp_path / "bad.log").read_text()


def test_children_end_with_the_server_and_it_refuses_after_close(tmp_path: Path) -> None:
    fs = ForkServer(["agent_service.__main__"], tmp_path / "forkserver.log")
    child = fs.spawn(ENTRY, _waiting_agent_args(tmp_path), dict(os.environ), tmp_path / "wait.log")
    fs.close()
    assert _gone(child.pid), "a forked child outlived its closed fork server"
    assert child.wait(30) is not None
    with pytest.raises(ForkServerError, match="not running"):
        fs.spawn(ENTRY, ["--help"], dict(os.environ), tmp_path / "late.log")


def test_server_and_children_die_with_a_killed_launcher(tmp_path: Path) -> None:
    launcher = textwrap.dedent(
        f"""
        import json, os, sys, time
        from pathlib import Path
        from marlmesh.launch.forkserver import ForkServer
        fs = ForkServer(["agent_service.__main__"], Path({str(tmp_path / "fs.log")!r}))
        args = {_waiting_agent_args(tmp_path)!r}
        child = fs.spawn({ENTRY!r}, args, dict(os.environ), Path({str(tmp_path / "c.log")!r}))
        print(json.dumps({{"server": fs.pid, "child": child.pid}}), flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    assert _gone(pids["server"]), "the fork server outlived its SIGKILLed launcher"
    assert _gone(pids["child"]), "a forked agent outlived its SIGKILLed launcher"


def test_a_server_that_cannot_import_its_preload_fails_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(ForkServerError, match="did not start") as err:
        ForkServer(["marlmesh.no_such_module"], tmp_path / "fs.log", timeout_s=60)
    assert "ModuleNotFoundError" in str(err.value)


def test_a_child_that_cannot_be_set_up_is_refused_with_the_reason(server: ForkServer, tmp_path: Path) -> None:
    with pytest.raises(ForkServerError, match=r"cannot set up the child: .*No such file or directory"):
        server.spawn(ENTRY, ["--help"], dict(os.environ), tmp_path / "missing-dir" / "x.log")
    assert server.spawn(ENTRY, ["--help"], dict(os.environ), tmp_path / "ok.log").wait(30) == 0  # still serving

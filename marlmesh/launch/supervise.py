"""Supervision of a running mesh: restart crashed processes with bounded retries and exponential backoff.

The launcher calls :meth:`Supervisor.check` once per progress tick. A process found exited is restarted on
its previous port after a backoff (``runtime.restart``); the restart is non-blocking: the new incarnation is
*starting* until it writes its port file. What a restart means per role:

- **agent**: a new process id joins the env (the env counts a rejoin) and fetches its learner's weights.
- **learner**: resumes from its newest valid checkpoint (never back to version 0 when one exists).
- **env**: starts again at a tick above every tick of its predecessor (``--start-tick``), so agents' buses do
  not drop the new ticks' messages as stale; agents notice the lost env and rejoin it.

A process killed by a ``faults`` entry is *held*: it is not restarted as a crash, only when the fault says
so (:meth:`Supervisor.kill`). After ``max_restarts`` crash restarts of one process the next crash raises
:class:`~marlmesh.launch.mesh.MeshError` naming the process and showing its log tail.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from marlmesh.config import RestartConfig
from marlmesh.launch.mesh import Mesh, MeshError, Proc

log = logging.getLogger(__name__)

TICK_JUMP = 1_000_000
"""How far above the last observed tick a restarted env starts (ticks are labels; a gap is harmless, and
no env steps a million ticks between two progress polls)."""

_CKPT = re.compile(r"^ckpt-(\d{10})\.pt$")


def newest_checkpoint_version(directory: Path) -> int | None:
    """Version of the newest checkpoint file in ``directory`` by name (not verified; no torch import)."""
    if not directory.is_dir():
        return None
    versions = [int(m.group(1)) for p in directory.iterdir() if (m := _CKPT.match(p.name))]
    return max(versions) if versions else None


@dataclass
class RestartEvent:
    """One restart, as recorded in ``summary.json`` ``restart_events``."""

    process: str
    cause: str
    """``crash`` (found exited) or ``fault`` (scheduled by a ``faults`` entry)."""
    exit_code: int | None
    old_pid: int
    at_env_steps: int
    at_wall_seconds: float
    delay_s: float
    checkpoint_version: int | None = None
    """Learners: newest checkpoint on disk when the restart was decided."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return dict(self.__dict__)


@dataclass
class _State:
    due: float | None = None
    """Crash restart waiting for its backoff (monotonic time)."""
    held_until_steps: int | None = None
    held: bool = False
    """Killed by a fault; restarted only at ``held_until_steps`` (never if None)."""
    starting_deadline: float | None = None
    """Spawned, waiting for the port file until this time."""
    pending_event: RestartEvent | None = None


@dataclass
class Supervisor:
    """Restarts the processes of a started :class:`Mesh`.

    Args:
        mesh: The started mesh.
        policy: ``runtime.restart``.
        startup_timeout_s: How long a restarted process may take to report its port.
        out: Where one line per restart goes (the launcher's console); None = only the log.
        clock: Monotonic clock (injectable for tests).
    """

    mesh: Mesh
    policy: RestartConfig
    startup_timeout_s: float
    out: TextIO | None = None
    clock: Callable[[], float] = time.monotonic
    restarts: Counter[str] = field(default_factory=Counter)
    crash_restarts: Counter[str] = field(default_factory=Counter)
    events: list[RestartEvent] = field(default_factory=list)
    env_steps: int = 0
    tick: int = 0
    _states: dict[str, _State] = field(default_factory=dict)
    _started: float = 0.0

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._states = {p.name: _State() for p in self.mesh.procs}
        self.write_process_table()

    def write_process_table(self) -> None:
        """Write ``RUN_DIR/processes.json``: name, role, agent id, pid, port, metrics port, restarts of each process.

        Rewritten after every restart, so operators and tests can find the live pids.
        """
        table = [
            {
                "name": p.name,
                "role": p.role,
                "agent_id": p.agent_id,
                "pid": p.popen.pid,
                "port": p.port,
                "metrics_port": p.metrics_port,
                "restarts": self.restarts[p.name],
                "previous_pids": list(p.previous_pids),
            }
            for p in self.mesh.procs
        ]
        path = self.mesh.run_dir / "processes.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(table, indent=2))
        os.replace(tmp, path)

    # -- inputs from the launcher ------------------------------------------------------------------
    def observe(self, env_steps: int, tick: int) -> None:
        """Latest env-step count (cumulative over env restarts) and env tick seen by the launcher."""
        self.env_steps = max(self.env_steps, env_steps)
        self.tick = max(self.tick, tick)

    def kill(self, proc: Proc, restart_at_env_steps: int | None) -> None:
        """SIGKILL ``proc`` now (a fault); restart it once the run reaches ``restart_at_env_steps`` (None: never)."""
        state = self._states[proc.name]
        state.held, state.held_until_steps = True, restart_at_env_steps
        state.due = state.pending_event = state.starting_deadline = None
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait()
        self._say(
            f"fault: killed {proc.name} (pid {proc.popen.pid}) at {self.env_steps:,} env steps"
            + ("" if restart_at_env_steps is None else f"; restart at {restart_at_env_steps:,} env steps")
        )

    # -- queries -----------------------------------------------------------------------------------
    def is_up(self, proc: Proc) -> bool:
        """True if ``proc`` runs and is not (re)starting."""
        state = self._states[proc.name]
        return proc.popen.poll() is None and state.starting_deadline is None

    def restart_counts(self) -> dict[str, int]:
        """``restarts`` of the summary: process name -> restarts (every process listed)."""
        return {p.name: self.restarts[p.name] for p in self.mesh.procs}

    # -- the supervision step ----------------------------------------------------------------------
    def check(self) -> None:
        """Advance every process's restart state once.

        Raises:
            MeshError: If a process crashed after using up ``max_restarts`` restarts.
        """
        now = self.clock()
        for proc in self.mesh.procs:
            state = self._states[proc.name]
            if state.starting_deadline is not None:
                if self.mesh.port_ready(proc):
                    state.starting_deadline = None
                    log.info("%s is back (pid %d, port %d)", proc.name, proc.popen.pid, proc.port)
                    continue
                if proc.popen.poll() is None and now < state.starting_deadline:
                    continue
                if proc.popen.poll() is None:  # hung during start: treat as a crash
                    proc.popen.kill()
                    proc.popen.wait()
                state.starting_deadline = None
            if state.held:
                if state.held_until_steps is not None and self.env_steps >= state.held_until_steps:
                    state.held = False
                    self._restart(proc, self._event(proc, "fault", 0.0), now)
                continue
            if state.due is not None:
                if now >= state.due:
                    event, state.pending_event, state.due = state.pending_event, None, None
                    assert event is not None
                    self._restart(proc, event, now)
                continue
            code = proc.popen.poll()
            if code is None:
                continue
            self._crashed(proc, code, state, now)

    def _crashed(self, proc: Proc, code: int, state: _State, now: float) -> None:
        used = self.crash_restarts[proc.name]
        if used >= self.policy.max_restarts:
            raise MeshError(
                f"{proc.name} (pid {proc.popen.pid}) exited with code {code}"
                + (f" after {used} restart(s)" if used else "")
                + f"; giving up (runtime.restart.max_restarts={self.policy.max_restarts}). "
                f"Log {proc.log_path}:\n{proc.log_tail()}"
            )
        delay = min(self.policy.backoff_max_s, self.policy.backoff_s * (2**used))
        self.crash_restarts[proc.name] += 1
        state.due = now + delay
        state.pending_event = self._event(proc, "crash", delay)
        self._say(
            f"{proc.name} (pid {proc.popen.pid}) exited with code {code}; restarting in {delay:.1f}s "
            f"(restart {used + 1} of {self.policy.max_restarts})"
        )

    def _event(self, proc: Proc, cause: str, delay: float) -> RestartEvent:
        ckpt = newest_checkpoint_version(self.mesh.checkpoint_dir(proc.agent_id)) if proc.role == "learner" else None
        return RestartEvent(
            process=proc.name,
            cause=cause,
            exit_code=proc.popen.poll(),
            old_pid=proc.popen.pid,
            at_env_steps=self.env_steps,
            at_wall_seconds=round(self.clock() - self._started, 3),
            delay_s=delay,
            checkpoint_version=ckpt,
        )

    def _restart(self, proc: Proc, event: RestartEvent, now: float) -> None:
        extra = ["--start-tick", str(self.tick + TICK_JUMP)] if proc.role == "env" else []
        self.mesh.respawn(proc, extra)
        self.restarts[proc.name] += 1
        self.events.append(event)
        self._states[proc.name].starting_deadline = now + self.startup_timeout_s
        self.write_process_table()
        self._say(f"restarted {proc.name} as pid {proc.popen.pid} on port {proc.port}")

    def _say(self, line: str) -> None:
        log.warning("%s", line)
        if self.out is not None:
            self.out.write(f"\nsupervisor: {line}\n")
            self.out.flush()

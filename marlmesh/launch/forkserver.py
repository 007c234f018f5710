"""Start service processes by forking a server that has already imported their modules.

An agent's start is almost all imports (numpy, gRPC, protobuf, pyzmq, pydantic and the config models: about
0.33 s of CPU, see docs/benchmarks.md). A mesh starts N agents at once, so on a machine with fewer cores than
agents each start stretches to N x that. With ``runtime.agent_start: fork`` the launcher starts one fork server
per mesh (``python -m marlmesh.launch.forkserver``) that imports the agent's entry module once; every agent
(and every restart of one) is then a ``fork()`` of it that calls the entry point ``python -m agent_service``
calls (``agent_service.__main__:run``) in the already-imported interpreter, with the argv, environment, working
directory, session and log file an exec'd process would get: the same code path at a fraction of the start cost.

Why not ``multiprocessing``'s forkserver: it runs a pickled function, re-imports the launcher's main script in
every child (pytest, the ``marlmesh`` console script) and keeps one server per launcher process for its whole
life, with the environment the launcher had when it started; a mesh needs per-child environments and log
files, a session per child and signals that cannot reach a reused pid.

Protocol (one Unix socket pair, one JSON document per line):

* launcher -> server: ``{"op": "spawn", "req": n, "entry": "package.module:function", "argv": [...],
  "env": {...}, "cwd": d, "log": path}``; ``{"op": "signal", "pid": p, "signal": s}`` (delivered only while
  ``p`` is an unreaped child of the server, so a pid the kernel has reused is never signalled).
* server -> launcher: ``{"ready": pid, "preload_s": s}`` once the modules are imported; ``{"req": n, "pid": p}``
  or ``{"req": n, "error": e}`` per spawn; ``{"exit": p, "code": c}`` when a child ends (``c`` as
  ``subprocess.Popen.returncode``: negative for a signal).

The server ends when the launcher closes its end (or dies: the server has the parent-death signal, and every
child has it towards the server, :func:`marlmesh.process.exit_with_parent`; the server sets the child's
``MARLMESH_PARENT_PID`` and ``MARLMESH_FORKED_BY`` to its own pid). This module imports only the standard library
and :mod:`marlmesh.contract`: the server's own imports are the entry modules it is given.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from marlmesh import contract  # standard library only, like this module

log = logging.getLogger(__name__)


class ForkServerError(RuntimeError):
    """The fork server could not start, or refused or failed a request."""


# -- server side ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Get SIGTERM when the launcher dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _set_up_child(request: Mapping[str, Any], server_pid: int, close_fds: Sequence[int]) -> None:
    """In the forked child: the session, standard streams, environment and directory of the request."""
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    log_fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    os.environ[contract.PARENT_PID.name] = str(server_pid)  # a forked child's parent is the server
    os.environ[contract.FORKED_BY.name] = str(server_pid)
    os.chdir(request["cwd"])


def _run_entry(entry: str, argv: Sequence[str]) -> int:
    """In the set-up child: call ``entry`` with ``sys.argv[1:] == argv``; the exit code an interpreter would give."""
    module, _, function = entry.partition(":")
    sys.argv = [module, *argv]
    try:
        getattr(importlib.import_module(module), function)()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - report anything, like an interpreter would, then exit 1
        traceback.print_exc()
        return 1
    return 0


def _send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(json.dumps(message).encode() + b"\n")


def serve(fd: int, preload: Sequence[str]) -> int:
    """Import ``preload``, then fork a child per spawn request on socket ``fd`` until it closes.

    Args:
        fd: The server's end of the launcher's socket pair.
        preload: Modules to import before the first fork (the entry points' modules).

    Returns:
        The exit code of the server.
    """
    _die_with_parent()
    started = time.monotonic()
    for module in preload:
        __import__(module)
    sock = socket.socket(fileno=fd)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the wakeup fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the launcher, which stops the mesh
    children: set[int] = set()
    _send(sock, {"ready": os.getpid(), "preload_s": round(time.monotonic() - started, 3)})
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(sig_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == sig_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(sig_r, 4096)
                    _reap(sock, children)
                    continue
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:  # the launcher closed its end or died
                    return 0
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    _handle(sock, json.loads(line), children, [fd, sig_r, sig_w])


def _reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _handle(sock: socket.socket, request: dict[str, Any], children: set[int], server_fds: list[int]) -> None:
    """Serve one request: signal a child, or fork one (which never returns from here)."""
    if request.get("op") == "signal":
        if request["pid"] in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(request["pid"], request["signal"])
        return
    ready_r, ready_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(ready_r)
        os.close(ready_w)
        _send(sock, {"req": request["req"], "error": f"fork failed: {exc}"})
        return
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            try:
                _set_up_child(request, os.getppid(), server_fds)
            except Exception as exc:  # noqa: BLE001 - told to the launcher, like Popen's exec errors
                os.write(ready_w, f"cannot set up the child: {exc}".encode())
                raise
            os.close(ready_w)  # set up: the launcher may now rely on its session and log
            code = _run_entry(request["entry"], request["argv"])
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        problem = ready.read().decode(errors="replace")
    if problem:
        os.waitpid(pid, 0)
        _send(sock, {"req": request["req"], "error": problem})
        return
    children.add(pid)
    _send(sock, {"req": request["req"], "pid": pid})


# -- launcher side -------------------------------------------------------------------------------------------


class ForkedProcess:
    """A process forked by a :class:`ForkServer`: the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]) -> None:
        self._server = server
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _set_exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end and return its exit code.

        Raises:
            subprocess.TimeoutExpired: If it has not ended within ``timeout`` seconds.
        """
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process (a no-op once it has ended)."""
        if self.returncode is None:
            self._server.signal(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One fork server process and the children it forked (see the module docstring).

    Args:
        preload: Modules the server imports before the first fork (those of the entry points it will call).
        log_path: The server's own log (its preload time, import errors).
        env: The server's environment (the children get their own with each spawn).
        timeout_s: How long to wait for the server to finish its imports.

    Raises:
        ForkServerError: If the server does not come up (its log tail is in the message).
    """

    EXIT_UNKNOWN = -255
    """``returncode`` of a child whose exit the server could not report (the server itself ended first)."""

    def __init__(
        self, preload: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, timeout_s: float = 60.0
    ) -> None:
        if not sys.platform.startswith("linux"):
            raise ForkServerError("a fork server needs Linux (parent-death signals); use runtime.agent_start: exec")
        self.log_path = log_path
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = mine
        self._lock = threading.Lock()
        self._requests = 0
        self._pending: dict[int, dict[str, Any]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._ready = threading.Event()
        self._answered = threading.Condition(self._lock)
        self._closed = False
        self.preload_s: float | None = None
        argv = [sys.executable, "-m", __name__, "--fd", str(theirs.fileno()), *(f"--preload={m}" for m in preload)]
        with open(log_path, "ab") as logf:
            self._popen = subprocess.Popen(
                argv,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        theirs.close()
        self._reader = threading.Thread(target=self._read, name="forkserver-reader", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self._popen.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise ForkServerError(f"the fork server did not start (see {log_path}):\n{self._log_tail()}")
        log.info("fork server pid %d up: preloaded %s in %.2fs", self._popen.pid, ", ".join(preload), self.preload_s)

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self._popen.pid

    def alive(self) -> bool:
        """Whether the server still runs and accepts requests."""
        return not self._closed and self._popen.poll() is None

    def spawn(
        self, entry: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, timeout_s: float = 30.0
    ) -> ForkedProcess:
        """Fork a child that calls ``entry`` with ``sys.argv[1:] == argv`` and ``env``, in this directory.

        Args:
            entry: ``package.module:function``, e.g. ``agent_service.__main__:run``.
            argv: The arguments (``sys.argv[1:]``).
            env: The child's whole environment.
            log_path: File the child's standard output and error are appended to.
            timeout_s: How long to wait for the server's answer.

        Raises:
            ForkServerError: If the server is gone or the fork failed.
        """
        with self._lock:
            if not self.alive():
                raise ForkServerError(f"the fork server (pid {self._popen.pid}) is not running; see {self.log_path}")
            self._requests += 1
            req = self._requests
            self._pending[req] = {}
            self._write(
                {
                    "op": "spawn",
                    "req": req,
                    "entry": entry,
                    "argv": list(argv),
                    "env": dict(env),
                    "cwd": os.getcwd(),
                    "log": str(log_path),
                }
            )
            if not self._answered.wait_for(lambda: self._pending[req] or self._closed, timeout_s):
                self._pending.pop(req)
                raise ForkServerError(f"the fork server did not answer a spawn of {entry} in {timeout_s:.0f}s")
            answer = self._pending.pop(req)
            if "pid" not in answer:
                raise ForkServerError(answer.get("error", f"the fork server ended; see {self.log_path}"))
            child = ForkedProcess(self, answer["pid"], [entry, *argv])
            self._children[child.pid] = child
            if child.pid in self._early_exits:  # it ended before its pid reached us
                child._set_exit(self._early_exits.pop(child.pid))
            return child

    def signal(self, pid: int, sig: int) -> None:
        """Ask the server to signal its child ``pid`` (ignored once the child has been reaped)."""
        with self._lock:
            if self.alive():
                self._write({"op": "signal", "pid": pid, "signal": int(sig)})

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the server's socket (it exits; children still running get SIGTERM from their parent-death signal)."""
        with self._lock:
            self._closed = True
            self._answered.notify_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        try:
            self._popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        self._reader.join(timeout_s)

    def _write(self, message: Mapping[str, Any]) -> None:
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise ForkServerError(f"the fork server is gone ({exc}); see {self.log_path}") from None

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._dispatch(json.loads(line))
        except (OSError, ValueError):
            pass
        with self._lock:
            self._closed = True
            self._answered.notify_all()
            orphans = [c for c in self._children.values() if c.returncode is None]
        for child in orphans:  # the server is gone: its children got SIGTERM; wait for them to vanish
            threading.Thread(target=self._await_orphan, args=(child,), daemon=True).start()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.preload_s = message["preload_s"]
            self._ready.set()
            return
        with self._lock:
            if "req" in message:
                if message["req"] in self._pending:
                    self._pending[message["req"]] = message
                    self._answered.notify_all()
            elif "exit" in message:
                child = self._children.pop(message["exit"], None)
                if child is None:
                    self._early_exits[message["exit"]] = message["code"]
                else:
                    child._set_exit(message["code"])

    @staticmethod
    def _await_orphan(child: ForkedProcess) -> None:
        while Path(f"/proc/{child.pid}").exists():
            time.sleep(0.1)
        child._set_exit(ForkServer.EXIT_UNKNOWN)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def main(argv: list[str] | None = None) -> int:
    """``python -m marlmesh.launch.forkserver --fd N --preload M ...`` (started by :class:`ForkServer`)."""
    p = argparse.ArgumentParser(prog="python -m marlmesh.launch.forkserver", description=__doc__.split("\n")[0])
    p.add_argument("--fd", type=int, required=True, help="the server's end of the launcher's socket pair")
    p.add_argument("--preload", action="append", default=[], help="a module to import before the first fork")
    ns = p.parse_args(argv)
    return serve(ns.fd, ns.preload)


if __name__ == "__main__":
    sys.exit(main())

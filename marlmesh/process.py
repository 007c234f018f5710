"""Shared plumbing of the service entry points (``python -m env_service|agent_service|learner_service``).

Flags override environment variables, which override the config. A bad config or argument ends the
process with exit code 2 and one line on stderr: ``<role>: error: <what to fix>``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc

from marlmesh import contract, control_token, exposure, ports, tls
from marlmesh.config import Config, ConfigError, load_config
from marlmesh.serving import grpc_options
from marlmesh.v1 import env_pb2, env_pb2_grpc


def fail(role: str, message: str, code: int = 2) -> NoReturn:
    """Print ``role: error: message`` on one line and exit."""
    print(f"{role}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def exit_with_parent() -> None:
    """When started by the launcher (``MARLMESH_PARENT_PID`` set), get SIGTERM if the launcher dies.

    Linux only (``PR_SET_PDEATHSIG``); elsewhere a no-op. If the launcher is already gone, exit at once.
    """
    parent = contract.PARENT_PID.integer()
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        sys.exit(0)


def env_default(role: str, var: contract.Variable) -> str | None:
    """The value of ``var`` (its default when unset), or exit with an error naming the variable."""
    try:
        return var.value()
    except contract.ContractError as exc:
        fail(role, str(exc))


def variable_arg(
    p: argparse.ArgumentParser, role: str, var: contract.Variable, what: str, *aliases: str, **kwargs: Any
) -> None:
    """Add ``var.flag`` with the variable's value as its default; the help names the variable.

    Args:
        p: The parser.
        role: Prefix of the error line when the variable's value is bad.
        var: A contract variable with a flag.
        what: Help text: what the flag sets.
        *aliases: Further option strings (e.g. ``-c``).
        **kwargs: Further ``add_argument`` arguments (``type``, ``choices``, ...).
    """
    if var.flag is None:
        raise ValueError(f"{var.name} has no flag in the process contract")
    p.add_argument(var.flag, *aliases, default=env_default(role, var), help=f"{what} ({var.name})", **kwargs)


def base_parser(role: str, description: str, port: contract.Variable) -> argparse.ArgumentParser:
    """Flags every service shares.

    Args:
        role: The program (``env_service``, ...).
        description: What the program does.
        port: The variable that gives ``--port`` its default.
    """
    p = argparse.ArgumentParser(prog=f"python -m {role}", description=description)
    variable_arg(p, role, contract.CONFIG, "YAML config", "-c")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    variable_arg(p, role, contract.HOST, "bind address")
    variable_arg(p, role, port, f"gRPC port; default {port.default}, 0 = pick a free one", type=int)
    p.add_argument(
        "--port-file", type=Path, default=None, help="write every bound port here (JSON) once the process is up"
    )
    variable_arg(
        p,
        role,
        contract.METRICS_PORT,
        f"Prometheus port, 0 = off, {contract.AUTO_PORT} = OS-assigned",
        type=port_or_auto,
    )
    p.add_argument("--stats-file", type=Path, default=None, help="write final counters (JSON) here on exit")
    for var, what in (
        (contract.TLS_CA, "CA certificate"),
        (contract.TLS_CERT, "own certificate"),
        (contract.TLS_KEY, "own private key"),
    ):
        variable_arg(p, role, var, f"runtime.tls: PEM {what}; '{{id}}' -> agent index")
    variable_arg(p, role, contract.CONTROL_TOKEN_FILE, "file holding the token that authorizes Control.Shutdown")
    return p


def security_or_fail(
    role: str, ns: argparse.Namespace, config: Config, name: str, agent: int = -1
) -> tuple[tls.TlsIdentity | None, str | None]:
    """This process's TLS identity (None: plaintext) and control token (None: none), or exit with the reason.

    Also sets the process's exposure policy from ``runtime.insecure`` (a WARNING when on) and refuses a
    plaintext gRPC server or metrics endpoint on a non-loopback ``--host`` before anything starts
    (:mod:`marlmesh.exposure`; the bus and every dial are checked where they happen).

    Args:
        role: Prefix of the error line.
        ns: Parsed flags (``--tls-*``, ``--control-token-file``).
        config: The loaded config (``runtime.tls``).
        name: TLS identity (``env``, ``agent-<i>``, ``learner-<i>``).
        agent: Agent index for ``{id}`` in file names.
    """
    try:
        identity = tls.load_identity(
            config.runtime.tls, name, {"ca": ns.tls_ca, "cert": ns.tls_cert, "key": ns.tls_key}, agent
        )
        exposure.set_insecure(config.runtime.insecure, name)
        host = ns.host or config.runtime.host
        exposure.require(exposure.Surface.GRPC, f"{host}:{ns.port}", secured=identity is not None)
        if ns.metrics_port:
            exposure.require(exposure.Surface.METRICS, f"{host}:{ns.metrics_port}", secured=identity is not None)
        return identity, control_token.load_token(ns.control_token_file)
    except ValueError as exc:  # ConfigError is a ValueError
        fail(role, str(exc))


def security_note(tls_identity: tls.TlsIdentity | None, curve: bool = False) -> str:
    """What a service's start line says secures it: ``" (mTLS, CURVE)"``, ``" (mTLS)"``, ``" (CURVE)"`` or ``""``.

    Args:
        tls_identity: The process's TLS identity (gRPC and metrics over mTLS), or None.
        curve: Whether its ZeroMQ sockets (bus, gossip) run CURVE.
    """
    parts = [name for name, on in (("mTLS", tls_identity is not None), ("CURVE", curve)) if on]
    return f" ({', '.join(parts)})" if parts else ""


def run(role: str, main: Callable[[], int]) -> int:
    """Run a service's ``main``; an address it may not bind or dial in plaintext ends it with the one-line error.

    Args:
        role: Prefix of the error line.
        main: The service's main function.
    """
    try:
        return main()
    except exposure.ExposureError as exc:
        fail(role, str(exc))


def agent_id_arg(p: argparse.ArgumentParser, role: str) -> None:
    """Add ``--agent-id`` (default ``MARLMESH_AGENT_ID``)."""
    variable_arg(p, role, contract.AGENT_ID, "agent index")


def env_addr_arg(p: argparse.ArgumentParser, role: str) -> None:
    """Add ``--env-addr`` (default ``MARLMESH_ENV_ADDR``, else the local default)."""
    variable_arg(p, role, contract.ENV_ADDR, "env_service address host:port")


def load_or_fail(role: str, ns: argparse.Namespace) -> Config:
    """Load the config named by the flags, or exit with a one-line error."""
    try:
        return load_config(ns.config, ns.overrides)
    except ConfigError as exc:
        fail(role, str(exc))


def parse_agent_id(role: str, raw: str | None, num_agents: int | None = None) -> int:
    """The agent index from ``--agent-id``/``MARLMESH_AGENT_ID`` (a pod name like ``agent-2`` works too)."""
    if raw is None or raw == "":
        fail(role, f"no agent id: pass --agent-id or set {contract.AGENT_ID.name}")
    index = contract.agent_index(str(raw))
    if index is None:
        fail(role, f"agent id {raw!r} is not an index (expected e.g. 0 or agent-0)")
    if num_agents is not None and index >= num_agents:
        fail(role, f"agent id {index} out of range: the env has {num_agents} agents")
    return index


def port_or_auto(raw: str) -> int | str:
    """A ``--metrics-port`` value: a port number, or :data:`contract.AUTO_PORT` (the OS assigns one)."""
    return raw if raw == contract.AUTO_PORT else int(raw)


def exit_promptly(code: int) -> NoReturn:
    """End the process with ``code`` now that its work is saved, skipping the interpreter's teardown.

    Tearing down an interpreter that imported torch takes about 2 s (measured at load average 8:
    ``python -c "import torch"`` 4.2 s, with ``os._exit(0)`` 2.4 s), and the launcher stops every agent and
    learner of a mesh in turn. Call this only after every file is written and every socket is closed; it
    flushes the log handlers and the standard streams first.

    Args:
        code: The exit status.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def seconds_since_start() -> float:
    """Wall seconds since this process was spawned (Linux: its start time in ``/proc/self/stat``)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.process_time()  # not Linux: the CPU time is a lower bound
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def start_figures() -> dict[str, float]:
    """How long this process took to become ready; call it right after writing the port file.

    Returns:
        ``start_s``: wall seconds from the process's spawn (interpreter start, imports, config, joining its
        peers) to now, waits included; ``start_cpu_s``: CPU seconds it spent meanwhile (its own start cost,
        whatever it waited for); both with the 10 ms resolution of the kernel's clock ticks.
    """
    return {"start_s": round(seconds_since_start(), 3), "start_cpu_s": round(time.process_time(), 3)}


def memory_figures() -> dict[str, float]:
    """This process's memory, in MiB; call it at exit.

    Returns:
        ``peak_rss_mb``: peak resident memory of this program so far (Linux: ``VmHWM``), shared library pages
        included; ``private_mb`` (Linux only): its anonymous resident memory now (``RssAnon``), what each more
        process of its kind adds to the machine's memory. Not ``getrusage``'s ``ru_maxrss``: Linux carries that
        over ``exec`` from the parent it was forked from (a launcher with torch would show in every child).
    """
    fields = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    if "VmHWM" not in fields:  # not Linux: the rusage figure is the best there is
        import resource

        fields["VmHWM"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = {"peak_rss_mb": fields["VmHWM"]}
    if "RssAnon" in fields:
        out["private_mb"] = fields["RssAnon"]
    return out


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Atomically write a JSON document."""
    if path is not None:
        ports.write_text_atomically(path, json.dumps(data, indent=2, default=float))


def fetch_env_spec(
    role: str, address: str, timeout_s: float, max_message_bytes: int, tls_identity: tls.TlsIdentity | None = None
) -> env_pb2.EnvSpec:
    """Get the env spec from env_service, retrying until ``timeout_s``; exit with a clear error if unreachable."""
    deadline = time.monotonic() + timeout_s
    last = ""
    with tls.open_channel(address, grpc_options(max_message_bytes), tls_identity) as channel:
        stub = env_pb2_grpc.EnvServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                return stub.GetSpec(env_pb2.GetSpecRequest(), timeout=2.0, wait_for_ready=True)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
                time.sleep(0.2)
    fail(
        role,
        f"cannot reach env_service at {address} within {timeout_s:.0f}s ({last}); "
        f"is it running and is --env-addr / {contract.ENV_ADDR.name} right?",
        code=3,
    )

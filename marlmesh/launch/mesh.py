"""Start and stop a mesh of marlmesh processes: one env, N agents and (training) N learners.

Every process is a real OS process with its own log file under ``RUN_DIR/logs``. Children get
``PR_SET_PDEATHSIG`` so they die with the launcher even if it is killed with SIGKILL; a graceful stop sends
SIGTERM in dependency order (agents, then learners, which write their final checkpoints, then the env) and
SIGKILLs whatever has not exited in time.

Ports: every listener binds a port the OS assigns (gRPC ``--port 0``, ``--metrics-port auto``, bus and gossip
sockets on ``tcp://HOST:0``) and the process reports them in its port file (:mod:`marlmesh.ports`); the bus and
gossip sockets learn their peers' ports from a peer table the launcher writes once all N have reported. A
restarted process rebinds the ports it had (its peers dial those).

Agents start from a fork server that has their modules imported (``runtime.agent_start: fork``, the
default; :mod:`marlmesh.launch.forkserver`): same entry point, arguments, environment, session and log as an
exec'd ``python -m agent_service``, without paying its imports once per agent. The env and the learners are
always exec'd.

Security: every child gets ``MARLMESH_CONTROL_TOKEN_FILE`` (a fresh token per mesh in ``RUN_DIR/control.token``)
and, with ``runtime.tls.enabled``, ``MARLMESH_TLS_CA/CERT/KEY`` of its own identity; the launcher dials as
``launcher``. These are the same variables a Kubernetes pod gets.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from marlmesh import contract, control_token, exposure, ledger, ports, tls
from marlmesh.config import Config, ConfigError
from marlmesh.errors import MeshError
from marlmesh.launch.forkserver import ForkedProcess, ForkServer, ForkServerError
from marlmesh.serving import grpc_options, wait_healthy
from marlmesh.tensorboard import learner_run, tensorboard_root
from marlmesh.v1 import env_pb2, env_pb2_grpc

log = logging.getLogger(__name__)

FORK_ENTRIES = {"agent_service": "agent_service.__main__:run"}
"""The modules a fork server starts (``runtime.agent_start: fork``) and the entry point ``python -m`` calls."""


def stop_processes(
    procs: Sequence[subprocess.Popen | ForkedProcess], timeout: float = 15.0, names: Sequence[str] | None = None
) -> list[int | None]:
    """SIGTERM every running process, wait up to ``timeout`` for all of them, SIGKILL the stragglers.

    Args:
        procs: The processes (already exited ones just report their exit code).
        timeout: Seconds the whole group gets to exit after SIGTERM.
        names: Names for the log line of a process that had to be killed (default: its command line).

    Returns:
        Exit code per process, in order; None for a process that had to be killed.
    """
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # a no-op if it exited meanwhile
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for i, p in enumerate(procs):
        try:
            codes.append(p.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", names[i] if names else p.args, timeout)
            p.kill()
            p.wait()
            codes.append(None)
    return codes


@dataclass
class Proc:
    """One child process."""

    role: str
    agent_id: int
    popen: subprocess.Popen | ForkedProcess
    log_path: Path
    port_file: Path
    stats_file: Path
    port: int = 0
    """gRPC port, kept across restarts (like every port below)."""
    metrics_port: int = 0
    """Prometheus port (0 = none; ``marlmesh top`` reads it)."""
    bus_port: int = 0
    """An agent's bus socket (0 = none)."""
    gossip_port: int = 0
    """A learner's gossip socket (0 = none)."""
    module: str = ""
    args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    previous_pids: list[int] = field(default_factory=list)
    """Pids of earlier incarnations of this process (it was restarted)."""

    @property
    def name(self) -> str:
        """``env``, ``agent-3``, ``learner-0``."""
        return self.role if self.agent_id < 0 else f"{self.role}-{self.agent_id}"

    def read_ports(self) -> bool:
        """Take the ports from the process's port file; False while it has not written one."""
        reported = ports.read_port_file(self.port_file)
        if reported is None:
            return False
        self.port = reported.get(ports.GRPC, 0)
        self.metrics_port = reported.get(ports.METRICS, 0)
        self.bus_port = reported.get(ports.BUS, 0)
        self.gossip_port = reported.get(ports.GOSSIP, 0)
        return True

    def bound_ports(self) -> list[int]:
        """Every port this process reported (gRPC, metrics, bus, gossip)."""
        return [p for p in (self.port, self.metrics_port, self.bus_port, self.gossip_port) if p]

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the process log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Mesh:
    """A running set of processes for one run directory.

    Args:
        config: The resolved config.
        config_path: The resolved config file every child reads.
        run_dir: Run directory (logs, checkpoints, ports, stats go below it).
        mode: ``train`` (env + agents + learners) or ``eval`` (env + agents acting with checkpoints).
        tag: Prefix of log and stats names (``train`` or ``eval``).
        seed: Env seed.
        num_envs: B.
    """

    config: Config
    config_path: Path
    run_dir: Path
    mode: str
    tag: str
    seed: int
    num_envs: int
    procs: list[Proc] = field(default_factory=list)
    env_address: str = ""
    num_agents: int = 0
    tls_identity: tls.TlsIdentity | None = None
    """The launcher's own TLS identity (None: plaintext)."""
    security_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per process name: the TLS and control-token variables it is started with."""
    policy_dir: Path | None = None
    """``eval`` mode: a ``marlmesh export`` folder the agents act from with the onnx runtime (no torch in
    them); None: each agent loads its newest checkpoint with torch."""
    fork_server: ForkServer | None = None
    """The agents' fork server (``runtime.agent_start: fork``), started with the mesh, closed by :meth:`stop`."""

    @property
    def control_token_file(self) -> Path:
        """This mesh's control token (authorizes ``Control.Shutdown`` on its processes)."""
        return self.run_dir / "control.token"

    def channel(self, address: str) -> grpc.Channel:
        """A client channel from the launcher to one of its processes (mTLS when configured)."""
        return tls.open_channel(address, grpc_options(self.config.runtime.max_message_bytes), self.tls_identity)

    def _prepare_security(self, names: list[tuple[str, int]]) -> None:
        """Check the exposure policy and the TLS files of every identity in ``names`` before any of them starts.

        Raises:
            MeshError: Naming the setting whose file is missing or wrong, or a plaintext non-loopback host.
        """
        settings = self.config.runtime.tls
        # the run's token file, never a token the launcher happens to have in its own environment
        token_env = {control_token.TOKEN_FILE_ENV: str(self.control_token_file), control_token.TOKEN_ENV: ""}
        try:
            exposure.check_launcher(self.config)
            for role, agent in names:
                name = tls.identity_name(role, agent)
                if role == tls.LAUNCHER:
                    self.tls_identity = tls.load_identity(settings, name, agent=agent)
                    continue
                self.security_env[name] = {**token_env, **tls.child_env(settings, name, agent)}
        except ConfigError as exc:
            raise MeshError(str(exc)) from None

    # -- start -------------------------------------------------------------------------------------
    def _spawn(self, role: str, agent_id: int, module: str, args: list[str], extra_env: dict[str, str]) -> Proc:
        name = role if agent_id < 0 else f"{role}-{agent_id}"
        extra_env = {**self.security_env.get(name, {}), **extra_env}
        for sub in ("logs", "ports", "stats"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / "logs" / f"{self.tag}-{name}.log"
        port_file = self.run_dir / "ports" / f"{self.tag}-{name}.port"
        stats_file = self.run_dir / "stats" / f"{self.tag}-{name}.json"
        for f in (port_file, stats_file):
            f.unlink(missing_ok=True)
        popen = self._popen(
            module, args, extra_env, log_path, port_file, stats_file, port=0, metrics=contract.AUTO_PORT
        )
        proc = Proc(
            role, agent_id, popen, log_path, port_file, stats_file, module=module, args=args, extra_env=extra_env
        )
        self.procs.append(proc)
        return proc

    def _popen(
        self,
        module: str,
        args: list[str],
        extra_env: dict[str, str],
        log_path: Path,
        port_file: Path,
        stats_file: Path,
        port: int,
        metrics: int | str,
    ) -> subprocess.Popen | ForkedProcess:
        # No preexec_fn: forking a process that runs gRPC threads can deadlock in gRPC's fork handlers, so
        # children arm their own parent-death signal (marlmesh.process.exit_with_parent).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", contract.PARENT_PID.name: str(os.getpid()), **extra_env}
        argv = [
            "--config",
            str(self.config_path),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics),
            "--port-file",
            str(port_file),
            "--stats-file",
            str(stats_file),
            *args,
        ]
        server = self._fork_server() if module in FORK_ENTRIES else None
        if server is not None:
            try:
                return server.spawn(FORK_ENTRIES[module], argv, env, log_path)
            except ForkServerError as exc:
                raise MeshError(f"cannot start {module}: {exc}") from None
        with open(log_path, "ab") as logf:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *argv],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return popen

    def _fork_server(self) -> ForkServer | None:
        """The running fork server (started on first use, again if it died), or None with ``agent_start: exec``.

        Raises:
            MeshError: If it cannot start (its log tail is in the message).
        """
        if self.config.runtime.agent_start != "fork":
            return None
        if self.fork_server is not None and not self.fork_server.alive():
            log.warning("the agents' fork server (pid %d) has ended; starting a new one", self.fork_server.pid)
            self.fork_server.close()
            self.fork_server = None
        if self.fork_server is None:
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            try:
                self.fork_server = ForkServer(
                    [entry.partition(":")[0] for entry in FORK_ENTRIES.values()],
                    self.run_dir / "logs" / f"{self.tag}-forkserver.log",
                    timeout_s=self.config.runtime.startup_timeout_s,
                )
            except ForkServerError as exc:
                raise MeshError(str(exc)) from None
        return self.fork_server

    def respawn(self, proc: Proc, extra_args: list[str] | None = None) -> None:
        """Start a new incarnation of a process that has exited, on the same ports (does not wait for it).

        Its peers and ``marlmesh top`` know the ports it had, so it rebinds exactly those (gRPC, metrics, bus,
        gossip); if another program took one of them meanwhile, the new incarnation fails to bind and the
        supervisor treats that as a crash. The log is appended to (after a marker line); the port file is
        removed so that the new incarnation's port file says when it is up (see :meth:`port_ready`).

        Args:
            proc: The exited process; its ``popen`` is replaced.
            extra_args: Arguments added for this incarnation only (e.g. ``--start-tick`` of the env).

        Raises:
            MeshError: If the process is still running.
        """
        if proc.popen.poll() is None:
            raise MeshError(f"cannot restart {proc.name} (pid {proc.popen.pid}): it is still running")
        ledger.retire(proc.stats_file, len(proc.previous_pids))
        proc.previous_pids.append(proc.popen.pid)
        proc.port_file.unlink(missing_ok=True)
        with open(proc.log_path, "ab") as logf:
            logf.write(
                f"--- marlmesh launcher: restarting {proc.name} (previous pid {proc.popen.pid} exited with code "
                f"{proc.popen.returncode}) on port {proc.port} ---\n".encode()
            )
        host = self.config.runtime.host
        if proc.bus_port:
            proc.extra_env[contract.BUS_BIND.name] = f"tcp://{host}:{proc.bus_port}"
        if proc.gossip_port:
            proc.extra_env[contract.GOSSIP_BIND.name] = f"tcp://{host}:{proc.gossip_port}"
        proc.popen = self._popen(
            proc.module,
            [*proc.args, *(extra_args or [])],
            proc.extra_env,
            proc.log_path,
            proc.port_file,
            proc.stats_file,
            port=proc.port,
            metrics=proc.metrics_port or contract.AUTO_PORT,
        )

    def port_ready(self, proc: Proc) -> bool:
        """True once a (re)started process has written its port file; keeps the ``proc`` ports up to date."""
        return proc.read_ports()

    def _await_port(self, proc: Proc, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise MeshError(
                    f"{proc.name} exited with code {proc.popen.returncode} during start:\n{proc.log_tail()}"
                )
            if proc.read_ports():
                return proc.port
            time.sleep(0.05)
        raise MeshError(f"{proc.name} did not start within {timeout:.0f}s:\n{proc.log_tail()}")

    def peer_table(self, family: str) -> Path:
        """Peer table of the agents' ``bus`` or the learners' ``gossip`` sockets.

        It is ``RUN_DIR/ports/<tag>-<family>.peers`` (see :mod:`marlmesh.ports`).
        """
        return self.run_dir / "ports" / f"{self.tag}-{family}.peers"

    def _dynamic_addressing(self, family: str) -> tuple[str, str, str]:
        """Peer pattern, bind address and peer table of a family whose sockets bind OS-assigned ports."""
        table = self.peer_table(family)
        table.parent.mkdir(parents=True, exist_ok=True)
        table.unlink(missing_ok=True)  # a previous run's table in this run directory
        host = self.config.runtime.host
        return f"tcp://{host}:{{port}}", f"tcp://{host}:0", str(table)

    def _publish_peer_table(self, family: str, procs: list[Proc]) -> None:
        """Write the peer table once every process of ``procs`` reported its ``family`` port."""
        found = [p.bus_port if family == ports.BUS else p.gossip_port for p in procs]
        if all(found):  # a silent channel binds no bus socket: no table, nobody waits for one
            ports.write_peer_table(self.peer_table(family), found)

    def start_env(self) -> Proc:
        """Check the launcher's and the env's credentials, write the control token, start the env service.

        Returns when the env has bound its port (``env_address`` is set).

        Raises:
            MeshError: If a TLS file is missing or wrong, or the env fails to start.
        """
        self._prepare_security([(tls.LAUNCHER, -1), ("env", -1)])
        control_token.write_new_token(self.control_token_file)
        args = ["--seed", str(self.seed), "--num-envs", str(self.num_envs)]
        env = self._spawn("env", -1, "env_service", args, {})
        port = self._await_port(env, self.config.runtime.startup_timeout_s)
        self.env_address = f"{self.config.runtime.host}:{port}"
        return env

    def start_learner(self, agent_id: int) -> Proc:
        """Start the learner of one agent on its own (after :meth:`start_env`; no agents, no gossip).

        Returns when it has bound its port (``Proc.port``), e.g. for a benchmark that talks to it directly.

        Raises:
            MeshError: If a TLS file is missing or wrong, or the learner fails to start.
        """
        self._prepare_security([("learner", agent_id)])
        args = ["--agent-id", str(agent_id), "--env-addr", self.env_address]
        learner = self._spawn("learner", agent_id, "learner_service", args, {})
        self._await_port(learner, self.config.runtime.startup_timeout_s)
        return learner

    def start(self) -> None:
        """Start env, learners (training) and agents; return when all are up.

        Raises:
            MeshError: If a process fails to start (its log tail is in the message).
        """
        host = self.config.runtime.host
        timeout = self.config.runtime.startup_timeout_s
        self._fork_server()  # its imports overlap the env's and the learners' start
        env = self.start_env()
        if not wait_healthy(self.env_address, timeout, self.tls_identity):
            raise MeshError(f"env at {self.env_address} never became healthy:\n{env.log_tail()}")
        with self.channel(self.env_address) as ch:
            spec = env_pb2_grpc.EnvServiceStub(ch).GetSpec(env_pb2.GetSpecRequest(), timeout=10)
        self.num_agents = len(spec.agents)
        roles = ("agent", "learner") if self.mode == "train" else ("agent",)
        self._prepare_security([(role, i) for role in roles for i in range(self.num_agents)])
        learner_addr = {}
        if self.mode == "train":
            gossip_env = self._gossip_env()
            learners = [
                self._spawn(
                    "learner",
                    i,
                    "learner_service",
                    [
                        "--agent-id",
                        str(i),
                        "--env-addr",
                        self.env_address,
                        "--checkpoint-dir",
                        str(self.checkpoint_dir(i)),
                        *self._tensorboard_args(i),
                    ],
                    gossip_env,
                )
                for i in range(self.num_agents)
            ]
            for lp in learners:
                learner_addr[lp.agent_id] = f"{host}:{self._await_port(lp, timeout)}"
            if gossip_env:
                self._publish_peer_table(ports.GOSSIP, learners)
        pattern, bind, table = self._dynamic_addressing(ports.BUS)
        agents = []
        for i in range(self.num_agents):
            args = ["--env-addr", self.env_address, "--mode", self.mode]
            if self.mode == "train":
                args += ["--learner-addr", learner_addr[i], "--bus-trace", str(self.bus_trace_part(i))]
            elif self.policy_dir is not None:
                args += ["--runtime", "onnx", "--policy-dir", str(self.policy_dir)]
            else:
                args += ["--checkpoint-dir", str(self.checkpoint_dir(i))]
            agents.append(
                self._spawn(
                    "agent",
                    i,
                    "agent_service",
                    args,
                    {
                        contract.AGENT_ID.name: str(i),
                        contract.NUM_AGENTS.name: str(self.num_agents),
                        contract.PEER_PATTERN.name: pattern,
                        contract.BUS_BIND.name: bind,
                        contract.PEER_TABLE.name: table,
                    },
                )
            )
        for ap in agents:
            self._await_port(ap, timeout)
        self._publish_peer_table(ports.BUS, agents)

    def _gossip_env(self) -> dict[str, str]:
        """Learners' gossip addresses (``algo.dgmappo.gossip``): OS-assigned ports and a peer table."""
        if not self.config.algo.dgmappo.gossip.enabled:
            return {}
        pattern, bind, table = self._dynamic_addressing(ports.GOSSIP)
        return {
            contract.GOSSIP_PATTERN.name: pattern,
            contract.GOSSIP_BIND.name: bind,
            contract.GOSSIP_PEER_TABLE.name: table,
        }

    def bus_trace_part(self, agent_id: int) -> Path:
        """Raw message-fate records of one agent (merged into ``RUN_DIR/bus_trace.bin`` after the run)."""
        return self.run_dir / "traces" / f"{self.tag}-agent-{agent_id}.rec"

    def checkpoint_dir(self, agent_id: int) -> Path:
        """Checkpoint folder of one agent."""
        return self.run_dir / "checkpoints" / f"agent-{agent_id}"

    def _tensorboard_args(self, agent_id: int) -> list[str]:
        """A learner's ``--tensorboard-dir`` (``RUN_DIR/tensorboard/learner-<i>``) when ``train.tensorboard``."""
        if not self.config.train.tensorboard:
            return []
        return ["--tensorboard-dir", str(tensorboard_root(self.run_dir) / learner_run(agent_id))]

    # -- watch -------------------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Raise :class:`MeshError` if any process has exited."""
        for p in self.procs:
            code = p.popen.poll()
            if code is not None:
                raise MeshError(f"{p.name} (pid {p.popen.pid}) exited with code {code}:\n{p.log_tail()}")

    def env_stub(self) -> tuple[grpc.Channel, env_pb2_grpc.EnvServiceStub]:
        """A channel and stub to the env service (caller closes the channel)."""
        ch = self.channel(self.env_address)
        return ch, env_pb2_grpc.EnvServiceStub(ch)

    def processes(self) -> list[dict[str, object]]:
        """``{role, agent_id, pid}`` of every process (its current incarnation)."""
        return [{"role": p.role, "agent_id": p.agent_id, "pid": p.popen.pid} for p in self.procs]

    def replaced_processes(self) -> list[dict[str, object]]:
        """``{role, agent_id, pid}`` of every earlier incarnation of a restarted process."""
        return [{"role": p.role, "agent_id": p.agent_id, "pid": pid} for p in self.procs for pid in p.previous_pids]

    def find(self, role: str, agent_id: int = -1) -> Proc:
        """The process of ``role`` (and ``agent_id`` for agents and learners).

        Raises:
            MeshError: If there is no such process.
        """
        for p in self.procs:
            if p.role == role and p.agent_id == agent_id:
                return p
        raise MeshError(f"no process {role if agent_id < 0 else f'{role}-{agent_id}'} in this mesh")

    def bound_ports(self) -> list[int]:
        """Every TCP port the mesh's processes bound (gRPC servers, metrics endpoints, bus and gossip sockets)."""
        return [port for p in self.procs for port in p.bound_ports()]

    # -- stop --------------------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """Graceful stop in order agents -> learners -> env; SIGKILL after ``timeout`` per group.

        Returns:
            Exit code per process name (None if it had to be killed).
        """
        codes: dict[str, int | None] = {}
        for role in ("agent", "learner", "env"):
            group = [p for p in self.procs if p.role == role]
            names = [p.name for p in group]
            codes.update(zip(names, stop_processes([p.popen for p in group], timeout, names), strict=True))
        self._close_fork_server()
        return codes

    def kill(self) -> None:
        """SIGKILL every process that is still running (last resort)."""
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
        self._close_fork_server()

    def _close_fork_server(self) -> None:
        if self.fork_server is not None:
            self.fork_server.close()
            self.fork_server = None

"""``runtime``: processes, gRPC, restarts and TLS."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from marlmesh.config.base import StrictModel


class RestartConfig(StrictModel):
    """Supervision by the local launcher: how a crashed env, agent or learner process is restarted.

    A process that exits on its own while the run goes on is restarted after ``backoff_s``, then
    ``2 * backoff_s``, ``4 * backoff_s``... (at most ``backoff_max_s``), up to ``max_restarts`` times per
    process; then the run fails naming the process and its log tail. A restarted process reuses its previous
    gRPC port, so clients reconnect to the same address; an agent rejoins the env, a learner resumes from its
    newest valid checkpoint, an env continues its tick count (agents rejoin it).
    """

    max_restarts: int = Field(3, ge=0)
    """Crash restarts allowed per process over the whole run (0 = fail at the first crash). Restarts
    scheduled by a ``faults`` entry do not count against this budget."""
    backoff_s: float = Field(1.0, ge=0)
    """Delay before the first restart of a process; doubles with each further restart of that process."""
    backoff_max_s: float = Field(30.0, ge=0)
    """Upper bound of the restart delay."""


class TlsConfig(StrictModel):
    """Optional mutual TLS on every gRPC server and channel (see ``marlmesh/tls.py``).

    Each process has its own identity (``env``, ``agent-<i>``, ``learner-<i>``, ``launcher``). Its files are,
    first match: the flags ``--tls-ca/--tls-cert/--tls-key`` or ``MARLMESH_TLS_CA/CERT/KEY`` (``{id}`` is
    replaced by the agent index, ``{name}`` by the identity); ``ca_file``/``cert_file``/``key_file`` below;
    ``keys_dir/ca.crt``, ``keys_dir/<name>.tls.crt``, ``keys_dir/<name>.tls.key``.
    """

    enabled: bool = False
    """Serve and dial gRPC over TLS with client-certificate verification (plaintext when false)."""
    keys_dir: str | None = None
    """Folder written by ``marlmesh keys gen``: ``ca.crt`` and ``<name>.tls.crt`` / ``<name>.tls.key`` per process."""
    ca_file: str | None = None
    """PEM file of the CA that signs every process's certificate (overrides ``keys_dir/ca.crt``)."""
    cert_file: str | None = None
    """PEM certificate of this process; ``{name}`` is replaced by its identity (overrides ``keys_dir``)."""
    key_file: str | None = None
    """PEM private key of this process; ``{name}`` is replaced by its identity (overrides ``keys_dir``)."""
    server_name: str = Field("marlmesh", min_length=1)
    """DNS name every server certificate carries and every client checks (``marlmesh keys gen --server-name``)."""

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsConfig:
        if self.enabled and not self.keys_dir and not (self.ca_file and self.cert_file and self.key_file):
            raise ValueError(
                "enabled needs keys_dir (create one with 'marlmesh keys gen DIR --agents N') "
                "or all of ca_file, cert_file and key_file"
            )
        return self


class RuntimeConfig(StrictModel):
    """Process and network settings."""

    host: str = "127.0.0.1"
    """Address every server binds and every client dials (loopback unless told otherwise)."""
    rpc_timeout_s: float = Field(30.0, gt=0)
    """Deadline of every unary RPC."""
    startup_timeout_s: float = Field(120.0, gt=0)
    """How long the launcher waits for every process to become healthy."""
    agent_start: Literal["fork", "exec"] = "fork"
    """How the local mesh launcher starts agent processes. ``fork``: from a fork server that has imported the
    agent's modules once per mesh (``marlmesh/launch/forkserver.py``; Linux), so an agent's start skips about
    0.3 s of imports; ``exec``: a fresh ``python -m agent_service`` each. Either way the agent runs the same
    code with the same arguments and environment, and its results are the same (it is left out of sweep
    cell ids). A pod on Kubernetes is always its own exec'd process."""
    progress_interval_s: float = Field(2.0, gt=0)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent."""
    restart: RestartConfig = Field(default_factory=RestartConfig)
    """Restart policy of crashed processes (local launcher)."""
    tls: TlsConfig = Field(default_factory=TlsConfig)
    """Mutual TLS on every gRPC connection (off by default)."""
    insecure: bool = False
    """Allow plaintext off loopback: without it a process that binds or dials an address outside 127.0.0.0/8 and
    ::1 (``0.0.0.0``, a pod IP, a DNS name) refuses to start unless gRPC has mTLS (``runtime.tls.enabled``) and
    the bus CURVE (``bus.security.curve``). When true every process logs a WARNING at start and
    ``summary.json`` records ``config.insecure: true``."""

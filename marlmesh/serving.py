"""What every marlmesh server process shares: gRPC server setup, health, control, signals, logging.

Servicers stay thin adapters over plain logic objects; this module only wires them into a process:
a ``grpc.Server`` bound to ``host:port`` with bounded message sizes, the standard gRPC health service,
the ``Control`` service (identity + authenticated remote shutdown), SIGTERM/SIGINT -> a stop event.
With a :class:`~marlmesh.tls.TlsIdentity` the server speaks mutual TLS only (``marlmesh/tls.py``).
"""

from __future__ import annotations

import hmac
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import marlmesh
from marlmesh import contract, control_token, exposure, tls
from marlmesh.rpc_guard import guarded
from marlmesh.v1 import control_pb2, control_pb2_grpc

MAX_SHUTDOWN_REASON_CHARS = 1024
"""Longest ``ShutdownRequest.reason`` accepted."""


class UndecodableCounter(grpc.ServerInterceptor):
    """Counts requests whose bytes do not decode as the method's request message, by method.

    gRPC answers them ``INTERNAL`` ("Exception deserializing request!") before any servicer sees them; this
    wraps each method's request deserializer so that such inputs are counted too (``Control.GetInfo``
    reports the total as ``undecodable_requests``).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def intercept_service(self, continuation, handler_call_details):  # noqa: D102 (gRPC hook)
        handler = continuation(handler_call_details)
        decode = getattr(handler, "request_deserializer", None)
        if decode is None:
            return handler
        method = handler_call_details.method

        def counted(data: bytes) -> object:
            try:
                return decode(data)
            except Exception:
                self.counts[method] += 1
                raise

        return handler._replace(request_deserializer=counted)


@dataclass
class Identity:
    """Who this process is."""

    role: str
    agent_index: int = -1
    counters: Callable[[], Mapping[str, float]] = field(default=lambda: {})


class ControlServicer(control_pb2_grpc.ControlServicer):
    """Identity and remote shutdown; shutdown only sets the process stop event.

    ``Shutdown`` is authorized by the control token (metadata ``x-marlmesh-control-token``) or, over mTLS, by
    the ``launcher`` certificate; anything else answers ``UNAUTHENTICATED`` (no credentials) or
    ``PERMISSION_DENIED`` (wrong token or identity), counted in ``shutdown_refused`` by reason.

    Args:
        identity: Role and counters reported by ``GetInfo``.
        stop: Event set by an authorized ``Shutdown``.
        token: The shared control token (None: only the launcher certificate can stop the process).
        shutdown_identities: Certificate common names allowed to stop the process over mTLS.
        undecodable: Undecodable requests by method (see :class:`UndecodableCounter`), reported by ``GetInfo``.
    """

    def __init__(
        self,
        identity: Identity,
        stop: threading.Event,
        token: str | None = None,
        shutdown_identities: frozenset[str] = frozenset({tls.LAUNCHER}),
        undecodable: Counter[str] | None = None,
    ) -> None:
        self._identity = identity
        self._undecodable = undecodable if undecodable is not None else Counter()
        self._stop = stop
        self._token = token
        self._shutdown_identities = shutdown_identities
        self.rejected = 0
        self.shutdown_refused: Counter[str] = Counter()
        """Refused ``Shutdown`` calls by reason: ``no_credentials``, ``bad_token``, ``identity``."""
        self.internal_errors: Counter[str] = Counter()

    @guarded
    def GetInfo(self, request, context):  # noqa: N802 (gRPC method name)
        """Return role, agent index, pid and counters.

        Besides the process's own counters: ``shutdown_refused`` (unauthorized ``Shutdown`` calls),
        ``shutdown_invalid`` (authorized ones with an invalid request) and ``undecodable_requests`` (requests of
        any method whose bytes did not decode).
        """
        counters = {k: float(v) for k, v in self._identity.counters().items()}
        counters["shutdown_refused"] = float(sum(self.shutdown_refused.values()))
        counters["shutdown_invalid"] = float(self.rejected)
        counters["undecodable_requests"] = float(sum(self._undecodable.values()))
        return control_pb2.ProcessInfo(
            role=self._identity.role,
            agent_index=self._identity.agent_index,
            pid=os.getpid(),
            marlmesh_version=marlmesh.__version__,
            counters=counters,
        )

    def _refusal(self, context: grpc.ServicerContext) -> tuple[str, grpc.StatusCode, str] | None:
        """Why the caller may not stop this process (reason, status, message), or None if it may."""
        sent = [v for k, v in context.invocation_metadata() if k == control_token.METADATA_KEY]
        if sent and self._token is not None and hmac.compare_digest(str(sent[0]).encode(), self._token.encode()):
            return None
        peer = tls.peer_common_name(context)
        if peer is not None and peer in self._shutdown_identities:
            return None
        if sent:
            return "bad_token", grpc.StatusCode.PERMISSION_DENIED, "Control.Shutdown: wrong control token"
        if peer is not None:
            return (
                "identity",
                grpc.StatusCode.PERMISSION_DENIED,
                f"Control.Shutdown: identity {peer!r} may not stop this process (only "
                f"{', '.join(sorted(self._shutdown_identities))} or a holder of the control token)",
            )
        return (
            "no_credentials",
            grpc.StatusCode.UNAUTHENTICATED,
            f"Control.Shutdown needs the control token (metadata {control_token.METADATA_KEY!r}); "
            "stop the process with SIGTERM otherwise",
        )

    @guarded
    def Shutdown(self, request, context):  # noqa: N802
        """Ask the process to stop gracefully (authorized callers only)."""
        refusal = self._refusal(context)
        if refusal is not None:
            reason, code, message = refusal
            self.shutdown_refused[reason] += 1
            logging.getLogger(__name__).warning("refused a shutdown request from %s: %s", context.peer(), reason)
            context.abort(code, message)
        if len(request.reason) > MAX_SHUTDOWN_REASON_CHARS:
            self.rejected += 1
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reason must have at most {MAX_SHUTDOWN_REASON_CHARS} characters, got {len(request.reason)}",
            )
        logging.getLogger(__name__).info("shutdown requested over gRPC: %s", request.reason or "(no reason)")
        self._stop.set()
        return control_pb2.ShutdownResponse()


MAX_RECONNECT_BACKOFF_MS = 2000
"""Longest pause between a client channel's reconnection attempts: a restarted server on the same port is
found again within about this long (gRPC's default grows to 120 s)."""


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options: bounded message sizes, no port sharing, quick reconnection after a restart."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


@dataclass
class Server:
    """A started gRPC server with its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    control: ControlServicer

    def set_serving(self, serving: bool = True) -> None:
        """Mark the whole server SERVING or NOT_SERVING in the health service."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", status)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting RPCs and wait up to ``grace`` seconds for running ones."""
        self.set_serving(False)
        self.server.stop(grace).wait(grace + 1.0)


def start_server(
    *,
    host: str,
    port: int,
    identity: Identity,
    stop: threading.Event,
    register: Callable[[grpc.Server], None],
    max_message_bytes: int,
    workers: int = 16,
    tls_identity: tls.TlsIdentity | None = None,
    token: str | None = None,
) -> Server:
    """Create, bind and start a gRPC server with health and control services.

    Args:
        host: Address to bind (``127.0.0.1`` unless configured otherwise).
        port: Port to bind; 0 picks a free one.
        identity: Role and counters reported by ``Control.GetInfo``.
        stop: Event set by ``Control.Shutdown``.
        register: Adds the process's own servicers to the server.
        max_message_bytes: Largest message sent or received.
        workers: Thread-pool size (must exceed the number of concurrently blocking RPCs).
        tls_identity: Serve mutual TLS with this identity (None: plaintext).
        token: Control token authorizing ``Control.Shutdown`` (see :class:`ControlServicer`).

    Raises:
        RuntimeError: If the address cannot be bound.
    """
    undecodable = UndecodableCounter()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=grpc_options(max_message_bytes),
        interceptors=[undecodable],
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    control = ControlServicer(identity, stop, token, undecodable=undecodable.counts)
    control_pb2_grpc.add_ControlServicer_to_server(control, server)
    try:
        bound = tls.add_port(server, f"{host}:{port}", tls_identity)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind gRPC server on {host}:{port}: {exc}") from None
    if bound == 0:
        raise RuntimeError(f"cannot bind gRPC server on {host}:{port} (address in use?)")
    server.start()
    out = Server(server=server, port=bound, health=health_servicer, control=control)
    out.set_serving(True)
    return out


def start_metrics(port: int | str, host: str, tls_identity: tls.TlsIdentity | None = None) -> int:
    """Serve this process's Prometheus ``/metrics`` on ``host:port`` (a daemon thread); returns the bound port.

    With mTLS on (``tls_identity``) the endpoint speaks HTTPS with the process's own certificate and requires
    a client certificate of the run's CA (the scraper's, e.g. ``prometheus`` from ``marlmesh keys gen``);
    otherwise plain HTTP, which off loopback needs ``runtime.insecure`` (:mod:`marlmesh.exposure`).

    Args:
        port: A port, 0 (no endpoint: returns 0) or :data:`marlmesh.contract.AUTO_PORT` (a port the OS assigns).
        host: Address to bind.
        tls_identity: This process's certificate when mTLS is on, else None.

    Raises:
        ExposureError: If ``host`` is not loopback, mTLS is off and ``runtime.insecure`` is off.
    """
    if port in (0, "0"):
        return 0
    from prometheus_client import start_http_server

    want = 0 if port == contract.AUTO_PORT else int(port)
    files = None if tls_identity is None else tls_identity.files
    exposure.require(exposure.Surface.METRICS, f"{host}:{want}", secured=files is not None)
    https = (
        {}
        if files is None
        else {
            "certfile": str(files.cert),
            "keyfile": str(files.key),
            "client_cafile": str(files.ca),
            "client_auth_required": True,
        }
    )
    server, _ = start_http_server(want, addr=host, **https)
    return int(server.server_port)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a second signal exits at once)."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        logging.getLogger(__name__).info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def setup_logging(role: str, agent_index: int = -1, level: str | None = None) -> None:
    """Log to stderr as ``time role[index] level message`` (the launcher redirects stderr to a file)."""
    who = role if agent_index < 0 else f"{role}[{agent_index}]"
    logging.basicConfig(
        level=(level or contract.LOG_LEVEL.value() or "INFO").upper(),
        format=f"%(asctime)s {who} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def wait_healthy(address: str, timeout: float, tls_identity: tls.TlsIdentity | None = None) -> bool:
    """Poll the gRPC health service at ``address`` until SERVING or ``timeout`` seconds pass."""
    import time

    deadline = time.monotonic() + timeout
    with tls.open_channel(address, grpc_options(1 << 20), tls_identity) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False

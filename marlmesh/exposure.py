"""Secure by default off loopback: who may bind or dial a non-loopback address in plaintext.

A process whose gRPC server, gRPC channel, Prometheus endpoint or bus/gossip socket binds or dials an address
outside loopback (``127.0.0.0/8``, ``::1``, ``localhost``) must secure that surface: gRPC and the metrics
endpoint with mutual TLS (``runtime.tls.enabled``), the ZeroMQ sockets with CURVE (``bus.security.curve``).
Otherwise it refuses to start with one line naming the key to set and the address, unless the config says
``runtime.insecure: true`` (then every process logs a WARNING at start and ``summary.json`` records
``config.insecure``). Wildcards (``0.0.0.0``, ``::``, ``*``) and DNS names other than ``localhost`` count as
non-loopback; ``ipc://``, ``inproc://`` and ``unix:`` endpoints never leave the machine.

:func:`refusal` decides (a pure function of the address and the settings); :func:`require` is what the choke
points call (:func:`marlmesh.serving.start_server`, :func:`marlmesh.tls.open_channel`,
:func:`marlmesh.serving.start_metrics`, ``comm_bus.transport.ZmqTransport``) with this process's policy, set
once at start by :func:`set_insecure` (the services' :func:`marlmesh.process.security_or_fail`, the
launchers).
"""

from __future__ import annotations

import ipaddress
import logging
from enum import Enum
from typing import TYPE_CHECKING

from marlmesh.config.base import ConfigError

if TYPE_CHECKING:
    from marlmesh.config import Config

INSECURE_KEY = "runtime.insecure"
"""The key that allows plaintext off loopback."""
_LOCAL_SCHEMES = ("ipc://", "inproc://", "unix:", "unix-abstract:")
_WILDCARDS = {"", "*", "0.0.0.0", "::"}

log = logging.getLogger(__name__)


class Surface(Enum):
    """What binds or dials an address, and the key that secures it."""

    GRPC = ("gRPC", "runtime.tls.enabled=true with runtime.tls.keys_dir")
    METRICS = ("Prometheus endpoint", "runtime.tls.enabled=true with runtime.tls.keys_dir")
    BUS = ("bus socket", "bus.security.curve=true with bus.security.keys_dir")

    @property
    def what(self) -> str:
        """Human name of the surface."""
        return self.value[0]

    @property
    def fix(self) -> str:
        """The key(s) that secure it."""
        return self.value[1]


class ExposureError(ConfigError):
    """A surface would bind or dial a non-loopback address unsecured; the message names the key and address."""


def host_of(address: str) -> str | None:
    """The host part of ``address``; None for an endpoint that never leaves the machine.

    Reads ``host``, ``host:port``, ``[v6]:port``, ``tcp://host:port`` and ``dns:///host:port``; ``ipc://``,
    ``inproc://`` and ``unix:`` endpoints give None.
    """
    text = address.strip()
    if text.startswith(_LOCAL_SCHEMES):
        return None
    for scheme in ("tcp://", "dns:///", "dns:", "ipv4:", "ipv6:"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") > 1:  # a bare IPv6 address, maybe followed by :port
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text.rsplit(":", 1)[0]
    return text.rsplit(":", 1)[0] if ":" in text else text


def is_loopback(address: str) -> bool:
    """Whether ``address`` stays on this machine: loopback IPs, ``localhost``, ``ipc``/``inproc``/``unix``."""
    host = host_of(address)
    if host is None:
        return True
    host = host.lower().rstrip(".")
    if host in _WILDCARDS:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name or an interface name: it may be reached from elsewhere


def refusal(surface: Surface, address: str, *, secured: bool, insecure: bool, verb: str = "bind") -> str | None:
    """Why ``surface`` may not ``verb`` ``address`` (one line naming the keys), or None when it may.

    Args:
        surface: What binds or dials.
        address: The address (any form :func:`host_of` reads).
        secured: Whether the surface is secured (mTLS for gRPC and metrics, CURVE for the bus).
        insecure: ``runtime.insecure``.
        verb: ``bind`` or ``dial`` (for the message).
    """
    if secured or insecure or is_loopback(address):
        return None
    return (
        f"the {surface.what} would {verb} {address}, which is not loopback, without "
        f"{'CURVE' if surface is Surface.BUS else 'mutual TLS'}: set {surface.fix} "
        f"(keys from 'marlmesh keys gen DIR --agents N'), or {INSECURE_KEY}=true to accept plaintext"
    )


_insecure = False
_warned = False


def set_insecure(insecure: bool, who: str) -> None:
    """Set this process's policy from ``runtime.insecure``; logs a WARNING (once) when plaintext is allowed.

    Args:
        insecure: ``runtime.insecure``.
        who: The process, for the warning.
    """
    global _insecure, _warned
    _insecure = bool(insecure)
    if _insecure and not _warned:
        _warned = True
        log.warning(
            "!!! %s runs with %s=true: gRPC and bus traffic off loopback may be PLAINTEXT and UNAUTHENTICATED; "
            "any host that reaches these ports can read and inject messages !!!",
            who,
            INSECURE_KEY,
        )


def insecure() -> bool:
    """This process's policy (``runtime.insecure`` as set by :func:`set_insecure`)."""
    return _insecure


def require(surface: Surface, address: str, *, secured: bool, verb: str = "bind") -> None:
    """Raise :class:`ExposureError` when :func:`refusal` refuses under this process's policy."""
    reason = refusal(surface, address, secured=secured, insecure=_insecure, verb=verb)
    if reason is not None:
        raise ExposureError(reason)


def check_launcher(config: Config) -> None:
    """A local launcher's start: set the policy and refuse a mesh on a plaintext non-loopback ``runtime.host``.

    Every child binds ``runtime.host`` (gRPC, metrics, bus) and the launcher dials it, so this refuses before
    the first child starts; the children check again where they bind and dial.

    Raises:
        ExposureError: Naming the key to set and the address.
    """
    set_insecure(config.runtime.insecure, "the launcher")
    host = config.runtime.host
    require(Surface.GRPC, host, secured=config.runtime.tls.enabled)
    require(Surface.BUS, host, secured=config.bus.security.curve)

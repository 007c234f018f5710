"""Optional mutual TLS for every gRPC server and client channel (``runtime.tls``).

With ``runtime.tls.enabled`` every server presents its certificate and requires and verifies a client
certificate signed by the run's CA; every client presents its own certificate and checks the server's
against the same CA and the DNS name ``runtime.tls.server_name``. A peer without a certificate, or with one
from another CA, fails the handshake and never reaches a servicer. Plaintext stays the default.

Every process has its own identity: ``env``, ``agent-<i>``, ``learner-<i>`` or ``launcher`` (the local
launcher's client side, and the only identity allowed to call ``Control.Shutdown`` without the control
token). Its three files come from, first match:

1. the flags ``--tls-ca/--tls-cert/--tls-key`` or ``MARLMESH_TLS_CA/CERT/KEY`` (``{id}`` is replaced by the
   agent index and ``{name}`` by the identity, so a StatefulSet can give every pod the same variables);
2. ``runtime.tls.ca_file/cert_file/key_file`` (``{name}`` placeholder);
3. ``runtime.tls.keys_dir``: ``ca.crt``, ``<name>.tls.crt``, ``<name>.tls.key`` (written by ``marlmesh keys gen``;
   ``agent-<i>.key`` in the same folder is the bus CURVE key, not a TLS key).

A missing or unreadable file, a certificate the CA did not sign, or a key that does not match its certificate
fails at start with the key path (or variable) that named it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from marlmesh import contract, exposure
from marlmesh.config import Config, ConfigError, TlsConfig

ENV_VARS = {"ca": contract.TLS_CA.name, "cert": contract.TLS_CERT.name, "key": contract.TLS_KEY.name}
"""Per-process overrides of the three files (also the flags ``--tls-ca/--tls-cert/--tls-key``)."""
LAUNCHER = "launcher"
"""Identity of the local launcher (``marlmesh train``/``eval``)."""
CA_CERT = "ca.crt"
"""File name of the CA certificate in a keys dir."""


def identity_name(role: str, agent: int = -1) -> str:
    """``env``, ``launcher``, ``agent-<i>`` or ``learner-<i>``."""
    return role if agent < 0 else f"{role}-{agent}"


def cert_path(directory: Path, name: str) -> Path:
    """Certificate of identity ``name`` in a keys dir."""
    return directory / f"{name}.tls.crt"


def key_path(directory: Path, name: str) -> Path:
    """TLS private key of identity ``name`` in a keys dir."""
    return directory / f"{name}.tls.key"


@dataclass(frozen=True)
class TlsFiles:
    """Where one identity's CA, certificate and key are, and which setting named each (for errors)."""

    name: str
    ca: Path
    cert: Path
    key: Path
    sources: Mapping[str, str]

    def env(self) -> dict[str, str]:
        """The ``MARLMESH_TLS_*`` variables that make a child process use these files."""
        return {ENV_VARS["ca"]: str(self.ca), ENV_VARS["cert"]: str(self.cert), ENV_VARS["key"]: str(self.key)}


def resolve_files(
    config: TlsConfig, name: str, overrides: Mapping[str, str | None] | None = None, agent: int = -1
) -> TlsFiles | None:
    """The files of identity ``name``, or None when TLS is off.

    Args:
        config: ``runtime.tls``.
        name: The identity (:func:`identity_name`).
        overrides: ``{"ca"|"cert"|"key": path or None}`` from flags or ``MARLMESH_TLS_*``.
        agent: Agent index substituted for ``{id}`` (-1: none).
    """
    if not config.enabled:
        return None
    configured = {"ca": config.ca_file, "cert": config.cert_file, "key": config.key_file}
    in_dir = {"ca": CA_CERT, "cert": cert_path(Path(), name).name, "key": key_path(Path(), name).name}
    paths: dict[str, Path] = {}
    sources: dict[str, str] = {}
    for kind in ("ca", "cert", "key"):
        given = (overrides or {}).get(kind)
        if given:
            raw, source = given, ENV_VARS[kind]
        elif configured[kind]:
            raw, source = str(configured[kind]), f"runtime.tls.{kind}_file"
        else:
            raw, source = str(Path(str(config.keys_dir)) / in_dir[kind]), "runtime.tls.keys_dir"
        raw = raw.replace("{name}", name)
        if "{id}" in raw:
            if agent < 0:
                raise ConfigError(f"{source}: {raw!r} uses {{id}} but {name} is not an agent or learner")
            raw = raw.replace("{id}", str(agent))
        paths[kind], sources[kind] = Path(raw), source
    return TlsFiles(name, paths["ca"], paths["cert"], paths["key"], sources)


def overrides_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """``{"ca"|"cert"|"key": path}`` from the ``MARLMESH_TLS_*`` variables (empty ones are ignored)."""
    env = os.environ if environ is None else environ
    return {kind: env.get(var) or None for kind, var in ENV_VARS.items()}


@dataclass(frozen=True)
class TlsIdentity:
    """One process's loaded TLS material: what its servers present and what its channels present.

    Args:
        name: The identity (certificate common name).
        ca: PEM of the CA certificate (trust root for both directions).
        cert: PEM certificate chain of this process.
        key: PEM private key of this process.
        server_name: Name checked in every server's certificate.
        files: Where the three PEM files are (the Prometheus endpoint serves TLS from them).
    """

    name: str
    ca: bytes
    cert: bytes
    key: bytes
    server_name: str
    files: TlsFiles | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS server credentials that require and verify a client certificate."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials presenting this process's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(files: TlsFiles, kind: str) -> bytes:
    path = getattr(files, kind)
    what = {"ca": "CA certificate", "cert": f"certificate of {files.name}", "key": f"private key of {files.name}"}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{files.sources[kind]}: the {what[kind]} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{files.sources[kind]}: cannot read the {what[kind]} {path}: {exc}") from None
    marker = b"PRIVATE KEY-----" if kind == "key" else b"-----BEGIN CERTIFICATE-----"
    if marker not in data:
        raise ConfigError(f"{files.sources[kind]}: {path} is not a PEM {what[kind]}")
    return data


def _check_chain(files: TlsFiles, ca: bytes, cert: bytes, key: bytes) -> None:
    """With ``cryptography`` installed: the CA signed the certificate, it is valid now, the key matches."""
    try:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # edge installs: gRPC still checks everything at the handshake
        return
    try:
        ca_cert = x509.load_pem_x509_certificate(ca)
        own = x509.load_pem_x509_certificate(cert)
        private = serialization.load_pem_private_key(key, password=None)
    except ValueError as exc:
        raise ConfigError(f"{files.sources['cert']}: cannot parse the TLS files of {files.name}: {exc}") from None
    try:
        own.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{files.sources['cert']}: {files.cert} was not issued by the CA in {files.ca} ({type(exc).__name__})"
        ) from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if not own.not_valid_before_utc <= now <= own.not_valid_after_utc:
        raise ConfigError(
            f"{files.sources['cert']}: {files.cert} is valid from {own.not_valid_before_utc:%Y-%m-%d} to "
            f"{own.not_valid_after_utc:%Y-%m-%d} only (renew it with 'marlmesh keys gen')"
        )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, spki) != own.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise ConfigError(f"{files.sources['key']}: {files.key} is not the private key of {files.cert}")


def load_identity(
    config: TlsConfig, name: str, overrides: Mapping[str, str | None] | None = None, agent: int = -1
) -> TlsIdentity | None:
    """Read and check the TLS files of identity ``name``; None when TLS is off.

    Raises:
        ConfigError: Naming the setting whose file is missing, unreadable or wrong.
    """
    files = resolve_files(config, name, overrides, agent)
    if files is None:
        return None
    ca, cert, key = (_read(files, kind) for kind in ("ca", "cert", "key"))
    _check_chain(files, ca, cert, key)
    return TlsIdentity(name=name, ca=ca, cert=cert, key=key, server_name=config.server_name, files=files)


def child_env(config: TlsConfig, name: str, agent: int = -1) -> dict[str, str]:
    """The ``MARLMESH_TLS_*`` variables (absolute paths) that give a child process identity ``name``.

    The files are read and checked first, so a bad one fails before the child starts; ``{}`` when TLS is off.

    Raises:
        ConfigError: Naming the setting whose file is missing, unreadable or wrong.
    """
    load_identity(config, name, agent=agent)
    files = resolve_files(config, name, agent=agent)
    return {} if files is None else {var: str(Path(path).resolve()) for var, path in files.env().items()}


def check_tls(config: Config) -> None:
    """Check the launcher's and the env's TLS files before anything starts (agents are checked at start).

    Raises:
        ConfigError: Naming the setting whose file is missing or wrong.
    """
    for name in (LAUNCHER, "env"):
        load_identity(config.runtime.tls, name)


def open_channel(address: str, options: list[tuple[str, object]], tls: TlsIdentity | None = None) -> grpc.Channel:
    """A client channel to ``address``: TLS with this process's certificate when ``tls`` is set, else plaintext.

    Raises:
        ExposureError: If ``address`` is not loopback, ``tls`` is None and ``runtime.insecure`` is off
            (:mod:`marlmesh.exposure`).
    """
    exposure.require(exposure.Surface.GRPC, address, secured=tls is not None, verb="dial")
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(
        address, tls.channel_credentials(), options=[*options, ("grpc.ssl_target_name_override", tls.server_name)]
    )


def add_port(server: grpc.Server, address: str, tls: TlsIdentity | None = None) -> int:
    """Bind ``server`` to ``address`` (mTLS when ``tls`` is set); returns the bound port (0 = failed).

    Raises:
        ExposureError: If ``address`` is not loopback, ``tls`` is None and ``runtime.insecure`` is off.
    """
    exposure.require(exposure.Surface.GRPC, address, secured=tls is not None)
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, tls.server_credentials())


def peer_common_name(context: grpc.ServicerContext) -> str | None:
    """Common name of the peer's verified client certificate, or None on a plaintext connection."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode(errors="replace") if names else None

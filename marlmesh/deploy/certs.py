"""A private CA and one certificate per process for gRPC mTLS (``marlmesh keys gen``; needs ``cryptography``).

Files in the keys dir: ``ca.crt`` / ``ca.key`` (the CA; ``ca.key`` never leaves the folder), and
``<name>.tls.crt`` / ``<name>.tls.key`` for ``env``, ``launcher``, ``agent-<i>``, ``learner-<i>`` and ``prometheus``
(the scraper's client certificate for the HTTPS metrics endpoints). Every process
is both a server and a client, so each certificate is valid for both (extended key usage serverAuth and
clientAuth); its common name is the identity and its subject alternative names are the DNS name
``server_name`` (what clients check, ``runtime.tls.server_name``), ``localhost`` and ``127.0.0.1``.
Keys are ECDSA P-256; private key files are mode 0600. Existing files are kept; a missing certificate is
issued by the existing CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from marlmesh.tls import CA_CERT, LAUNCHER, cert_path, key_path

CA_KEY = "ca.key"
"""File name of the CA's private key (kept out of the Kubernetes Secret)."""


PROMETHEUS = "prometheus"
"""Identity of the metrics scraper (a client certificate of the run's CA; no marlmesh process uses it)."""


def identities(agents: int) -> list[str]:
    """Every identity of a mesh of ``agents`` agents: env, launcher, agent-<i> and learner-<i>, prometheus."""
    return ["env", LAUNCHER, *(f"{role}-{i}" for i in range(agents) for role in ("agent", "learner")), PROMETHEUS]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def _new_key():  # noqa: ANN202 (cryptography type)
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_or_create_ca(directory: Path, days: int, written: list[Path]):  # noqa: ANN202
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    ca_crt, ca_key = directory / CA_CERT, directory / CA_KEY
    if ca_crt.is_file() and ca_key.is_file():
        return x509.load_pem_x509_certificate(ca_crt.read_bytes()), serialization.load_pem_private_key(
            ca_key.read_bytes(), password=None
        )
    if ca_crt.exists() or ca_key.exists():
        raise ValueError(f"{directory} has only one of {CA_CERT} and {CA_KEY}; remove it or restore the other")
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "marlmesh CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_key, _pem_key(key))
    ca_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    written += [ca_crt, ca_key]
    return cert, key


def issue(ca_cert, ca_key, name: str, server_name: str, days: int) -> tuple[bytes, bytes]:  # noqa: ANN001
    """A certificate (PEM) for identity ``name`` signed by the CA, and its private key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(server_name), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def generate_tls(directory: Path, agents: int, *, server_name: str = "marlmesh", days: int = 365) -> list[Path]:
    """Create the CA (unless present) and a certificate + key for every identity of ``agents`` agents.

    Returns:
        The files written (existing ones are kept).

    Raises:
        ValueError: If ``cryptography`` is missing or the folder holds half a CA.
    """
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ValueError("marlmesh keys gen needs the 'cryptography' package: pip install 'marlmesh[train]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_cert, ca_key = _load_or_create_ca(directory, days, written)
    for name in identities(agents):
        crt, key = cert_path(directory, name), key_path(directory, name)
        if crt.is_file() and key.is_file():
            continue
        cert_pem, key_pem = issue(ca_cert, ca_key, name, server_name, days)
        _write_private(key, key_pem)
        crt.write_bytes(cert_pem)
        written += [crt, key]
    return written


TLS_SECRET = "marlmesh-tls"
"""Name of the Kubernetes Secret holding the CA certificate, every pod identity and the control token."""
PROMETHEUS_SECRET = "marlmesh-prometheus-tls"
"""Name of the Kubernetes Secret with the scraper's certificate (``ca.crt``, ``tls.crt``, ``tls.key``)."""
CONTROL_TOKEN = "control.token"
"""File name of the control token in a keys dir (and in the Secret)."""


def tls_secret_manifest(directory: Path, agents: int, namespace: str = "marlmesh") -> str:
    """The Secret :data:`TLS_SECRET` with every file a pod needs for mTLS and remote shutdown.

    It holds ``ca.crt``, the certificate and key of ``env``, ``agent-<i>`` and ``learner-<i>``, and
    ``control.token`` (never ``ca.key`` nor the launcher's key: no pod needs them).

    ``marlmesh k8s render`` mounts it at ``/etc/marlmesh/tls`` when ``runtime.tls.enabled``.
    """
    import base64

    import yaml

    names = [n for n in identities(agents) if n not in (LAUNCHER, PROMETHEUS)]
    files = [directory / CA_CERT, *(p for n in names for p in (cert_path(directory, n), key_path(directory, n)))]
    files.append(directory / CONTROL_TOKEN)
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TLS_SECRET, "namespace": namespace},
        "type": "Opaque",
        "data": {p.name: base64.b64encode(p.read_bytes()).decode() for p in files},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def prometheus_secret_manifest(directory: Path, namespace: str = "marlmesh") -> str:
    """The Secret :data:`PROMETHEUS_SECRET`: the CA certificate and the ``prometheus`` certificate and key.

    ``k8s/monitoring/podmonitor.yaml`` scrapes the HTTPS metrics endpoints with it (a Prometheus without the
    operator mounts it and sets ``tls_config`` the same way, see ``k8s/README.md``).
    """
    import base64

    import yaml

    files = {
        CA_CERT: directory / CA_CERT,
        "tls.crt": cert_path(directory, PROMETHEUS),
        "tls.key": key_path(directory, PROMETHEUS),
    }
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PROMETHEUS_SECRET, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(p.read_bytes()).decode() for k, p in files.items()},
    }
    return yaml.safe_dump(doc, sort_keys=False)

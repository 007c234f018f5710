"""``marlmesh keys gen DIR --agents N``: bus CURVE keys, gRPC mTLS certificates, a token, Kubernetes Secrets.

CURVE key pairs per agent (the bus), a CA and one certificate per process (``runtime.tls``), the control
token (``Control.Shutdown``), and ``DIR/secret.yaml`` with the Secrets ``marlmesh-bus-keys``, ``marlmesh-tls``
and ``marlmesh-prometheus-tls`` (what ``marlmesh k8s render`` mounts; ``kubectl apply -f DIR/secret.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from comm_bus.security import generate_keys, secret_manifest
from marlmesh.control_token import write_new_token
from marlmesh.deploy.certs import CONTROL_TOKEN, generate_tls, prometheus_secret_manifest, tls_secret_manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh keys gen``."""
    p.add_argument("directory", type=Path, help="folder for the key, certificate and token files")
    p.add_argument("--agents", type=int, required=True, help="number of agents N")
    p.add_argument("--namespace", default="marlmesh", help="namespace of the Secret manifests")
    p.add_argument("--no-tls", action="store_true", help="bus CURVE keys only: no CA, certificates or token")
    p.add_argument("--server-name", default="marlmesh", help="DNS name in every certificate (runtime.tls.server_name)")
    p.add_argument("--days", type=int, default=365, help="validity of the CA and certificates in days")


def main(ns: argparse.Namespace) -> int:
    """Write missing keys, certificates and token, and ``DIR/secret.yaml``; print what was written."""
    if ns.agents < 1:
        raise ValueError(f"--agents must be at least 1, got {ns.agents}")
    if ns.days < 1:
        raise ValueError(f"--days must be at least 1, got {ns.days}")
    written = generate_keys(ns.directory, ns.agents)
    manifests = [secret_manifest(ns.directory, ns.agents, namespace=ns.namespace)]
    if not ns.no_tls:
        written += generate_tls(ns.directory, ns.agents, server_name=ns.server_name, days=ns.days)
        token = ns.directory / CONTROL_TOKEN
        if not token.is_file():
            write_new_token(token)
            written.append(token)
        manifests.append(tls_secret_manifest(ns.directory, ns.agents, namespace=ns.namespace))
        manifests.append(prometheus_secret_manifest(ns.directory, namespace=ns.namespace))
    manifest = ns.directory / "secret.yaml"
    manifest.write_text("---\n".join(manifests))
    manifest.chmod(0o600)
    for path in written:
        print(path)
    print(manifest)
    print(
        f"use: --set bus.security.curve=true --set bus.security.keys_dir={ns.directory} "
        f"(Kubernetes: kubectl apply -f {manifest}, then 'marlmesh k8s render' mounts the Secrets)"
    )
    if not ns.no_tls:
        print(f"     --set runtime.tls.enabled=true --set runtime.tls.keys_dir={ns.directory}")
    return 0

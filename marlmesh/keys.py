"""``marlmesh keys gen DIR --agents N``: CURVE key pairs for the bus and a Kubernetes Secret holding them."""

from __future__ import annotations

import argparse
from pathlib import Path

from comm_bus.security import generate_keys, secret_manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh keys gen``."""
    p.add_argument("directory", type=Path, help="folder for agent-<i>.key / agent-<i>.key_secret")
    p.add_argument("--agents", type=int, required=True, help="number of agents N")
    p.add_argument("--namespace", default="marlmesh", help="namespace of the Secret manifest")


def main(ns: argparse.Namespace) -> int:
    """Write missing key pairs and ``DIR/secret.yaml``; print what was written."""
    if ns.agents < 1:
        raise ValueError(f"--agents must be at least 1, got {ns.agents}")
    written = generate_keys(ns.directory, ns.agents)
    manifest = ns.directory / "secret.yaml"
    manifest.write_text(secret_manifest(ns.directory, ns.agents, namespace=ns.namespace))
    manifest.chmod(0o600)
    for path in written:
        print(path)
    print(manifest)
    print(
        f"use: --set bus.security.curve=true --set bus.security.keys_dir={ns.directory} "
        f"(Kubernetes: kubectl apply -f {manifest})"
    )
    return 0

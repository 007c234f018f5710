"""``marlmesh k8s render``: Kubernetes manifests for a config, in pure Python (no kubectl needed).

The manifests live in ``k8s/`` as a kustomize base and overlays. This module builds them with a small,
strict subset of kustomize (exactly the features those files use: ``resources``, ``namespace``, ``labels``
on metadata, ``configMapGenerator`` with files and ``disableNameSuffixHash``, and inline JSON6902
``patches`` with a kind/name target), then fits them to a run:

- the ConfigMap ``marlmesh-config`` holds the resolved config (``env.kwargs.N`` set to the agent count where
  the env takes ``N``);
- the agents StatefulSet gets ``replicas: N`` and ``MARLMESH_NUM_AGENTS=N``;
- every pod template gets a ``marlmesh.io/config-sha256`` annotation, so a changed config rolls the pods;
- with ``--overlay edge --policy-dir DIR``, the exported policy becomes the ConfigMap ``marlmesh-policy``;
- secure by default (every pod binds ``0.0.0.0``, see :mod:`marlmesh.exposure`): the rendered config turns on
  ``runtime.tls`` and ``bus.security.curve``; every pod mounts the Secret ``marlmesh-tls`` (``marlmesh keys
  gen``) at ``/etc/marlmesh/tls``, every container gets ``MARLMESH_TLS_CA/CERT/KEY`` of its identity and
  ``MARLMESH_CONTROL_TOKEN_FILE``, the gRPC probes become TCP probes (kubelet gRPC probes cannot do TLS) and
  the Prometheus annotations say ``https``; agent and learner containers mount the Secret
  ``marlmesh-bus-keys`` at ``/etc/marlmesh/bus-keys`` (CURVE for the bus and gossip). ``--insecure`` (or
  ``runtime.insecure: true``) renders neither and sets ``runtime.insecure: true`` in the config.

A test checks that :func:`build_kustomization` and ``kubectl kustomize`` produce the same objects.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from comm_bus.security import SECRET_NAME as BUS_SECRET
from marlmesh import contract, control_token, tls
from marlmesh.config import Config, dump_config, load_config
from marlmesh.deploy.certs import CONTROL_TOKEN, TLS_SECRET

Manifest = dict[str, Any]

#: Where the kustomize tree lives in a checkout (``<repo>/k8s``).
DEFAULT_K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("local", "edge")
CONFIG_MAP = "marlmesh-config"
POLICY_MAP = "marlmesh-policy"
AGENTS = "agents"
CONFIG_ANNOTATION = "marlmesh.io/config-sha256"
TLS_MOUNT = "/etc/marlmesh/tls"
"""Where pods mount the Secret ``marlmesh-tls`` when ``runtime.tls.enabled``."""
BUS_KEYS_MOUNT = "/etc/marlmesh/bus-keys"
"""Where agent and learner containers mount the Secret ``marlmesh-bus-keys`` (``bus.security.keys_dir``)."""
CURVE_CONTAINERS = ("agent", "learner")
"""Containers with bus or gossip sockets (they need the CURVE keys)."""
TLS_IDENTITIES = {"env": "env", "agent": "agent-{id}", "learner": "learner-{id}"}
"""TLS identity of each container (``{id}`` is resolved by the process from its agent index)."""
MAX_CONFIGMAP_BYTES = 1_000_000
"""Kubernetes refuses ConfigMaps above 1 MiB (object size, so keep a margin)."""

_CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
}
_SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}


class RenderError(ValueError):
    """The manifests cannot be rendered; the message says what to fix."""


# -- a strict kustomize subset -----------------------------------------------------------------------------
def build_kustomization(directory: Path) -> list[Manifest]:
    """Build a kustomization directory like ``kubectl kustomize`` would (for the features ``k8s/`` uses).

    Raises:
        RenderError: If the directory has no kustomization.yaml or uses a feature outside the subset.
    """
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{kfile} not found: not a kustomization directory")
    kust = yaml.safe_load(kfile.read_text()) or {}
    unknown = sorted(set(kust) - _SUPPORTED_KEYS)
    if unknown:
        raise RenderError(f"{kfile}: kustomize fields {unknown} are not supported by the marlmesh renderer")
    docs: list[Manifest] = []
    for res in kust.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            docs += build_kustomization(path)
        elif path.is_file():
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
        else:
            raise RenderError(f"{kfile}: resource {res!r} not found")
    options = kust.get("generatorOptions") or {}
    for gen in kust.get("configMapGenerator", []):
        if not options.get("disableNameSuffixHash"):
            raise RenderError(f"{kfile}: configMapGenerator needs generatorOptions.disableNameSuffixHash: true")
        docs.append(_generate_configmap(directory, gen))
    namespace = kust.get("namespace")
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if namespace and doc.get("kind") not in _CLUSTER_SCOPED:
            meta["namespace"] = namespace
        for entry in kust.get("labels", []):
            if entry.get("includeSelectors") or entry.get("includeTemplates"):
                raise RenderError(f"{kfile}: labels with includeSelectors/includeTemplates are not supported")
            meta.setdefault("labels", {}).update(entry.get("pairs", {}))
    for patch in kust.get("patches", []):
        _apply_patch_entry(kfile, docs, patch)
    return docs


def _generate_configmap(directory: Path, gen: dict[str, Any]) -> Manifest:
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for item in gen.get("files", []):
        key, _, rel = item.partition("=") if "=" in item else (Path(item).name, "", item)
        raw = (directory / rel).read_bytes()
        try:
            data[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(raw).decode()
    for item in gen.get("literals", []):
        key, _, value = item.partition("=")
        data[key] = value
    cm: Manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}}
    labels = (gen.get("options") or {}).get("labels")
    if labels:
        cm["metadata"]["labels"] = dict(labels)
    if data:
        cm["data"] = data
    if binary:
        cm["binaryData"] = binary
    return cm


def _apply_patch_entry(kfile: Path, docs: list[Manifest], entry: dict[str, Any]) -> None:
    target = entry.get("target") or {}
    ops = yaml.safe_load(entry.get("patch", "")) if "patch" in entry else None
    if not isinstance(ops, list) or set(target) - {"kind", "name"}:
        raise RenderError(f"{kfile}: only inline JSON6902 patches with a kind/name target are supported")
    matched = [
        d
        for d in docs
        if d.get("kind") == target.get("kind", d.get("kind"))
        and d["metadata"].get("name") == target.get("name", d["metadata"].get("name"))
    ]
    if not matched:
        raise RenderError(f"{kfile}: patch target {target} matches no resource")
    for doc in matched:
        for op in ops:
            json_patch(doc, op)


def json_patch(doc: Manifest, op: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (``add``, ``replace``, ``remove``) in place.

    Raises:
        RenderError: If the path does not exist (``replace``/``remove``) or the op is unknown.
    """
    kind = op.get("op")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op.get("path", "")).split("/")[1:]]
    if kind not in ("add", "replace", "remove") or not parts:
        raise RenderError(f"unsupported JSON patch operation {op}")
    parent: Any = doc
    for part in parts[:-1]:
        try:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        except (KeyError, IndexError, ValueError):
            raise RenderError(f"JSON patch path {op['path']!r} does not exist") from None
    last = parts[-1]
    value = copy.deepcopy(op.get("value"))
    if isinstance(parent, list):
        if kind == "add":
            parent.insert(len(parent) if last == "-" else int(last), value)
            return
        index = int(last)
        if not 0 <= index < len(parent):
            raise RenderError(f"JSON patch path {op['path']!r} does not exist")
        if kind == "remove":
            del parent[index]
        else:
            parent[index] = value
        return
    if kind != "add" and last not in parent:
        raise RenderError(f"JSON patch path {op['path']!r} does not exist")
    if kind == "remove":
        del parent[last]
    else:
        parent[last] = value


# -- fitting the manifests to a run -------------------------------------------------------------------------
def fit_config(config: Config, agents: int) -> Config:
    """The config with ``env.kwargs.N`` set to ``agents`` (where the env takes ``N``), checked against the env.

    Raises:
        RenderError: If the env's agent count cannot be made ``agents``.
    """
    from marlmesh.envs import make_env
    from marlmesh.plugins import PluginError

    if agents < 1:
        raise RenderError(f"--agents must be >= 1, got {agents}")
    data = config.model_dump(mode="json")
    if "N" in data["env"]["kwargs"] or config.env.name in ("mpe2.simple_spread_v3", "marlmesh.simple_spread"):
        data["env"]["kwargs"]["N"] = agents
    fitted = Config.model_validate(data)
    try:
        env = make_env(fitted.env)
    except (ValueError, PluginError) as exc:
        raise RenderError(str(exc)) from None
    found = len(env.possible_agents)
    env.close()
    if found != agents:
        raise RenderError(
            f"env {fitted.env.name!r} has {found} agents but --agents is {agents}: pass --agents {found} "
            "or set the env's agent count in env.kwargs"
        )
    return fitted


def _find(docs: Iterable[Manifest], kind: str, name: str) -> Manifest:
    for d in docs:
        if d.get("kind") == kind and d["metadata"].get("name") == name:
            return d
    raise RenderError(f"the manifests have no {kind} {name!r}; is the k8s/ directory intact?")


def _set_env(container: Manifest, name: str, value: str) -> None:
    for var in container.get("env", []):
        if var["name"] == name:
            var.pop("valueFrom", None)
            var["value"] = value
            return
    container.setdefault("env", []).append({"name": name, "value": value})


def _pod_specs(docs: list[Manifest]) -> Iterable[Manifest]:
    for doc in docs:
        template = doc.get("spec", {}).get("template")
        if doc.get("kind") in ("Deployment", "StatefulSet") and template is not None:
            yield template


def secure_config(config: Config, insecure: bool) -> Config:
    """The config the pods get: mTLS and CURVE on with the mounted Secrets' paths, or ``runtime.insecure: true``.

    Args:
        config: The run's config.
        insecure: ``--insecure``: render without mTLS and CURVE (unless the config turns them on itself).
    """
    data = config.model_dump(mode="json")
    if insecure or config.runtime.insecure:
        data["runtime"]["insecure"] = True
    else:
        data["runtime"]["tls"].update(enabled=True)
        data["bus"]["security"].update(curve=True)
    if data["runtime"]["tls"]["enabled"]:  # in a pod MARLMESH_TLS_* point at the mounted Secret
        data["runtime"]["tls"].update(keys_dir=TLS_MOUNT, ca_file=None, cert_file=None, key_file=None)
    if data["bus"]["security"]["curve"]:
        data["bus"]["security"]["keys_dir"] = BUS_KEYS_MOUNT
    return Config.model_validate(data)


def enable_curve(docs: list[Manifest]) -> None:
    """Mount the CURVE key Secret into every agent and learner container at :data:`BUS_KEYS_MOUNT`."""
    for template in _pod_specs(docs):
        spec = template["spec"]
        users = [c for c in spec["containers"] if c["name"] in CURVE_CONTAINERS]
        if not users:
            continue
        spec.setdefault("volumes", []).append(
            {"name": "bus-keys", "secret": {"secretName": BUS_SECRET, "defaultMode": 0o440}}
        )
        for container in users:
            container.setdefault("volumeMounts", []).append(
                {"name": "bus-keys", "mountPath": BUS_KEYS_MOUNT, "readOnly": True}
            )


def enable_tls(docs: list[Manifest]) -> None:
    """Mount the TLS Secret into every marlmesh pod and point each container at its identity's files.

    kubelet's native gRPC probes speak plaintext only, so each one becomes a TCP probe on the same port (the
    port is bound only once the process is up, which is what the startup probe waits for). The metrics endpoint
    then serves HTTPS (client certificate required), so the ``prometheus.io/scheme`` annotation says ``https``.
    """
    for template in _pod_specs(docs):
        annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
        if "prometheus.io/scrape" in annotations:
            annotations["prometheus.io/scheme"] = "https"
        spec = template["spec"]
        spec.setdefault("volumes", []).append(
            {"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o440}}
        )
        for container in spec["containers"]:
            identity = TLS_IDENTITIES.get(container["name"])
            if identity is None:
                continue
            container.setdefault("volumeMounts", []).append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
            mount = Path(TLS_MOUNT)
            files = {
                "ca": mount / tls.CA_CERT,
                "cert": tls.cert_path(mount, identity),
                "key": tls.key_path(mount, identity),
            }
            for kind, path in files.items():
                _set_env(container, tls.ENV_VARS[kind], str(path))
            _set_env(container, control_token.TOKEN_FILE_ENV, str(mount / CONTROL_TOKEN))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = container.get(probe)
                if handler is not None and "grpc" in handler:
                    handler["tcpSocket"] = {"port": handler.pop("grpc")["port"]}


def policy_configmap(policy_dir: Path, namespace: str | None, agents: int) -> Manifest:
    """The ConfigMap ``marlmesh-policy`` holding an exported policy directory (flat: graphs + manifest.json).

    Raises:
        RenderError: If the directory is not an export for ``agents`` agents or is too large for a ConfigMap.
    """
    import json

    manifest_path = policy_dir / "manifest.json"
    if not manifest_path.is_file():
        raise RenderError(f"{manifest_path} not found: --policy-dir must be a 'marlmesh export' output folder")
    manifest = json.loads(manifest_path.read_text())
    exported = len(manifest.get("agents", []))
    if exported != agents:
        raise RenderError(f"{policy_dir} holds policies of {exported} agents but --agents is {agents}")
    binary = {}
    total = 0
    for path in sorted(p for p in policy_dir.iterdir() if p.is_file()):
        raw = path.read_bytes()
        total += len(raw)
        binary[path.name] = base64.b64encode(raw).decode()
    if total > MAX_CONFIGMAP_BYTES:
        raise RenderError(
            f"{policy_dir} is {total} bytes, too large for a ConfigMap (1 MiB): ship the policy in the image instead"
        )
    meta: Manifest = {"name": POLICY_MAP, "labels": {"app.kubernetes.io/part-of": "marlmesh"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "binaryData": binary}


def render(
    config: Config,
    agents: int,
    overlay: str | None = None,
    policy_dir: Path | None = None,
    k8s_dir: Path = DEFAULT_K8S_DIR,
    insecure: bool = False,
) -> list[Manifest]:
    """Manifests for ``config`` with ``agents`` agent pods (mTLS and CURVE on unless ``insecure``).

    Args:
        config: The run's config (``env.kwargs.N`` is fitted to ``agents``).
        agents: N, the number of agent pods (StatefulSet replicas).
        overlay: None for the base, or one of :data:`OVERLAYS`.
        policy_dir: Edge overlay only: an exported policy folder to ship as the ``marlmesh-policy`` ConfigMap.
        k8s_dir: The kustomize tree (default: ``k8s/`` of this checkout).
        insecure: Render without mTLS and CURVE and with ``runtime.insecure: true`` (also when the config
            says ``runtime.insecure: true``).

    Raises:
        RenderError: Naming what to fix.
    """
    if overlay is not None and overlay not in OVERLAYS:
        raise RenderError(f"unknown overlay {overlay!r}; choose one of {', '.join(OVERLAYS)}")
    if policy_dir is not None and overlay != "edge":
        raise RenderError("--policy-dir only applies to --overlay edge")
    from marlmesh.centralized.plugin import is_centralized

    if is_centralized(config.algo.name) and overlay != "edge":  # its exported actors can still run on the edge
        raise RenderError(
            f"algo.name={config.algo.name} is the CENTRALIZED REFERENCE: it trains in one process "
            "('marlmesh train'), there are no per-agent learner pods; pick a decentralized algo"
        )
    source = k8s_dir / "base" if overlay is None else k8s_dir / "overlays" / overlay
    if not source.is_dir():
        raise RenderError(f"{source} not found: run from a marlmesh checkout or pass --k8s-dir")
    fitted = secure_config(fit_config(config, agents), insecure)
    docs = build_kustomization(source)
    text = dump_config(fitted)
    digest = hashlib.sha256(text.encode()).hexdigest()
    cm = _find(docs, "ConfigMap", CONFIG_MAP)
    cm["data"] = {"config.yaml": text}
    sts = _find(docs, "StatefulSet", AGENTS)
    sts["spec"]["replicas"] = agents
    for container in sts["spec"]["template"]["spec"]["containers"]:
        if container["name"] == "agent":
            _set_env(container, contract.NUM_AGENTS.name, str(agents))
    for doc in docs:
        template = doc.get("spec", {}).get("template")
        if doc.get("kind") in ("Deployment", "StatefulSet") and template is not None:
            template.setdefault("metadata", {}).setdefault("annotations", {})[CONFIG_ANNOTATION] = digest
    if fitted.runtime.tls.enabled:
        enable_tls(docs)
    if fitted.bus.security.curve:
        enable_curve(docs)
    if policy_dir is not None:
        docs.append(policy_configmap(policy_dir, cm["metadata"].get("namespace"), agents))
    return docs


def render_file(config_path: Path | None, agents: int, **kwargs: Any) -> list[Manifest]:
    """:func:`render` for a YAML config file (None = the defaults)."""
    return render(load_config(config_path), agents, **kwargs)


def write_manifests(docs: list[Manifest], out: Path) -> list[Path]:
    """Write one file per object plus a ``kustomization.yaml`` listing them (``kubectl apply -k OUT`` works)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, doc in enumerate(docs):
        path = out / f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    kust = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [p.name for p in written],
    }
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kust, sort_keys=False))
    return written


def dump_manifests(docs: list[Manifest]) -> str:
    """All objects as one multi-document YAML stream."""
    return yaml.safe_dump_all(docs, sort_keys=False)


def add_parser(sub: Any) -> None:
    """Register ``marlmesh k8s render`` on the CLI's subparsers."""
    k = sub.add_parser("k8s", help="Kubernetes manifests for a config (kustomize base + overlays in k8s/)")
    ksub = k.add_subparsers(dest="k8s_command", required=True)
    r = ksub.add_parser("render", help="write the manifests of a config with N agent pods")
    r.add_argument("-c", "--config", default=None, help="YAML config (default: built-in defaults)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    r.add_argument("--agents", type=int, required=True, help="N, agent pods (StatefulSet replicas)")
    r.add_argument("--out", type=Path, default=None, help="output folder (default: print YAML to stdout)")
    r.add_argument("--overlay", choices=OVERLAYS, default=None, help="apply an overlay (default: the base)")
    r.add_argument("--policy-dir", type=Path, default=None, help="edge: exported policy to ship as a ConfigMap")
    r.add_argument("--k8s-dir", type=Path, default=DEFAULT_K8S_DIR, help="kustomize tree (default: ./k8s)")
    r.add_argument(
        "--insecure",
        action="store_true",
        help="no mTLS, no CURVE: plaintext gRPC and bus between pods (sets runtime.insecure: true)",
    )
    r.set_defaults(func=cmd_render)


def cmd_render(ns: Any) -> int:
    """``marlmesh k8s render``."""
    import sys

    from marlmesh.config import ConfigError

    try:
        config = load_config(ns.config, ns.set)
        docs = render(
            config, ns.agents, overlay=ns.overlay, policy_dir=ns.policy_dir, k8s_dir=ns.k8s_dir, insecure=ns.insecure
        )
    except (ConfigError, RenderError) as exc:
        print(f"marlmesh: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    cm = yaml.safe_load(_find(docs, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"])
    if cm["runtime"]["insecure"]:
        print(
            "marlmesh: warning: rendered with runtime.insecure: true: gRPC and bus traffic between pods is "
            "plaintext and unauthenticated unless runtime.tls / bus.security turn them on",
            file=sys.stderr,
        )
    else:
        print(
            f"marlmesh: mTLS and CURVE on: create the Secrets {TLS_SECRET} and {BUS_SECRET} first with "
            "'marlmesh keys gen KEYS --agents N' and 'kubectl apply -f KEYS/secret.yaml'",
            file=sys.stderr,
        )
    if ns.out is None:
        sys.stdout.write(dump_manifests(docs))
    else:
        for path in write_manifests(docs, ns.out):
            print(path)
    return 0

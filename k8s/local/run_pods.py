"""Run rendered marlmesh manifests as Docker containers that stand in for the pods, without a cluster.

Usage, as root (the state folder under ``--state-dir`` is given to the pods' user, as ``fsGroup`` would)::

    marlmesh keys gen /tmp/mesh-keys --agents 3  # the render secures every pod: mTLS, CURVE, HTTPS metrics
    marlmesh k8s render -c configs/dgmappo.yaml --agents 3 --out /tmp/mesh
    python k8s/local/run_pods.py up /tmp/mesh /tmp/mesh-keys/secret.yaml \
        --prometheus-config /tmp/mesh-prometheus.yml --scrape-keys /tmp/mesh-keys
    python k8s/local/run_pods.py down

``up`` reads the Deployments, StatefulSets, Services, ConfigMaps and Secrets of the given folders or files (a
render output, plus e.g. the ``secret.yaml`` of ``marlmesh keys gen``) and starts each pod as one container that
holds the pod's network namespace (the part of Kubernetes' pause container) and one container per pod container
joined to it, so the containers of a pod reach each other on 127.0.0.1. All pods share one user-defined Docker
network on which each answers to the DNS names the manifests use: the Services that select it and, in a
StatefulSet, ``<pod>.<serviceName>``. Command, arguments, environment (``metadata.name`` and
``metadata.namespace`` of the downward API, ConfigMap and Secret keys), user and group, ``fsGroup``, read-only
root filesystem, dropped capabilities, no privilege escalation and CPU and memory limits follow the manifests;
ConfigMaps and Secrets are mounted as folders of files, ``emptyDir`` volumes as tmpfs, and each volume claim as a
host folder owned by the pod's user. Every metrics port (a container port whose name ends in ``metrics``) is
published on 127.0.0.1, and ``--prometheus-config`` writes a Prometheus configuration that scrapes them all,
labelled by pod and container. Not mimicked: probes, restarts (a container that exits stays exited: see
``docker ps -a``), Services' virtual IPs and NetworkPolicies.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LABEL = "io.marlmesh.local-pods"
"""Label (value: the prefix) on every container and the network ``up`` creates; ``down`` removes what carries it."""
HOLDER = f"{LABEL}.holder"
"""Label of the containers that only hold a pod's network namespace (``sleep`` as PID 1 ignores SIGTERM)."""
WORKLOADS = ("Deployment", "StatefulSet")
Files = dict[str, bytes]


@dataclass
class Pod:
    """One pod of a workload as it will run: name, DNS aliases, spec and published metrics ports."""

    name: str
    aliases: list[str]
    spec: dict
    claims: list[str] = field(default_factory=list)
    metrics: list[tuple[str, int, int]] = field(default_factory=list)
    """(container, container port, host port) of every metrics port."""
    scheme: str = "http"
    """How its metrics are scraped (the template's ``prometheus.io/scheme``: ``https`` when the render secured it)."""


def load_objects(paths: list[Path]) -> list[dict]:
    """Every Kubernetes object in ``paths`` (folders file by file in name order, without ``kustomization.yaml``)."""
    files: list[Path] = []
    for path in paths:
        files += sorted(p for p in path.glob("*.yaml") if p.name != "kustomization.yaml") if path.is_dir() else [path]
    return [doc for file in files for doc in yaml.safe_load_all(file.read_text()) if doc and "kind" in doc]


def volume_sources(objects: list[dict]) -> dict[tuple[str, str], Files]:
    """The files of every ConfigMap and Secret, by ``("configMap" | "secret", name)``."""
    sources: dict[tuple[str, str], Files] = {}
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            files = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            files |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
            sources["configMap", obj["metadata"]["name"]] = files
        elif obj["kind"] == "Secret":
            files = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            files |= {k: v.encode() for k, v in (obj.get("stringData") or {}).items()}
            sources["secret", obj["metadata"]["name"]] = files
    return sources


def missing_sources(pods: list[Pod], sources: dict[tuple[str, str], Files]) -> list[str]:
    """``<pod>: <kind> <name>`` of every ConfigMap or Secret a pod mounts that no given file defines."""
    missing = []
    for pod in pods:
        for volume in pod.spec.get("volumes", []):
            for kind, key in (("configMap", "name"), ("secret", "secretName")):
                if kind in volume and (kind, volume[kind][key]) not in sources:
                    missing.append(f"{pod.name}: {kind} {volume[kind][key]}")
    return missing


def plan_pods(objects: list[dict], metrics_port_base: int) -> list[Pod]:
    """The pods of every Deployment and StatefulSet in ``objects``, with host ports from ``metrics_port_base`` on."""
    services = [o for o in objects if o["kind"] == "Service"]
    pods: list[Pod] = []
    host_port = metrics_port_base
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        name, spec = workload["metadata"]["name"], workload["spec"]
        labels = spec["template"].get("metadata", {}).get("labels", {})
        scheme = spec["template"].get("metadata", {}).get("annotations", {}).get("prometheus.io/scheme", "http")
        selected_by = [
            s["metadata"]["name"]
            for s in services
            if s["spec"].get("selector") and s["spec"]["selector"].items() <= labels.items()
        ]
        for ordinal in range(spec.get("replicas", 1)):
            pod = Pod(f"{name}-{ordinal}", list(selected_by), spec["template"]["spec"], scheme=scheme)
            if workload["kind"] == "StatefulSet":
                pod.aliases.append(f"{pod.name}.{spec['serviceName']}")
                pod.claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])]
            for container in pod.spec["containers"]:
                for port in container.get("ports", []):
                    if port.get("name", "").endswith("metrics"):
                        pod.metrics.append((container["name"], port["containerPort"], host_port))
                        host_port += 1
            pods.append(pod)
    return pods


def _quantity(value: str | int | float, *, cpu: bool) -> str:
    """A Kubernetes CPU or memory quantity as Docker's ``--cpus`` or ``--memory`` takes it."""
    text = str(value)
    if cpu:
        return str(int(text[:-1]) / 1000 if text.endswith("m") else float(text))
    return text[:-1].lower() if text.endswith("i") else text.lower()


def _env_value(var: dict, pod: Pod, namespace: str, sources: dict[tuple[str, str], Files]) -> str:
    if "value" in var:
        return str(var["value"])
    source = var.get("valueFrom", {})
    fields = {"metadata.name": pod.name, "metadata.namespace": namespace}
    if "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
        return fields[source["fieldRef"]["fieldPath"]]
    for ref, kind in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
        if ref in source:
            return sources[kind, source[ref]["name"]][source[ref]["key"]].decode()
    raise ValueError(f"pod {pod.name}: env {var['name']}: cannot mimic valueFrom {source}")


def _host_folder(mount: dict, pod: Pod, state_dir: Path) -> Path | None:
    """The host folder behind ``mount`` (a ConfigMap, Secret or claim), or None for an ``emptyDir``."""
    name = mount["name"]
    if name in pod.claims:
        return state_dir / "claims" / f"{name}-{pod.name}"
    volume = next((v for v in pod.spec.get("volumes", []) if v["name"] == name), None)
    if volume is not None and "emptyDir" in volume:
        return None
    if volume is not None and ("configMap" in volume or "secret" in volume):
        kind = "configMap" if "configMap" in volume else "secret"
        return state_dir / kind / volume[kind]["name" if kind == "configMap" else "secretName"]
    raise ValueError(f"pod {pod.name}: volume {name}: cannot mimic {volume}")


def _mount_args(mount: dict, pod: Pod, state_dir: Path) -> list[str]:
    folder, target = _host_folder(mount, pod, state_dir), mount["mountPath"]
    if folder is None:
        volume = next(v for v in pod.spec["volumes"] if v["name"] == mount["name"])
        size = _quantity(volume["emptyDir"].get("sizeLimit", "64Mi"), cpu=False)
        return ["--tmpfs", f"{target}:rw,size={size},mode=1777"]
    read_only = mount.get("readOnly") or "claims" not in folder.parts
    return ["-v", f"{folder}:{target}{':ro' if read_only else ''}"]


def _nested_mountpoints(pod: Pod, state_dir: Path) -> list[Path]:
    """Folders to make in a volume's host folder for the mounts inside it (Docker cannot in a read-only one).

    E.g. ``tls`` in the folder of the ConfigMap at ``/etc/marlmesh`` for the Secret at ``/etc/marlmesh/tls``.
    """
    points = []
    for container in pod.spec["containers"]:
        mounts = container.get("volumeMounts", [])
        for outer in mounts:
            folder = _host_folder(outer, pod, state_dir)
            for inner in mounts:
                path = Path(inner["mountPath"])
                if folder is not None and inner is not outer and path.is_relative_to(outer["mountPath"]):
                    points.append(folder / path.relative_to(outer["mountPath"]))
    return points


def _user(pod: Pod, container: dict) -> tuple[int | None, int | None]:
    pod_ctx, ctx = pod.spec.get("securityContext", {}), container.get("securityContext", {})
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    return uid, ctx.get("runAsGroup", pod_ctx.get("runAsGroup", uid))


def infra_args(pod: Pod, *, prefix: str) -> list[str]:
    """``docker run`` of the container that holds ``pod``'s network namespace, DNS names and published ports."""
    args = ["docker", "run", "-d", "--name", f"{prefix}-{pod.name}", "--label", f"{LABEL}={prefix}", "--label", HOLDER]
    args += ["--network", prefix, "--hostname", pod.name, "--read-only", "--cap-drop", "ALL", "--user", "65534:65534"]
    for alias in pod.aliases:
        args += ["--network-alias", alias]
    for _, container_port, host_port in pod.metrics:
        args += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
    return [*args, "--entrypoint", "sleep", pod.spec["containers"][0]["image"], "infinity"]


def container_args(
    pod: Pod, container: dict, *, prefix: str, namespace: str, sources: dict[tuple[str, str], Files], state_dir: Path
) -> list[str]:
    """``docker run`` of one container of ``pod``, joined to the pod's network namespace."""
    ctx = container.get("securityContext", {})
    args = ["docker", "run", "-d", "--name", f"{prefix}-{pod.name}-{container['name']}", "--label", f"{LABEL}={prefix}"]
    args += ["--network", f"container:{prefix}-{pod.name}"]
    uid, gid = _user(pod, container)
    if uid is not None:
        args += ["--user", f"{uid}:{gid}"]
    if "fsGroup" in pod.spec.get("securityContext", {}):
        args += ["--group-add", str(pod.spec["securityContext"]["fsGroup"])]
    if ctx.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if ctx.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in ctx.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        args += ["--cpus", _quantity(limits["cpu"], cpu=True)]
    if "memory" in limits:
        args += ["--memory", _quantity(limits["memory"], cpu=False)]
    for var in container.get("env", []):
        args += ["-e", f"{var['name']}={_env_value(var, pod, namespace, sources)}"]
    for mount in container.get("volumeMounts", []):
        args += _mount_args(mount, pod, state_dir)
    if "workingDir" in container:
        args += ["-w", container["workingDir"]]
    command = container.get("command", [])
    if command:
        args += ["--entrypoint", command[0]]
    return [*args, container["image"], *command[1:], *container.get("args", [])]


def prometheus_config(pods: list[Pod], interval: str, keys_dir: Path | None = None) -> str:
    """A Prometheus configuration that scrapes every published metrics port, labelled by pod and container.

    Pods whose metrics are served over HTTPS (a secured render) are scraped with the ``prometheus`` certificate
    of ``keys_dir`` (``marlmesh keys gen``), which their endpoints require.

    Raises:
        SystemExit: If a pod needs HTTPS and no ``keys_dir`` was given.
    """
    jobs = []
    for pod in pods:
        for container, _, host_port in pod.metrics:
            job: dict = {
                "job_name": f"{pod.name}-{container}",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{host_port}"], "labels": {"pod": pod.name, "container": container}}
                ],
            }
            if pod.scheme == "https":
                if keys_dir is None:
                    raise SystemExit(
                        f"pod {pod.name} serves its metrics over HTTPS with client certificates: pass --scrape-keys "
                        "DIR (the folder of 'marlmesh keys gen', which holds the prometheus certificate)"
                    )
                job["scheme"] = "https"
                job["tls_config"] = {
                    "ca_file": str((keys_dir / "ca.crt").resolve()),
                    "cert_file": str((keys_dir / "prometheus.tls.crt").resolve()),
                    "key_file": str((keys_dir / "prometheus.tls.key").resolve()),
                    "server_name": "marlmesh",
                }
            jobs.append(job)
    return yaml.safe_dump({"global": {"scrape_interval": interval}, "scrape_configs": jobs}, sort_keys=False)


def write_state(pods: list[Pod], sources: dict[tuple[str, str], Files], state_dir: Path) -> None:
    """ConfigMaps and Secrets as folders of files, and an empty folder per volume claim, owned by the pods' user."""
    uid, gid = _user(pods[0], pods[0].spec["containers"][0]) if pods else (None, None)
    folders = []
    for (kind, name), files in sources.items():
        folder = state_dir / kind / name
        folder.mkdir(parents=True, exist_ok=True)
        for key, data in files.items():
            (folder / key).write_bytes(data)
            (folder / key).chmod(0o440)
            folders.append(folder / key)
        folder.chmod(0o550)
        folders.append(folder)
    for pod in pods:
        for claim in pod.claims:
            (state_dir / "claims" / f"{claim}-{pod.name}").mkdir(parents=True, exist_ok=True)
            folders.append(state_dir / "claims" / f"{claim}-{pod.name}")
        for point in _nested_mountpoints(pod, state_dir):
            point.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        for path in folders:
            shutil.chown(path, uid, gid)


def up(ns: argparse.Namespace) -> int:
    """Start every pod of the manifests (``--dry-run``: only print the commands)."""
    objects = load_objects(ns.paths)
    pods = plan_pods(objects, ns.metrics_port_base)
    if not pods:
        raise SystemExit(f"no Deployment or StatefulSet in {', '.join(map(str, ns.paths))}")
    namespace = next((o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"), "default")
    sources = volume_sources(objects)
    missing = missing_sources(pods, sources)
    if missing:
        raise SystemExit(
            f"no manifest defines what the pods mount ({', '.join(sorted(set(missing))[:4])}): pass the folders or "
            "files that do, e.g. the secret.yaml of 'marlmesh keys gen' for a secured render"
        )
    state_dir = ns.state_dir / ns.prefix
    scrape = None if ns.prometheus_config is None else prometheus_config(pods, ns.scrape_interval, ns.scrape_keys)
    commands = [["docker", "network", "create", "--label", f"{LABEL}={ns.prefix}", ns.prefix]]
    for pod in pods:
        commands.append(infra_args(pod, prefix=ns.prefix))
        for container in pod.spec["containers"]:
            kwargs = {"prefix": ns.prefix, "namespace": namespace, "sources": sources, "state_dir": state_dir}
            commands.append(container_args(pod, container, **kwargs))
    if not ns.dry_run:
        write_state(pods, sources, state_dir)
    for command in commands:
        print("+", " ".join(command), flush=True)
        if not ns.dry_run:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if ns.prometheus_config is not None:
        ns.prometheus_config.write_text(scrape)
    for pod in pods:
        for container, port, host_port in pod.metrics:
            print(f"{pod.name}/{container} metrics :{port} -> {pod.scheme}://127.0.0.1:{host_port}/metrics")
    return 0


def _containers(prefix: str, *filters: str) -> list[str]:
    command = ["docker", "ps", "-aq", "--filter", f"label={LABEL}={prefix}"]
    for extra in filters:
        command += ["--filter", extra]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()


def down(ns: argparse.Namespace) -> int:
    """Stop and remove the containers and the network of ``--prefix``, and its state folder."""
    processes = set(_containers(ns.prefix)) - set(_containers(ns.prefix, f"label={HOLDER}"))
    if processes:  # SIGTERM first, SIGKILL after the grace period, as kubelet does
        subprocess.run(["docker", "stop", "-t", str(ns.grace_seconds), *processes], check=False, capture_output=True)
    everything = _containers(ns.prefix)
    if everything:
        subprocess.run(["docker", "rm", "-f", *everything], check=True, capture_output=True)
    subprocess.run(["docker", "network", "rm", ns.prefix], check=False, capture_output=True)
    shutil.rmtree(ns.state_dir / ns.prefix, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run ``up`` or ``down``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="marlmesh", help="name of the network, prefix of the containers")
    parser.add_argument(
        "--state-dir", type=Path, default=Path("/tmp/marlmesh-pods"), help="where ConfigMaps, Secrets and claims go"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the pods of rendered manifests")
    start.add_argument("paths", type=Path, nargs="+", help="a render output folder, or manifest files")
    start.add_argument("--metrics-port-base", type=int, default=19100, help="first host port of the metrics ports")
    start.add_argument("--prometheus-config", type=Path, default=None, help="write a Prometheus config here")
    start.add_argument("--scrape-interval", default="15s", help="its scrape interval (default 15s)")
    start.add_argument(
        "--scrape-keys", type=Path, default=None, help="'marlmesh keys gen' folder: scrape HTTPS metrics with its certs"
    )
    start.add_argument("--dry-run", action="store_true", help="print the docker commands, run nothing")
    start.set_defaults(func=up)
    stop = sub.add_parser("down", help="stop and remove the containers, the network and the state folder")
    stop.add_argument("--grace-seconds", type=int, default=30, help="SIGTERM to SIGKILL (default 30)")
    stop.set_defaults(func=down)
    ns = parser.parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())

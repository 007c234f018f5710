""" "Pods on one machine": env + 3 agents, each in its own network namespace joined by veth links to a bridge,
started with exactly the variables the (edge overlay) manifests set, complete an evaluation, secured as rendered
(mTLS on gRPC, CURVE on the bus, keys from ``marlmesh keys gen``) since every pod binds a non-loopback address.

DNS is what a cluster would give: ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over ``/etc/hosts``,
so ``env`` and ``agents-<i>.agents`` resolve inside each namespace. Only ``MARLMESH_CONFIG`` points at a
temporary copy of the ConfigMap's content (a pod mounts it at /etc/marlmesh), and the Secrets' mount paths
become the folder ``marlmesh keys gen`` wrote. Needs root and ``ip netns``;
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from marlmesh import cli, contract
from marlmesh.config import load_config
from marlmesh.deploy import k8s
from marlmesh.deploy.edge import export_initial_policies, stop_processes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.213.77"
"""Addresses live only inside the namespaces this test creates (never routed anywhere else)."""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def pod_env(container: dict, pod_name: str, mounts: dict[str, str] | None = None) -> dict[str, str]:
    """The container's variables in pod ``pod_name``; paths under a Secret mount point become local folders."""
    env = {}
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", pod_name)
    for mount, local in (mounts or {}).items():
        env = {k: v.replace(mount, local) for k, v in env.items()}
    return env


class Netns:
    """A bridge namespace plus one namespace per pod; removed on close."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.switch = f"mm{self.tag}sw"
        self.pods: dict[str, tuple[str, str]] = {}  # pod name -> (namespace, address)
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_pod(self, pod: str, host_index: int) -> str:
        ns = f"mm{self.tag}p{host_index}"
        addr = f"{SUBNET}.{host_index}"
        ip("netns", "add", ns)
        ip("link", "add", f"mm{self.tag}v{host_index}", "netns", self.switch, "type", "veth", "peer", "name", "eth0",
           "netns", ns)  # fmt: skip
        ip("-n", self.switch, "link", "set", f"mm{self.tag}v{host_index}", "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        self.pods[pod] = (ns, addr)
        return ns

    def write_hosts(self, names: dict[str, str]) -> None:
        """Cluster DNS: every namespace resolves every pod/service name (``ip netns exec`` mounts this)."""
        lines = ["127.0.0.1 localhost"] + [f"{self.pods[pod][1]} {name}" for name, pod in names.items()]
        for ns, _ in self.pods.values():
            d = Path("/etc/netns") / ns
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text("\n".join(lines) + "\n")

    def close(self) -> None:
        for ns in [*(ns for ns, _ in self.pods.values()), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 ('ip netns')")
    try:
        net = Netns()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.decode(errors='replace').strip()}")
    try:
        yield net
    finally:
        net.close()


def test_env_and_three_agent_pods_in_namespaces_complete_an_evaluation(tmp_path: Path, netns: Netns) -> None:
    agents, episodes = 3, 6
    config = load_config(None, ["channel.name=broadcast", "channel.message_dim=8", "env.num_envs=2"])
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s.render(config, agents, overlay="edge")}
    keys = tmp_path / "keys"  # what the Secrets hold
    assert cli.main(["keys", "gen", str(keys), "--agents", str(agents)]) == 0
    mounts = {k8s.TLS_MOUNT: str(keys), k8s.BUS_KEYS_MOUNT: str(keys)}
    text = docs[("ConfigMap", k8s.CONFIG_MAP)]["data"]["config.yaml"]
    for mount, local in mounts.items():
        text = text.replace(mount, local)
    (tmp_path / "config.yaml").write_text(text)
    secured = load_config(tmp_path / "config.yaml")
    assert secured.runtime.tls.enabled and secured.bus.security.curve and not secured.runtime.insecure
    export_initial_policies(load_config(tmp_path / "config.yaml"), tmp_path / "policy", seed=3)
    env_dep, sts = docs[("Deployment", "env")], docs[("StatefulSet", "agents")]
    env_svc = docs[("Service", "env")]["metadata"]["name"]
    headless = sts["spec"]["serviceName"]
    sts_name = sts["metadata"]["name"]

    netns.add_pod("env-pod", 2)
    names = {env_svc: "env-pod"}
    for i in range(agents):
        netns.add_pod(f"{sts_name}-{i}", 10 + i)
        names[f"{sts_name}-{i}.{headless}"] = f"{sts_name}-{i}"
    netns.write_hosts(names)

    def launch(pod: str, container: dict, log: Path, extra: list[str]) -> subprocess.Popen:
        ns, _ = netns.pods[pod]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **pod_env(container, pod, mounts)}
        env[contract.CONFIG.name] = str(tmp_path / "config.yaml")
        if "--policy-dir" in container.get("args", []):  # the ConfigMap volume's mount path -> our export
            args = list(container["args"])
            args[args.index("--policy-dir") + 1] = str(tmp_path / "policy")
        else:
            args = list(container.get("args", []))
        cmd = [sys.executable if c == "python" else c for c in container["command"]]
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd, *args, *extra],
            cwd=ROOT,
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    env_container = env_dep["spec"]["template"]["spec"]["containers"][0]
    procs = [launch("env-pod", env_container, tmp_path / "env.log", [])]
    agent_container = sts["spec"]["template"]["spec"]["containers"][0]
    try:
        for i in range(agents):
            pod = f"{sts_name}-{i}"
            stats = tmp_path / f"agent-{i}.json"
            procs.append(launch(pod, agent_container, tmp_path / f"agent-{i}.log", ["--stats-file", str(stats)]))
        env_ns = netns.pods["env-pod"][0]
        port = contract.ENV_PORT.integer(pod_env(env_container, "env-pod"))
        probe = (  # over mTLS as the launcher identity
            "from marlmesh import tls; from marlmesh.config import load_config; "
            "from marlmesh.env_client import EnvClient; "
            f"i = tls.load_identity(load_config({str(tmp_path / 'config.yaml')!r}).runtime.tls, 'launcher'); "
            f"c = EnvClient('127.0.0.1:{port}', timeout_s=5, tls_identity=i); print(c.stats(max_episodes=1).episodes)"
        )
        deadline = time.monotonic() + 240
        done = 0
        while done < episodes:
            for p, name in zip(procs, ["env", *(f"agent-{i}" for i in range(agents))], strict=True):
                if p.poll() is not None:
                    pytest.fail(f"{name} exited with {p.returncode}:\n{(tmp_path / f'{name}.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, (
                f"only {done} episodes:\n{(tmp_path / 'agent-0.log').read_text()[-2000:]}"
            )
            out = subprocess.run(
                ["ip", "netns", "exec", env_ns, sys.executable, "-c", probe],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
            )
            done = int(out.stdout.strip() or 0)
            time.sleep(0.5)
    finally:
        codes = stop_processes(procs[1:]) + stop_processes(procs[:1])
    assert codes == [0] * (agents + 1)
    for i in range(agents):
        stats = json.loads((tmp_path / f"agent-{i}.json").read_text())
        assert stats["agent_id"] == i and stats["runtime"] == "onnx" and stats["torch_imported"] is False
        # every agent heard both peers over the veth links, through the DNS names of the manifests
        assert set(stats["bus"]["received_from"]) == {str(j) for j in range(agents) if j != i}
        assert stats["late_actions"] == 0

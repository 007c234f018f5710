"""k8s/local/run_pods.py turns rendered manifests into ``docker run`` commands that keep what the pods say."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from marlmesh import contract
from marlmesh.deploy import k8s

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("run_pods", ROOT / "k8s" / "local" / "run_pods.py")
run_pods = sys.modules["run_pods"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_pods)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render")
    k8s.write_manifests(k8s.render_file(ROOT / "configs" / "dgmappo.yaml", 3), out)
    return out


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-ins for the Secrets a secured render mounts (``marlmesh keys gen`` writes the real ones)."""
    path = tmp_path_factory.mktemp("keys") / "secret.yaml"
    names = ("marlmesh-tls", "marlmesh-bus-keys")
    path.write_text(yaml.safe_dump_all([{"kind": "Secret", "metadata": {"name": n}, "data": {}} for n in names]))
    return path


def _flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def test_every_pod_answers_to_the_dns_names_of_the_manifests(rendered: Path) -> None:
    pods = {p.name: p for p in run_pods.plan_pods(run_pods.load_objects([rendered]), 19100)}
    assert set(pods) == {"env-0", "agents-0", "agents-1", "agents-2"}
    assert pods["env-0"].aliases == ["env"]  # MARLMESH_ENV_ADDR=env:50051
    assert pods["agents-2"].aliases == ["agents", "agents-2.agents"]  # MARLMESH_PEER_PATTERN's host
    assert pods["agents-2"].claims == ["checkpoints"]
    ports = [host for p in pods.values() for _, _, host in p.metrics]
    assert sorted(ports) == list(range(19100, 19107))  # env, 3 agents, 3 learners
    assert [(c, port) for c, port, _ in pods["agents-0"].metrics] == [("agent", 9100), ("learner", 9101)]
    infra = run_pods.infra_args(pods["agents-2"], prefix="t")
    assert _flag_values(infra, "--network-alias") == ["agents", "agents-2.agents"]
    assert _flag_values(infra, "-p") == [f"127.0.0.1:{h}:{c}" for _, c, h in pods["agents-2"].metrics]


def test_a_container_keeps_command_env_user_mounts_and_read_only_root(rendered: Path) -> None:
    objects = run_pods.load_objects([rendered])
    pod = next(p for p in run_pods.plan_pods(objects, 19100) if p.name == "agents-1")
    learner = next(c for c in pod.spec["containers"] if c["name"] == "learner")
    args = run_pods.container_args(
        pod, learner, prefix="t", namespace="marlmesh", sources=run_pods.volume_sources(objects), state_dir=Path("/s")
    )
    assert _flag_values(args, "--network") == ["container:t-agents-1"]  # the agent reaches it on 127.0.0.1
    assert _flag_values(args, "--user") == ["10001:10001"]
    assert "--read-only" in args and _flag_values(args, "--cap-drop") == ["ALL"]
    assert _flag_values(args, "--cpus") == ["2.0"] and _flag_values(args, "--memory") == ["2g"]
    env = dict(e.split("=", 1) for e in _flag_values(args, "-e"))
    assert env[contract.AGENT_ID.name] == "agents-1"  # the downward API's metadata.name
    assert set(env) == {v["name"] for v in learner["env"]}
    assert _flag_values(args, "-v") == [
        "/s/configMap/marlmesh-config:/etc/marlmesh:ro",
        "/s/claims/checkpoints-agents-1:/var/lib/marlmesh/checkpoints",
        "/s/secret/marlmesh-tls:/etc/marlmesh/tls:ro",  # the render secures every pod by default
        "/s/secret/marlmesh-bus-keys:/etc/marlmesh/bus-keys:ro",
    ]
    assert _flag_values(args, "--tmpfs") == ["/tmp:rw,size=64m,mode=1777"]
    assert args[args.index("--entrypoint") + 1 :] == ["python", "marlmesh:train", "-m", "learner_service"]


def test_configmaps_and_secrets_become_files(tmp_path: Path) -> None:
    key = b"\x00\x01 not text"
    objects = [
        {"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a.yaml": "x: 1\n"}},
        {"kind": "ConfigMap", "metadata": {"name": "bin"}, "binaryData": {"g.onnx": base64.b64encode(key).decode()}},
        {"kind": "Secret", "metadata": {"name": "tls"}, "data": {"ca.crt": base64.b64encode(b"CA").decode()}},
    ]
    run_pods.write_state([], run_pods.volume_sources(objects), tmp_path)
    assert (tmp_path / "configMap" / "cfg" / "a.yaml").read_text() == "x: 1\n"
    assert (tmp_path / "configMap" / "bin" / "g.onnx").read_bytes() == key
    assert (tmp_path / "secret" / "tls" / "ca.crt").read_bytes() == b"CA"
    assert (tmp_path / "secret" / "tls" / "ca.crt").stat().st_mode & 0o777 == 0o440


def test_dry_run_prints_commands_and_writes_a_prometheus_config(
    rendered: Path, secrets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prom = tmp_path / "prometheus.yml"
    argv = ["--state-dir", str(tmp_path / "state"), "up", str(rendered), str(secrets), "--dry-run"]
    argv += ["--prometheus-config", str(prom)]
    with pytest.raises(SystemExit, match="--scrape-keys"):  # the secured render's metrics need a client cert
        run_pods.main(argv)
    assert run_pods.main([*argv, "--scrape-keys", "/keys"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ docker")]
    assert len(commands) == 1 + 4 + 7  # the network, one holder per pod, env + 3 x (agent, learner)
    assert not (tmp_path / "state").exists()
    jobs = yaml.safe_load(prom.read_text())["scrape_configs"]
    targets = {
        j["static_configs"][0]["labels"]["container"] + "@" + j["static_configs"][0]["labels"]["pod"] for j in jobs
    }
    assert targets == {"env@env-0", *(f"{c}@agents-{i}" for c in ("agent", "learner") for i in range(3))}
    assert {j["scheme"] for j in jobs} == {"https"}
    assert {j["tls_config"]["cert_file"] for j in jobs} == {"/keys/prometheus.tls.crt"}


def test_a_mount_inside_a_read_only_volume_gets_its_mountpoint_made(tmp_path: Path) -> None:
    # the Secrets at /etc/marlmesh/tls and /etc/marlmesh/bus-keys, inside the ConfigMap at /etc/marlmesh
    docs = k8s.render_file(ROOT / "configs" / "dgmappo.yaml", 3)
    pod = next(p for p in run_pods.plan_pods(docs, 19100) if p.name == "agents-0")
    config_dir = tmp_path / "configMap" / "marlmesh-config"
    assert set(run_pods._nested_mountpoints(pod, tmp_path)) == {config_dir / "tls", config_dir / "bus-keys"}
    learner = next(c for c in pod.spec["containers"] if c["name"] == "learner")
    mounts = _flag_values(
        run_pods.container_args(pod, learner, prefix="t", namespace="m", sources={}, state_dir=tmp_path), "-v"
    )
    assert f"{tmp_path}/secret/marlmesh-tls:/etc/marlmesh/tls:ro" in mounts


def test_up_refuses_a_secured_render_without_the_secrets_it_mounts(
    rendered: Path, secrets: Path, tmp_path: Path
) -> None:
    argv = ["--state-dir", str(tmp_path / "state"), "up", str(rendered), "--dry-run"]
    with pytest.raises(SystemExit, match=r"secret marlmesh-tls.*secret\.yaml"):
        run_pods.main(argv)
    assert run_pods.main([*argv[:-1], str(secrets), "--dry-run"]) == 0

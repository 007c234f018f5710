"""runtime.tls file resolution and checks, keys gen (CA, certificates, token, Secrets), k8s mounts."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from comm_bus.security import CurveKeys
from marlmesh import cli, contract, control_token, tls
from marlmesh.config import ConfigError, load_config
from marlmesh.deploy import k8s
from marlmesh.deploy.certs import generate_tls

ROOT = Path(__file__).resolve().parents[1].parent


def _tls_config(*sets: str):  # noqa: ANN202
    return load_config(None, ["runtime.tls.enabled=true", *sets]).runtime.tls


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    generate_tls(d, 2)
    return d


def test_tls_is_off_by_default_and_needs_files_when_on() -> None:
    assert tls.resolve_files(load_config(None).runtime.tls, "env") is None
    with pytest.raises(ConfigError, match=r"runtime\.tls.*keys_dir"):
        load_config(None, ["runtime.tls.enabled=true"])


def test_file_precedence_flags_then_config_files_then_keys_dir() -> None:
    config = _tls_config("runtime.tls.keys_dir=/k", "runtime.tls.cert_file=/c/{name}.pem")
    files = tls.resolve_files(config, "agent-2", {"key": "/flag/agent-{id}.key"}, agent=2)
    assert (files.ca, files.cert, files.key) == (Path("/k/ca.crt"), Path("/c/agent-2.pem"), Path("/flag/agent-2.key"))
    assert files.sources == {
        "ca": "runtime.tls.keys_dir",
        "cert": "runtime.tls.cert_file",
        "key": contract.TLS_KEY.name,
    }
    assert files.env() == {
        contract.TLS_CA.name: "/k/ca.crt",
        contract.TLS_CERT.name: "/c/agent-2.pem",
        contract.TLS_KEY.name: "/flag/agent-2.key",
    }
    with pytest.raises(ConfigError, match=rf"{contract.TLS_CERT.name}.*\{{id\}}.*env is not an agent"):
        tls.resolve_files(config, "env", {"cert": "/x/agent-{id}.crt"})


def test_bad_files_fail_naming_the_setting(keys: Path, tmp_path: Path) -> None:
    config = _tls_config(f"runtime.tls.keys_dir={keys}")
    assert tls.load_identity(config, "learner-1").name == "learner-1"
    with pytest.raises(
        ConfigError, match=r"runtime\.tls\.keys_dir: the certificate of agent-7 .*agent-7\.tls\.crt does"
    ):
        tls.load_identity(config, "agent-7")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match=rf"{contract.TLS_CA.name}: .*garbage\.pem is not a PEM CA certificate"):
        tls.load_identity(config, "env", {"ca": str(garbage)})
    with pytest.raises(ConfigError, match=rf"{contract.TLS_KEY.name}: .*env\.tls\.key is not the private key of"):
        tls.load_identity(config, "agent-0", {"key": str(keys / "env.tls.key")})
    other = tmp_path / "other"
    generate_tls(other, 1)
    with pytest.raises(ConfigError, match=r"runtime\.tls\.cert_file: .*was not issued by the CA"):
        tls.load_identity(
            _tls_config(f"runtime.tls.keys_dir={keys}", f"runtime.tls.cert_file={other}/{{name}}.tls.crt"), "env"
        )


def test_keys_gen_writes_curve_keys_certificates_token_and_three_secrets(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    d = tmp_path / "keys"
    assert cli.main(["keys", "gen", str(d), "--agents", "2", "--namespace", "ns1"]) == 0
    assert "runtime.tls.keys_dir" in capsys.readouterr().out
    CurveKeys.load(d, 1, 2)  # the bus keys are intact next to the TLS files
    for name in ("env", "launcher", "agent-0", "agent-1", "learner-0", "learner-1", "prometheus"):
        assert (d / f"{name}.tls.key").stat().st_mode & 0o777 == 0o600
        assert tls.load_identity(_tls_config(f"runtime.tls.keys_dir={d}"), name) is not None
    assert (d / "ca.key").stat().st_mode & 0o777 == 0o600
    token = control_token.load_token(str(d / "control.token"))
    docs = list(yaml.safe_load_all((d / "secret.yaml").read_text()))
    assert [doc["metadata"]["name"] for doc in docs] == ["marlmesh-bus-keys", "marlmesh-tls", "marlmesh-prometheus-tls"]
    secret = docs[1]
    assert secret["metadata"]["namespace"] == "ns1"
    assert set(secret["data"]) == {
        "ca.crt",
        "control.token",
        *(f"{n}.tls.{ext}" for n in ("env", "agent-0", "agent-1", "learner-0", "learner-1") for ext in ("crt", "key")),
    }, "no CA key, no launcher key and no scraper key in the pods' Secret"
    scraper = docs[2]["data"]
    assert set(scraper) == {"ca.crt", "tls.crt", "tls.key"} and scraper["ca.crt"] == secret["data"]["ca.crt"]
    assert base64.b64decode(scraper["tls.crt"]) == (d / "prometheus.tls.crt").read_bytes()
    assert base64.b64decode(secret["data"]["control.token"]).decode().strip() == token
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.name != "secret.yaml"}
    assert cli.main(["keys", "gen", str(d), "--agents", "2"]) == 0
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name != "secret.yaml"} == before, "existing files kept"


def test_control_token_sources(tmp_path: Path) -> None:
    path = tmp_path / "t"
    token = control_token.write_new_token(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(token) >= control_token.MIN_TOKEN_CHARS
    assert control_token.load_token(None, {}) is None
    assert control_token.load_token(None, {contract.CONTROL_TOKEN_FILE.name: str(path)}) == token
    assert control_token.load_token(str(path), {contract.CONTROL_TOKEN.name: "e" * 20}) == "e" * 20
    with pytest.raises(ValueError, match=f"{contract.CONTROL_TOKEN.name}: .*at least 16"):
        control_token.load_token(None, {contract.CONTROL_TOKEN.name: "short"})
    with pytest.raises(ValueError, match=f"{contract.CONTROL_TOKEN_FILE.name}: cannot read"):
        control_token.load_token(str(tmp_path / "missing"), {})


@pytest.mark.parametrize("overlay", [None, "edge"])
def test_k8s_render_mounts_the_tls_secret_and_points_each_container_at_its_identity(overlay: str | None) -> None:
    config = load_config(None, ["runtime.tls.enabled=true", "runtime.tls.keys_dir=/local/keys"])
    docs = k8s.render(config, 3, overlay=overlay)
    reference = (ROOT / "docs" / "services.md").read_text()
    seen = set()
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert {"name": "tls", "secret": {"secretName": "marlmesh-tls", "defaultMode": 0o440}} in pod["volumes"]
        for c in pod["containers"]:
            env = {v["name"]: v.get("value") for v in c["env"]}
            agent = 2 if c["name"] != "env" else -1  # pod agents-2
            files = tls.resolve_files(
                config.runtime.tls, tls.identity_name(c["name"], agent), tls.overrides_from_env(env), agent
            )
            expected = "/etc/marlmesh/tls/" + ("env" if agent < 0 else f"{c['name']}-2")
            assert (str(files.ca), str(files.cert), str(files.key)) == (
                "/etc/marlmesh/tls/ca.crt", f"{expected}.tls.crt", f"{expected}.tls.key"
            )  # fmt: skip
            assert env[contract.CONTROL_TOKEN_FILE.name] == "/etc/marlmesh/tls/control.token"
            assert {"name": "tls", "mountPath": "/etc/marlmesh/tls", "readOnly": True} in c["volumeMounts"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert "grpc" not in c[probe] and c[probe]["tcpSocket"]["port"] > 0, "kubelet gRPC probes cannot do TLS"
            for var in (*tls.ENV_VARS.values(), control_token.TOKEN_FILE_ENV):
                assert f"| `{var}` |" in reference, f"{var} is not in the table of docs/services.md"
            seen.add(c["name"])
    assert seen == ({"env", "agent"} if overlay else {"env", "agent", "learner"})
    for doc in k8s.render(load_config(None), 3, overlay=overlay, insecure=True):  # nothing mounted or set
        if doc["kind"] in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            assert all(v["name"] != "tls" for v in pod["volumes"])
            assert all("grpc" in c["livenessProbe"] for c in pod["containers"])
            assert not [v for c in pod["containers"] for v in c["env"] if v["name"] in tls.ENV_VARS.values()]


@pytest.mark.parametrize("token", [None, "a-control-token-of-some-length"])
def test_shutdown_is_refused_and_counted_without_credentials(token: str | None) -> None:
    import threading

    import grpc

    from marlmesh.serving import Identity, start_server
    from marlmesh.v1 import control_pb2, control_pb2_grpc

    stop = threading.Event()
    server = start_server(
        host="127.0.0.1", port=0, identity=Identity("env"), stop=stop, max_message_bytes=1 << 20,
        register=lambda s: None, token=token,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            for sent, code in ((None, "UNAUTHENTICATED"), ("x" * 30, "PERMISSION_DENIED")):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Shutdown(
                        control_pb2.ShutdownRequest(),
                        timeout=5,
                        metadata=control_token.metadata(sent) if sent else None,
                    )
                assert info.value.code().name == code and info.value.details()
            assert not stop.is_set()
            assert dict(server.control.shutdown_refused) == {"no_credentials": 1, "bad_token": 1}
            assert stub.GetInfo(control_pb2.InfoRequest(), timeout=5).counters["shutdown_refused"] == 2
            if token is not None:
                stub.Shutdown(
                    control_pb2.ShutdownRequest(reason="test"), timeout=5, metadata=control_token.metadata(token)
                )
                assert stop.is_set()
    finally:
        server.stop(0.1)

"""Secure by default off loopback (marlmesh/exposure.py): the policy, its choke points, a real refusing process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comm_bus.addressing import PeerAddressing
from comm_bus.transport import ZmqTransport
from marlmesh import cli, contract, exposure, tls
from marlmesh.config import load_config
from marlmesh.launch.summary import config_summary

ROOT = Path(__file__).resolve().parents[2]
GRPC, BUS = exposure.Surface.GRPC, exposure.Surface.BUS


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.1:50051",
        "127.8.9.10:1",
        "localhost:50051",
        "LOCALHOST",
        "agents.localhost:1",
        "[::1]:50051",
        "::1",
        "tcp://127.0.0.1:47000",
        "tcp://localhost:47000",
        "tcp://[::1]:47000",
        "ipc:///tmp/bus-0",
        "inproc://bus-0",
        "unix:/tmp/grpc.sock",
        "dns:///localhost:50051",
    ],
)
def test_loopback_and_local_endpoints_need_nothing(address: str) -> None:
    assert exposure.is_loopback(address)
    for surface in exposure.Surface:
        assert exposure.refusal(surface, address, secured=False, insecure=False) is None


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "0.0.0.0:50051",
        "[::]:50051",
        "::",
        "tcp://*:47000",
        "tcp://0.0.0.0:47000",
        "10.1.2.3:50051",
        "192.168.0.7",
        "[2001:db8::1]:50051",
        "env:50051",
        "tcp://agents-2.agents:47002",
        "dns:///env.marlmesh.svc:50051",
        "localhost.example.com:1",
        "128.0.0.1:1",
    ],
)
def test_non_loopback_addresses_need_the_surface_secured_or_insecure(address: str) -> None:
    assert not exposure.is_loopback(address)
    reason = exposure.refusal(GRPC, address, secured=False, insecure=False, verb="dial")
    assert reason is not None and "\n" not in reason
    assert "runtime.tls.enabled" in reason and "runtime.insecure" in reason and address in reason
    assert "would dial" in reason
    bus = exposure.refusal(BUS, address, secured=False, insecure=False)
    assert bus is not None and "bus.security.curve" in bus and "runtime.tls" not in bus
    assert exposure.refusal(GRPC, address, secured=True, insecure=False) is None
    assert exposure.refusal(BUS, address, secured=False, insecure=True) is None


@pytest.fixture
def policy():
    """Restore the process's policy after a test that changes it."""
    before = exposure.insecure()
    yield
    exposure.set_insecure(before, "test")


def test_channels_and_servers_refuse_plaintext_off_loopback(policy: None) -> None:
    import grpc

    with pytest.raises(exposure.ExposureError, match=r"dial env:50051.*runtime\.tls\.enabled"):
        tls.open_channel("env:50051", [])
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(1))
    with pytest.raises(exposure.ExposureError, match=r"bind 0\.0\.0\.0:0"):
        tls.add_port(server, "0.0.0.0:0")
    tls.open_channel("127.0.0.1:1", []).close()  # loopback: plaintext is fine
    exposure.set_insecure(True, "test")
    tls.open_channel("env:50051", []).close()


def test_bus_sockets_refuse_to_bind_or_dial_off_loopback_without_curve(policy: None) -> None:
    config = load_config(None).bus
    wildcard = PeerAddressing(bind_pattern="tcp://0.0.0.0:{port}", base_port=47900)
    with pytest.raises(exposure.ExposureError, match=r"bus socket would bind tcp://0\.0\.0\.0:47900.*bus\.security"):
        ZmqTransport(0, 2, wildcard, config, 1 << 20)
    remote = PeerAddressing(pattern="tcp://agents-{id}.agents:{port}", base_port=47900)
    with pytest.raises(exposure.ExposureError, match=r"dial tcp://agents-1\.agents:47901"):
        ZmqTransport(0, 2, remote, config, 1 << 20)


def test_launcher_refuses_a_plaintext_mesh_on_a_public_host(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--set", "runtime.host=0.0.0.0", "--run-dir", "/nonexistent/never-created"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("marlmesh: error: ") and "0.0.0.0" in err
    assert "runtime.tls.enabled" in err and "runtime.insecure" in err


def test_summary_records_runtime_insecure() -> None:
    assert config_summary(load_config(None))["insecure"] is False
    assert config_summary(load_config(None, ["runtime.insecure=true"]))["insecure"] is True


def _env_service(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, contract.HOST.name: "0.0.0.0", contract.PARENT_PID.name: ""}
    for var in (*tls.ENV_VARS.values(), contract.CONFIG.name, contract.METRICS_PORT.name):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "env_service", "--port", "0", "--port-file", str(tmp_path / "port"), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_env_service_on_all_interfaces_without_tls_refuses_to_start(tmp_path: Path) -> None:
    proc = _env_service(tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("env_service: error: "), err
    assert "0.0.0.0" in lines[0] and "runtime.tls.enabled" in lines[0] and "runtime.insecure" in lines[0]
    assert not (tmp_path / "port").exists()


def _started_and_stopped(tmp_path: Path, proc: subprocess.Popen) -> str:
    """Wait for the port file, stop the process, return its stderr (it must have exited 0)."""
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "port").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "env_service did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_env_service_with_runtime_insecure_starts_and_warns(tmp_path: Path) -> None:
    proc = _env_service(tmp_path, "--set", "runtime.insecure=true", "--set", "env.num_envs=1")
    err = _started_and_stopped(tmp_path, proc)
    warning = [line for line in err.splitlines() if "WARNING" in line and "runtime.insecure=true" in line]
    assert warning and "PLAINTEXT" in warning[0], err


def test_metrics_endpoint_serves_https_with_the_process_certificate_and_requires_a_client_cert(
    tmp_path: Path, policy: None
) -> None:
    import ssl
    import urllib.request

    from marlmesh import contract
    from marlmesh.deploy.certs import generate_tls
    from marlmesh.serving import start_metrics

    with pytest.raises(exposure.ExposureError, match=r"Prometheus endpoint would bind 0\.0\.0\.0:9.*runtime\.tls"):
        start_metrics(9, "0.0.0.0")
    keys = tmp_path / "keys"
    generate_tls(keys, 1)
    config = load_config(None, ["runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}"]).runtime.tls
    identity = tls.load_identity(config, "env")
    port = start_metrics(contract.AUTO_PORT, "127.0.0.1", identity)
    url = f"https://localhost:{port}/metrics"
    scraper = ssl.create_default_context(cafile=str(keys / "ca.crt"))
    scraper.load_cert_chain(str(keys / "prometheus.tls.crt"), str(keys / "prometheus.tls.key"))
    body = urllib.request.urlopen(url, context=scraper, timeout=10).read().decode()
    assert "python_info" in body or "process_" in body
    anonymous = ssl.create_default_context(cafile=str(keys / "ca.crt"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        urllib.request.urlopen(url, context=anonymous, timeout=10).read()


def test_env_service_on_all_interfaces_with_mtls_starts_without_curve(tmp_path: Path) -> None:
    """The env has no bus socket: mTLS alone is what it needs off loopback."""
    from marlmesh.deploy.certs import generate_tls

    generate_tls(tmp_path / "keys", 1)
    tls_on = ["--set", "runtime.tls.enabled=true", "--set", f"runtime.tls.keys_dir={tmp_path / 'keys'}"]
    err = _started_and_stopped(tmp_path, _env_service(tmp_path, *tls_on, "--set", "env.num_envs=1"))
    assert "error" not in err and "runtime.insecure=true" not in err, err

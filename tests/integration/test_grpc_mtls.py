"""gRPC mTLS and authenticated shutdown on real processes (127.0.0.1), and loopback-only binding of a mesh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import service_procs

from marlmesh import contract, control_token, tls
from marlmesh.config import load_config
from marlmesh.deploy.certs import generate_tls
from marlmesh.serving import grpc_options
from marlmesh.v1 import control_pb2, control_pb2_grpc, env_pb2, env_pb2_grpc

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keys dir (CA, certificates for 1 agent, control token)."""
    d = tmp_path_factory.mktemp("keys")
    generate_tls(d, 1)
    control_token.write_new_token(d / "control.token")
    return d


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates from another CA."""
    d = tmp_path_factory.mktemp("other-keys")
    generate_tls(d, 1)
    return d


def _identity(keys: Path, name: str) -> tls.TlsIdentity:
    config = load_config(None, ["runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}"]).runtime.tls
    identity = tls.load_identity(config, name)
    assert identity is not None
    return identity


def _start_env(tmp_path: Path, *overrides: str, token_file: Path | None) -> tuple[subprocess.Popen, str, Path]:
    port_file, log = tmp_path / "env.port", tmp_path / "env.log"
    sets = [a for o in overrides for a in ("--set", o)]
    env = {control_token.TOKEN_FILE_ENV: str(token_file)} if token_file else {}
    proc = service_procs.start(
        "env_service", ["--config", str(SMOKE), "--port", "0", "--port-file", str(port_file), *sets], log, env=env
    )
    return proc, f"127.0.0.1:{service_procs.wait_port(proc, port_file, log)}", log


def _code(call) -> grpc.StatusCode | None:  # noqa: ANN001
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return None


def _get_spec(channel: grpc.Channel) -> env_pb2.EnvSpec:
    return env_pb2_grpc.EnvServiceStub(channel).GetSpec(env_pb2.GetSpecRequest(), timeout=5)


def _shutdown(channel: grpc.Channel, token: str | None = None) -> control_pb2.ShutdownResponse:
    stub = control_pb2_grpc.ControlStub(channel)
    return stub.Shutdown(
        control_pb2.ShutdownRequest(reason="test"), timeout=5, metadata=control_token.metadata(token) if token else None
    )


def _refused(channel: grpc.Channel) -> float:
    info = control_pb2_grpc.ControlStub(channel).GetInfo(control_pb2.InfoRequest(), timeout=5)
    return info.counters["shutdown_refused"]


def test_mtls_refuses_peers_without_a_cert_of_the_ca_and_only_the_launcher_may_shut_down(
    tmp_path: Path, keys: Path, other_keys: Path
) -> None:
    proc, address, log = _start_env(
        tmp_path, "runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}", token_file=keys / "control.token"
    )
    opts = grpc_options(1 << 22)
    launcher = tls.open_channel(address, opts, _identity(keys, tls.LAUNCHER))
    agent = tls.open_channel(address, opts, _identity(keys, "agent-0"))
    try:
        assert len(_get_spec(launcher).agents) == 3
        ca = (keys / "ca.crt").read_bytes()
        outsider = _identity(other_keys, tls.LAUNCHER)
        strangers = {
            "plaintext": grpc.insecure_channel(address, opts),
            "no client cert": grpc.secure_channel(
                address,
                grpc.ssl_channel_credentials(root_certificates=ca),
                [*opts, ("grpc.ssl_target_name_override", "marlmesh")],
            ),
            "cert of another CA": grpc.secure_channel(
                address,
                grpc.ssl_channel_credentials(
                    root_certificates=ca, private_key=outsider.key, certificate_chain=outsider.cert
                ),
                [*opts, ("grpc.ssl_target_name_override", "marlmesh")],
            ),
        }
        for what, channel in strangers.items():
            with channel:
                assert _code(lambda ch=channel: _get_spec(ch)) == grpc.StatusCode.UNAVAILABLE, what
                assert _code(lambda ch=channel: _shutdown(ch)) == grpc.StatusCode.UNAVAILABLE, what
        assert proc.poll() is None and len(_get_spec(launcher).agents) == 3, "the server must stay up"

        # an authenticated agent may talk to the env but not stop it, with no token or a wrong one
        assert _code(lambda: _shutdown(agent)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: _shutdown(agent, "x" * 43)) == grpc.StatusCode.PERMISSION_DENIED
        assert _refused(agent) == 2
        assert proc.poll() is None

        _shutdown(launcher)
        assert proc.wait(20) == 0
    finally:
        launcher.close()
        agent.close()
        service_procs.stop([proc])
    assert "refused a shutdown request" in log.read_text()


def test_plaintext_shutdown_needs_the_control_token(tmp_path: Path, keys: Path) -> None:
    token_file = keys / "control.token"
    proc, address, _ = _start_env(tmp_path, token_file=token_file)
    try:
        with grpc.insecure_channel(address) as ch:
            assert _code(lambda: _shutdown(ch)) == grpc.StatusCode.UNAUTHENTICATED
            assert _code(lambda: _shutdown(ch, "not-the-token-but-long-enough")) == grpc.StatusCode.PERMISSION_DENIED
            assert _refused(ch) == 2 and proc.poll() is None
            _shutdown(ch, control_token.load_token(str(token_file)))
        assert proc.wait(20) == 0
    finally:
        service_procs.stop([proc])


def test_a_missing_or_foreign_tls_file_fails_at_start_naming_the_setting(
    tmp_path: Path, keys: Path, other_keys: Path
) -> None:
    tls_on = ["--set", "runtime.tls.enabled=true", "--set", f"runtime.tls.keys_dir={keys}"]
    env = {**os.environ, tls.ENV_VARS["cert"]: str(other_keys / "env.tls.crt")}
    res = subprocess.run(
        [sys.executable, "-m", "env_service", "--config", str(SMOKE), "--port", "0", *tls_on],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert res.returncode == 2
    assert contract.TLS_CERT.name in res.stderr and "was not issued by the CA" in res.stderr, res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "marlmesh.cli", "train", "-c", str(SMOKE), "--run-dir", str(tmp_path / "run"),
         "--set", "runtime.tls.enabled=true", "--set", f"runtime.tls.keys_dir={tmp_path / 'nowhere'}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2
    assert "runtime.tls.keys_dir" in res.stderr and "nowhere/ca.crt does not exist" in res.stderr, res.stderr
    assert not (tmp_path / "run").exists(), "nothing may start"


def listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every TCP socket in LISTEN state owned by ``pids`` (from /proc)."""
    import ipaddress

    by_inode: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc stores the address as host-order 32-bit words
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(words)
            if address.version == 6 and address.ipv4_mapped is not None:  # dual-stack socket: ::ffff:a.b.c.d
                address = address.ipv4_mapped
            by_inode[fields[9]] = (str(address), int(hex_port, 16))
    found = []
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in by_inode:
                found.append((pid, *by_inode[target[8:-1]]))
    return found


def test_smoke_training_with_mtls_completes_and_every_process_listens_on_loopback_only(tmp_path: Path) -> None:
    from marlmesh.launch.train import train

    keys2 = tmp_path / "keys2"
    generate_tls(keys2, 2)
    config = load_config(
        SMOKE,
        ["runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys2}", "env.kwargs.N=2", "train.total_env_steps=400"],
    )
    seen: dict[str, object] = {}

    def inspect(mesh, progress) -> bool:  # noqa: ANN001
        if "sockets" not in seen and progress.env_steps > 0:
            pids = [p["pid"] for p in mesh.processes()]
            seen["pids"] = pids
            seen["sockets"] = listening_sockets(pids)
            seen["expected_ports"] = set(mesh.bound_ports())
        return False

    summary = train(config, tmp_path / "run", out=open(os.devnull, "w"), evaluate=False, on_tick=inspect)  # noqa: SIM115
    assert summary["status"] == "trained" and summary["env_steps"] >= 400
    assert all(learner["version"] > 0 for learner in summary["learners"]), "fragments reach learners over mTLS"
    sockets = seen["sockets"]
    assert {port for _, _, port in sockets} >= seen["expected_ports"], "every gRPC and bus port is listening"
    assert {pid for pid, _, _ in sockets} == set(seen["pids"]), "every process listens on something"
    assert all(address in LOOPBACK for _, address, _ in sockets), sockets
    logs = tmp_path / "run" / "logs"
    for name in ("env", "agent-0", "learner-0"):  # every start line says what secures the process
        assert "(mTLS)" in (logs / f"train-{name}.log").read_text(), name

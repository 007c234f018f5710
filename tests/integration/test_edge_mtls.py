"""`marlmesh bench edge` / run_edge_mesh over gRPC mTLS: onnx agents and the bench itself dial with certificates."""

from __future__ import annotations

from pathlib import Path

import pytest

from marlmesh import cli
from marlmesh.config import ConfigError, dump_config, load_config
from marlmesh.deploy.certs import generate_tls
from marlmesh.deploy.edge import export_initial_policies, run_edge_mesh

pytestmark = pytest.mark.integration


def _exported(tmp: Path, *overrides: str) -> tuple[Path, Path]:
    config = load_config(None, ["channel.name=broadcast", "channel.message_dim=8", "env.num_envs=2", *overrides])
    cfg = tmp / "config.yaml"
    cfg.write_text(dump_config(config))
    export_initial_policies(config, tmp / "policy", seed=5)
    return cfg, tmp / "policy"


def test_edge_mesh_runs_over_mtls(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_tls(keys, 3)
    cfg, policy = _exported(tmp_path, "runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}")
    result = run_edge_mesh(cfg, policy, tmp_path / "mesh", episodes=2)
    assert result.episodes >= 2 and result.agent_exit_codes == [0, 0, 0], result.agent_logs
    for stats in result.agent_stats:  # messages flowed and every agent stepped through the TLS env
        assert stats["steps"] >= 20 and stats["bus"]["messages_sent"] > 0
    assert "(mTLS)" in (tmp_path / "mesh" / "env.log").read_text()


def test_edge_mesh_refuses_missing_agent_certificates_before_any_agent_starts(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_tls(keys, 1)  # agent-1 and agent-2 have no certificate
    cfg, policy = _exported(tmp_path, "runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}")
    with pytest.raises(ConfigError, match=r"runtime.tls.keys_dir: the certificate of agent-1 .*agent-1.tls.crt"):
        run_edge_mesh(cfg, policy, tmp_path / "mesh", episodes=1)
    assert not list((tmp_path / "mesh").glob("agent-*.log"))


def test_bench_edge_names_the_missing_tls_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.main(["bench", "edge", "--tls-keys-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "runtime.tls.keys_dir: the CA certificate" in err and f"{tmp_path / 'empty' / 'ca.crt'}" in err

"""The torch-free edge runtime: agents act from exported ONNX graphs as real processes, and never import torch."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marlmesh import contract
from marlmesh.config import dump_config, load_config
from marlmesh.deploy.edge import export_initial_policies, run_edge_mesh

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TORCH_IMPORT = re.compile(r"^import time:.*\|\s*torch(\.\w+)*\s*$", re.MULTILINE)


def exported(tmp: Path, channel: str) -> tuple[Path, Path]:
    config = load_config(None, [f"channel.name={channel}", "channel.message_dim=8", "env.num_envs=2"])
    cfg = tmp / "config.yaml"
    cfg.write_text(dump_config(config))
    export_initial_policies(config, tmp / "policy", seed=5)
    return cfg, tmp / "policy"


def check_ran_without_torch(result, episodes: int) -> None:
    assert result.episodes >= episodes
    assert result.agent_exit_codes == [0, 0, 0], result.agent_logs
    for log, stats in zip(result.agent_logs, result.agent_stats, strict=True):
        assert "agent_service.runtime" in log, "-X importtime output missing: the check below would prove nothing"
        assert not TORCH_IMPORT.search(log), "the onnx agent imported torch"
        assert stats["runtime"] == "onnx" and stats["graph_engine"] == "numpy" and stats["torch_imported"] is False
        assert stats["steps"] >= 25 and stats["policy_version"] == 0 and stats["late_actions"] == 0


@pytest.mark.parametrize("channel", ["none", "broadcast"])
def test_onnx_agents_complete_episodes_without_importing_torch(tmp_path: Path, channel: str) -> None:
    cfg, policy = exported(tmp_path, channel)
    result = run_edge_mesh(cfg, policy, tmp_path / "mesh", episodes=4, agent_flags=("-X", "importtime"), agent_cwd=ROOT)
    check_ran_without_torch(result, 4)
    if channel == "broadcast":  # messages really flowed between the onnx agents
        for stats in result.agent_stats:
            assert stats["bus"]["messages_sent"] >= 2 * stats["steps"] - 2


def test_onnx_agent_refuses_a_policy_for_another_channel(tmp_path: Path) -> None:
    cfg, policy = exported(tmp_path, "none")
    other = tmp_path / "broadcast.yaml"
    other.write_text(dump_config(load_config(cfg, ["channel.name=broadcast"])))
    out = subprocess.run(
        [sys.executable, "-m", "agent_service", "--runtime", "onnx", "--mode", "eval", "--policy-dir", str(policy)],
        env={contract.CONFIG.name: str(other), contract.AGENT_ID.name: "agents-0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "exported for channel 'none' but the config uses 'broadcast'" in out.stderr
    assert out.stderr.count("\n") == 1


def tracked_source_copy(dst: Path) -> Path:
    """The files git tracks (else the tree without venvs and build output), copied to ``dst``.

    Installing from this copy builds exactly the committed sources: no stale ``build/`` left in the work tree
    ends up in the wheel, and the test writes nothing into the work tree (other checkouts may be building).
    """
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs")
        return Path(shutil.copytree(ROOT, dst, ignore=ignore))
    for name in filter(None, (n.decode() for n in names)):
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only ``marlmesh[edge]`` installed (normal install from the package index).

    The venv is created without pip (pip is no runtime need of an edge device) and this interpreter's pip
    installs into it (``pip --python``); ``--no-compile`` leaves byte-compiling to the first import instead of
    compiling every installed module up front. What is installed is the same as a plain ``pip install
    '.[edge]'`` would install: the package built from source plus the extra's dependencies, never torch.
    """
    root = tmp_path_factory.mktemp("edge-venv")
    src = tracked_source_copy(root / "src")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile", f"{src}[edge]"]
    out = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"pip install .[edge] failed:\n{out.stderr[-3000:]}"
    return python


@pytest.mark.timeout(1200)  # includes building the fresh venv (a few minutes on a loaded 2-core machine)
def test_fresh_edge_install_runs_an_exported_policy(tmp_path: Path, edge_venv: Path) -> None:
    no_torch = subprocess.run([str(edge_venv), "-c", "import torch"], capture_output=True, timeout=60)
    assert no_torch.returncode != 0, "the edge extra pulled torch in"
    has_ort = subprocess.run([str(edge_venv), "-c", "import onnxruntime, zmq, grpc, numpy"], timeout=60)
    assert has_ort.returncode == 0
    cfg, policy = exported(tmp_path, "broadcast")
    result = run_edge_mesh(
        cfg, policy, tmp_path / "mesh", episodes=4, agent_python=str(edge_venv), agent_flags=("-X", "importtime")
    )
    check_ran_without_torch(result, 4)
    where = subprocess.run(
        [str(edge_venv), "-c", "import agent_service; print(agent_service.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert where.stdout.startswith(str(edge_venv.parent.parent)), "the agents must run the installed package"


def test_bench_edge_reports_both_runtimes_and_edge_memory(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from marlmesh import cli

    assert cli.main(["bench", "edge", "--decisions", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["decisions"] == 500 and result["edge_episodes"] >= 6 and result["edge_torch_imported"] is False
    assert 0 < result["onnx_p50_ms"] < result["torch_p50_ms"]  # same policy, same run
    assert result["numpy_p50_ms"] > 0 and result["edge_graph_engine"] == "numpy"
    assert 0 < result["edge_peak_rss_mb"] < 200


def test_exported_agents_play_exactly_like_the_torch_agents(tmp_path: Path) -> None:
    """Same checkpoints, same env seed, deterministic actions: `marlmesh eval` (torch) and onnx agents agree."""
    import torch

    from marlmesh import plugins
    from marlmesh.checkpoint import save_checkpoint
    from marlmesh.deploy.export import export_run, policy_specs
    from marlmesh.launch.evaluate import evaluate_run

    # channel none: with messages, an agent's first-tick peers are the agents live when its Join returned
    # (start-up timing), so two meshes need not agree on tick 0; the silent channel is bit-for-bit
    # reproducible. The broadcast stages are compared graph by graph in tests/unit/test_onnx_export.py.
    config = load_config(None, ["channel.name=none", "env.num_envs=2", "seed=21"])
    run = tmp_path / "run"
    run.mkdir()
    cfg = run / "config.yaml"
    cfg.write_text(dump_config(config))
    torch.manual_seed(4)
    channel = plugins.load("channels", "none")(config.channel)
    for spec in policy_specs(config):
        policy = channel.build_policy(spec)
        with torch.no_grad():  # a policy that acts decisively (untrained heads are near-uniform: ties)
            for p in policy.parameters():
                p.add_(0.5 * torch.randn_like(p))
        save_checkpoint(
            run / "checkpoints" / f"agent-{spec.agent_index}", 3, {"version": 3, "policy": policy.state_dict()}, 1
        )
    export_run(run, tmp_path / "policy")
    with_torch = evaluate_run(config, cfg, run, episodes=6, num_envs=2, seed=config.seed, tag="parity")
    with_onnx = run_edge_mesh(cfg, tmp_path / "policy", tmp_path / "mesh", episodes=6, num_envs=2)
    assert with_onnx.agent_exit_codes == [0, 0, 0]
    assert len(with_onnx.return_sums) == with_torch["episodes"] == 6
    sums = np.asarray(with_onnx.return_sums)
    assert sums.mean() == pytest.approx(with_torch["return_sum_mean"], abs=1e-4)
    assert sums.std() == pytest.approx(with_torch["return_sum_std"], abs=1e-4)
    assert sums.std() > 0  # six different episodes, not a degenerate comparison

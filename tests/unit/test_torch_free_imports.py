"""Agent processes and the mesh launcher never import torch (only learners and the in-process launcher do).

An agent acting with the default graph engine (``train.graph_engine: numpy``) loads no onnxruntime either.

Each check runs in a fresh interpreter: this test process has torch already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def modules_after(code: str, tmp_path: Path) -> set[str]:
    """Top-level module names in ``sys.modules`` after running ``code`` in a fresh interpreter (cwd: repo root)."""
    script = tmp_path / "probe.py"
    report = "import sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    script.write_text(textwrap.dedent(code) + "\n" + report)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return set(res.stdout.split())


def test_agent_service_entry_points_do_not_import_torch(tmp_path):
    loaded = modules_after(
        """
        import agent_service.__main__, agent_service.node, agent_service.runtime, agent_service.training_runtime
        agent_service.__main__.parser()
        """,
        tmp_path,
    )
    assert "agent_service" in loaded and "onnxruntime" not in loaded  # onnxruntime only once a runtime is built
    assert "torch" not in loaded


AGENT_NEVER_LOADS = {"torch", "onnxruntime", "onnx", "scipy", "gymnasium", "pettingzoo", "matplotlib", "pandas"}
"""Heavy packages an agent acting with the numpy graph engine does not need (each costs memory and start time)."""


def test_agent_acting_with_the_numpy_engine_loads_no_heavy_package(tmp_path):
    from tests.unit.test_onnx_export import export_case

    (tmp_path / "policy").mkdir()
    export_case(["algo.name=dgmappo", "channel.name=dgat"], tmp_path / "policy")
    loaded = modules_after(
        f"""
        from pathlib import Path
        import numpy as np
        import agent_service.__main__
        from agent_service.runtime import OnnxRuntime

        runtime = OnnxRuntime(Path({str(tmp_path / "policy")!r}), 0, engine="numpy")
        state, outbox = runtime.encode(np.zeros((2, *runtime.obs_shape), np.float32))
        assert outbox.shape[0] == 2 and np.isfinite(outbox).all()
        """,
        tmp_path,
    )
    assert "agent_service" in loaded
    assert not AGENT_NEVER_LOADS & loaded


def test_mesh_launcher_checks_and_logs_without_torch(tmp_path):
    """What ``marlmesh train``/``eval`` run in the launcher process: config, plugin checks, team log, evaluation."""
    loaded = modules_after(
        f"""
        from pathlib import Path
        import marlmesh.cli, marlmesh.launch.train, marlmesh.launch.evaluate, marlmesh.launch.summary
        from marlmesh.config import load_config
        from marlmesh.launch.train import check_plugins
        from marlmesh.tensorboard import team_log

        for channel, algo in [("broadcast", "ippo"), ("meanfield", "mfppo"), ("dgat", "dgmappo")]:
            check_plugins(load_config(None, [f"channel.name={{channel}}", f"algo.name={{algo}}"]))
        log = team_log(True, Path({str(tmp_path)!r}))
        log.record({{"env_steps": 1, "return_sum_recent_mean": 1.0}})
        log.close()
        """,
        tmp_path,
    )
    assert {"marlmesh", "tensorboardX", "learner_service"} <= loaded
    assert "torch" not in loaded


def test_team_log_keeps_torch_importable_afterwards(tmp_path):
    """Hiding torch from tensorboardX's import lasts only for that import."""
    loaded = modules_after(
        f"""
        from pathlib import Path
        from marlmesh.tensorboard import ScalarLog
        ScalarLog(Path({str(tmp_path)!r})).close()
        import torch
        assert torch.zeros(1).shape == (1,)
        """,
        tmp_path,
    )
    assert "torch" in loaded

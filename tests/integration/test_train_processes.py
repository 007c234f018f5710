"""`marlmesh train` end to end as real processes: env + 3 agents + 3 learners on 127.0.0.1."""

import json
import signal
import subprocess
import time

import pytest
from service_procs import MARLMESH, ROOT, SMOKE, alive, port_is_free, train

pytestmark = pytest.mark.integration


def test_smoke_run_every_agent_steps_talks_and_learns(tmp_path):
    run = tmp_path / "run"
    res = train(run)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    procs = summary["processes"]
    roles = sorted((p["role"], p["agent_id"]) for p in procs)
    assert roles == [
        ("agent", 0),
        ("agent", 1),
        ("agent", 2),
        ("env", -1),
        ("learner", 0),
        ("learner", 1),
        ("learner", 2),
    ]
    assert len({p["pid"] for p in procs}) == 7
    assert not any(alive(p["pid"]) for p in procs)
    assert summary["env_steps"] >= 2400
    agents = {a["agent_id"]: a for a in summary["agents"]}
    assert sorted(agents) == [0, 1, 2]
    for i, a in agents.items():
        assert a["steps"] > 0
        assert a["bus"]["messages_sent"] > 0 and a["bus"]["messages_received"] > 0
        # heard from both peers
        assert sorted(a["bus"]["received_from"]) == sorted(str(p) for p in range(3) if p != i)
        assert a["policy_version"] >= 1, "agent never acted with a new weights version"
        assert a["weights_loaded"] >= 2
    for lr in summary["learners"]:
        assert lr["version"] >= 1 and lr["samples_trained"] > 0
        assert not lr["fragments_dropped"].get("wrong_agent")
        assert list((run / "checkpoints" / f"agent-{lr['agent_id']}").glob("ckpt-*.pt"))
    assert summary["bus"]["messages_sent"] == sum(a["bus"]["messages_sent"] for a in agents.values())
    assert summary["bus"]["bytes_sent"] > 0 and summary["bus"]["delivery_latency_p50_seconds"] is not None
    ev = summary["eval"]
    assert ev["episodes"] == 8 and ev["collisions_mean"] is not None
    assert isinstance(ev["return_sum_mean"], float) and ev["return_sum_std"] >= 0
    for name in ("config.yaml", "metrics.jsonl", "plots/return.png", "plots/losses.png"):
        assert (run / name).is_file(), name
    logs = {f.name for f in (run / "logs").glob("train-*.log")}
    processes = {f"train-{role}-{i}.log" for role in ("agent", "learner") for i in range(3)}
    assert logs == {"train-env.log", "train-forkserver.log"} | processes
    assert "Evaluation" in res.stdout and str(run) in res.stdout
    # agents (training and evaluation) act with onnx and never import torch; the evaluation from an export
    for tag in ("train", "eval"):
        for i in range(3):
            stats = json.loads((run / "stats" / f"{tag}-agent-{i}.json").read_text())
            assert stats["runtime"] == "onnx" and stats["torch_imported"] is False, (tag, stats)
            assert stats["start"] == "fork", stats  # runtime.agent_start's default
            assert stats["peak_rss_mb"] >= stats["private_mb"] > 0 and stats["start_s"] > 0 and stats["start_cpu_s"] > 0
    assert (run / "eval-policy" / "manifest.json").is_file()

    # `marlmesh eval RUN_DIR` on the saved policies
    ev2 = subprocess.run(
        [*MARLMESH, "eval", str(run), "--episodes", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert ev2.returncode == 0, ev2.stderr[-2000:]
    result = json.loads(ev2.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 4 and len(result["agent_return_means"]) == 3
    for i in range(3):
        stats = json.loads((run / "stats" / f"cli-eval-agent-{i}.json").read_text())
        assert stats["runtime"] == "onnx" and stats["torch_imported"] is False, stats

    # training again in the same run directory resumes every learner from its newest checkpoint
    versions = {lr["agent_id"]: lr["version"] for lr in summary["learners"]}
    again = train(run, "train.total_env_steps=400", extra=["--no-eval"])
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((run / "summary.json").read_text())
    for lr in resumed["learners"]:
        assert lr["version"] > versions[lr["agent_id"]], (lr, versions)


@pytest.mark.parametrize(
    ("env_name", "names"),
    [
        ("mpe2.simple_speaker_listener_v4", ["speaker_0", "listener_0"]),
        ("marlmesh.testing.envs:heterogeneous_env", ["scout", "mover"]),  # module:factory, Discrete + Box
    ],
)
def test_heterogeneous_agents(tmp_path, env_name, names):
    run = tmp_path / "run"
    res = train(run, f"env.name={env_name}", "env.kwargs={}", "train.total_env_steps=1600")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["agent_names"] == names
    assert all(a["policy_version"] >= 1 for a in summary["agents"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_everything_and_frees_ports(tmp_path, sig):
    run = tmp_path / "run"
    args = [
        *MARLMESH,
        "train",
        "-c",
        str(ROOT / "configs/smoke.yaml"),
        "--run-dir",
        str(run),
        "--set",
        "train.total_env_steps=100000000",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.3)
    assert metrics.exists(), "training never reported progress"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 128 + sig, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name
    pids = [p["pid"] for p in summary["processes"]]
    assert len(pids) == 7
    assert not any(alive(pid) for pid in pids)
    assert summary["ports"], "summary lists no ports"
    assert all(port_is_free("127.0.0.1", port) for port in summary["ports"])


def test_two_meshes_started_at_once_both_complete(tmp_path):
    """Every listener binds a port the OS assigns, so two launchers starting together never take the same port."""
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            [*MARLMESH, "train", "-c", str(SMOKE), "--run-dir", str(run), "--no-eval"]
            + ["--set", "train.total_env_steps=800"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for run in runs
    ]
    errors = [p.communicate(timeout=400)[1] for p in procs]
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err[-3000:]
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert not set(summaries[0]["ports"]) & set(summaries[1]["ports"])
    for run, summary in zip(runs, summaries, strict=True):
        assert summary["env_steps"] >= 800
        assert all(a["bus"]["messages_received"] > 0 for a in summary["agents"])
        # the agents dialled each other at the ports of the mesh's peer table
        table = json.loads((run / "ports" / "train-bus.peers").read_text())["ports"]
        assert len(table) == 3 and set(table) <= set(summary["ports"])

"""Every Prometheus endpoint of a training mesh, scraped over HTTP: the dashboard's series exist and learning shows.

One ``marlmesh train`` run of configs/smoke.yaml (a large step budget, stopped by SIGINT once it has learned a
little) serves every test here; the endpoints come from ``RUN_DIR/processes.json`` (env, agents and learners).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service_procs import MARLMESH, ROOT, SMOKE

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "k8s" / "monitoring" / "grafana-dashboard.json"
TEAM_RETURN = "marlmesh_env_team_episode_return_mean"
DEADLINE_S = 240.0


@dataclass
class Scrapes:
    """The last text of every endpoint and the team-return values seen while the run trained."""

    texts: dict[str, str] = field(default_factory=dict)
    team_returns: list[float] = field(default_factory=list)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _series_names(text: str) -> set[str]:
    """Every series name a query can use, also of families with no sample yet (a labelled counter before its
    first event exports only its ``# TYPE`` line)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {x.name for x in family.samples}
    return names


def _endpoints(run: Path) -> dict[str, int]:
    try:
        table = json.loads((run / "processes.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {p["name"]: int(p["metrics_port"]) for p in table if p.get("metrics_port")}


def _learned(s: Scrapes) -> bool:
    """Every learner updated at least twice and the team return took at least two values."""
    learners = [t for name, t in s.texts.items() if name.startswith("learner-")]
    updates = [sum(x.value for x in _samples(t) if x.name == "marlmesh_learner_updates_total") for t in learners]
    return len(learners) == 3 and min(updates) >= 2 and len(set(s.team_returns)) >= 2


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Scrapes:
    run = tmp_path_factory.mktemp("metrics") / "run"
    cmd = [*MARLMESH, "train", "-c", str(SMOKE), "--run-dir", str(run), "--no-eval"]
    cmd += ["--set", "train.total_env_steps=100000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    got = Scrapes()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not _learned(got):
            assert proc.poll() is None, f"the run exited early:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"no learning seen in {DEADLINE_S:.0f}s: {got.team_returns}"
            for name, port in _endpoints(run).items():
                try:
                    got.texts[name] = _scrape(port)
                except OSError:
                    continue  # not listening yet
                if name == "env":  # absent until the first episode ends
                    got.team_returns += [x.value for x in _samples(got.texts[name]) if x.name == TEAM_RETURN]
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    return got


def test_every_process_exports_metrics(scrapes: Scrapes) -> None:
    assert set(scrapes.texts) == {"env", *(f"{role}-{i}" for role in ("agent", "learner") for i in range(3))}


def test_every_metric_of_the_dashboard_is_exported(scrapes: Scrapes) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    wanted = {m for e in exprs for m in re.findall(r"marlmesh_[a-z_]+", e)}
    exported = {n for text in scrapes.texts.values() for n in _series_names(text)}
    assert wanted - exported == set(), f"dashboard metrics no endpoint exports: {sorted(wanted - exported)}"


def test_learners_export_their_agents_last_update(scrapes: Scrapes) -> None:
    for i in range(3):
        by_name = {x.name: x for x in _samples(scrapes.texts[f"learner-{i}"]) if x.name.startswith("marlmesh_learner")}
        assert by_name["marlmesh_learner_policy_version"].labels == {"agent": str(i)}
        assert by_name["marlmesh_learner_policy_version"].value >= 2
        assert by_name["marlmesh_learner_samples_total"].value > 0
        assert by_name["marlmesh_learner_entropy"].value > 0
        assert by_name["marlmesh_learner_learning_rate"].value > 0
        assert by_name["marlmesh_learner_update_duration_seconds_count"].value >= 2


def test_poison_counters_are_exported_at_zero_for_every_cause(scrapes: Scrapes) -> None:
    from learner_service.metrics import REJECT_CAUSES, UPDATE_REJECT_CAUSES
    from marlmesh.weights_check import WEIGHTS_REJECT_CAUSES

    for role, series in (
        ("learner", {"marlmesh_learner_fragments_rejected_total": REJECT_CAUSES}),
        ("learner", {"marlmesh_learner_updates_rejected_total": UPDATE_REJECT_CAUSES}),
        ("agent", {"marlmesh_agent_weights_rejected_total": WEIGHTS_REJECT_CAUSES}),
    ):
        for i in range(3):
            got = {(x.name, x.labels.get("cause")): x.value for x in _samples(scrapes.texts[f"{role}-{i}"])}
            for name, causes in series.items():
                assert {cause: got.get((name, cause)) for cause in causes} == dict.fromkeys(causes, 0.0), (role, i)


def test_team_return_moves_during_training(scrapes: Scrapes) -> None:
    returns = scrapes.team_returns
    assert len(set(returns)) >= 2 and all(r < 0 for r in returns), returns  # simple_spread: distances are costs
    env = {x.name: x.value for x in _samples(scrapes.texts["env"])}
    assert env["marlmesh_env_episode_length_steps_mean"] == 25  # max_cycles of smoke.yaml
    assert env["marlmesh_env_episode_window_episodes"] > 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_finds_nothing_to_fix(scrapes: Scrapes) -> None:
    for name, text in scrapes.texts.items():
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (name, out.stdout, out.stderr)

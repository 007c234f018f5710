"""``marlmesh top``: endpoint discovery, metric parsing and the table (the live view is tested on a real mesh)."""

import json
from pathlib import Path

import pytest

from marlmesh.launch.top import Reading, Target, _read_metrics, parse_endpoint, render, targets_from_run_dir

AGENT_METRICS = """\
# TYPE marlmesh_agent_steps counter
marlmesh_agent_steps_total 120.0
# TYPE marlmesh_agent_policy_version gauge
marlmesh_agent_policy_version 4.0
# TYPE marlmesh_bus_messages_sent counter
marlmesh_bus_messages_sent_total{channel="dgat",peer="1"} 30.0
marlmesh_bus_messages_sent_total{channel="dgat",peer="2"} 12.0
marlmesh_bus_messages_sent_created{channel="dgat",peer="2"} 1.7e9
# TYPE marlmesh_bus_dropped counter
"""


def test_reads_agent_counters_and_sums_labels() -> None:
    r = _read_metrics(AGENT_METRICS)
    assert (r.steps, r.policy_version, r.messages_sent) == (120.0, 4.0, 42.0)
    assert r.dropped == 0.0  # a labelled counter without samples yet
    assert r.messages_received is None


def test_targets_from_processes_json(tmp_path: Path) -> None:
    table = [
        {"name": "env", "role": "env", "metrics_port": 9001},
        {"name": "learner-0", "role": "learner", "metrics_port": 0},
        {"name": "agent-0", "role": "agent", "metrics_port": 9002},
    ]
    (tmp_path / "processes.json").write_text(json.dumps(table))
    got = targets_from_run_dir(tmp_path)
    assert [(t.name, t.url) for t in got] == [
        ("env", "http://127.0.0.1:9001/metrics"),
        ("agent-0", "http://127.0.0.1:9002/metrics"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{", "not valid JSON"),
        ('[{"name": "env", "role": "env"}]', "no process with a metrics_port"),
    ],
)
def test_bad_run_dir_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "processes.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        targets_from_run_dir(tmp_path)


def test_endpoint_flag() -> None:
    assert parse_endpoint("agent-2=10.0.0.5:9100") == Target("agent-2", "agent", "http://10.0.0.5:9100/metrics")
    with pytest.raises(ValueError, match="NAME=HOST:PORT"):
        parse_endpoint("agent-2:9100")


def test_render_rates_and_down_endpoints() -> None:
    targets = [Target("agent-1", "agent", "u1"), Target("env", "env", "u0"), Target("agent-0", "agent", "u2")]
    before = {"agent-0": Reading(steps=10), "agent-1": Reading(steps=0), "env": Reading(steps=100)}
    after = {
        "agent-0": Reading(steps=30, policy_version=2),
        "agent-1": Reading(error="refused"),
        "env": Reading(steps=500),
    }
    lines = render(targets, before, after, 2.0).splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["env", "agent-0", "agent-1"]
    assert lines[1].split()[1] == "200.0" and lines[2].split()[1] == "10.0"
    assert "down (refused)" in lines[3]


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["top"], "give a RUN_DIR"),
        (["top", "--endpoint", "agent-0"], "expected NAME=HOST:PORT"),
        (["top", "--endpoint", "a=h:1", "--interval", "0"], "--interval must be > 0"),
        (["bench", "e2e", "--num-envs", "0"], "--num-envs must be >= 1"),
        (["bench", "e2e", "--set", "env.nmu_envs=2"], "did you mean 'env.num_envs'"),
        (["bench", "e2e", "--seconds", "5", "--set", "bus.round_timeout_ms=2000"], "pauses the mesh for about 5.5s"),
        (["bench", "scale", "--agents", "3,x"], "comma-separated integers"),
        (["bench", "scale", "--channels", "meanfield,smoke"], "unknown ['smoke']"),
    ],
)
def test_bad_arguments_fail_with_one_line(argv: list[str], expect: str, capsys: pytest.CaptureFixture) -> None:
    from marlmesh.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("marlmesh: error: ") and expect in err and len(err.splitlines()) == 1

"""The ``faults`` schedule and ``runtime.restart`` in the config: documented models, clear errors."""

import pytest

from marlmesh.config import ConfigError, KillFault, PartitionFault, load_config, validate
from marlmesh.launch.faults import check_supported


def test_restart_defaults_and_overrides():
    cfg = load_config(None, ["runtime.restart.max_restarts=5", "runtime.restart.backoff_s=0.5"])
    assert cfg.runtime.restart.max_restarts == 5 and cfg.runtime.restart.backoff_s == 0.5
    assert load_config(None).runtime.restart.max_restarts == 3
    with pytest.raises(ConfigError, match="runtime.restart.max_restarts"):
        load_config(None, ["runtime.restart.max_restarts=-1"])


def test_kill_partition_degrade_entries_validate():
    cfg = validate(
        {
            "faults": [
                {"kind": "kill", "role": "agent", "agent": 1, "at_env_steps": 100, "restart_after_env_steps": 50},
                {"kind": "kill", "role": "env", "at_env_steps": 300, "restart_after_env_steps": 0},
                {"kind": "partition", "links": [[0, 1], [1, 0]], "from_env_steps": 10, "to_env_steps": 20},
                {"kind": "degrade", "links": [[0, 2]], "from_env_steps": 0, "to_env_steps": 5, "loss": 0.1},
            ]
        }
    )
    assert isinstance(cfg.faults[0], KillFault) and cfg.faults[0].restart_after_env_steps == 50
    assert isinstance(cfg.faults[2], PartitionFault) and cfg.faults[2].links == [(0, 1), (1, 0)]


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ({"kind": "kill", "role": "agent", "at_env_steps": 1}, "needs 'agent: <index>'"),
        ({"kind": "kill", "role": "env", "at_env_steps": 1}, "restart_after_env_steps: 0"),
        ({"kind": "kill", "role": "pod", "agent": 0, "at_env_steps": 1}, "faults.0.kill.role"),
        ({"kind": "explode", "at_env_steps": 1}, "faults.0"),
        ({"kind": "partition", "links": [[0, 1]], "from_env_steps": 5, "to_env_steps": 5}, "greater than"),
        ({"kind": "degrade", "links": [[0, 1]], "from_env_steps": 0, "to_env_steps": 5}, "at least one of"),
        (
            {"kind": "kill", "role": "agent", "agent": 0, "at_env_step": 1},
            "unknown config key 'faults.0.kill.at_env_step'; did you mean 'faults.0.kill.at_env_steps'",
        ),
    ],
)
def test_bad_fault_entries_name_the_problem(fault, expect):
    with pytest.raises(ConfigError) as info:
        validate({"faults": [fault]})
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_partition_and_degrade_reach_the_bus_link_faults():
    from comm_bus.faults import LinkFaults

    cfg = validate(
        {
            "faults": [
                {"kind": "partition", "links": [[0, 1]], "from_env_steps": 0, "to_env_steps": 9},
                {"kind": "degrade", "links": [[2, 0]], "from_env_steps": 4, "to_env_steps": 8, "loss": 0.5},
                {"kind": "kill", "role": "learner", "agent": 0, "at_env_steps": 1},
            ]
        }
    )
    check_supported(cfg)
    faults = LinkFaults.from_config(cfg.faults)
    assert len(faults.faults) == 2  # the kill is the launcher's
    assert faults.partitioned(0, 1, 8) and not faults.partitioned(0, 1, 9) and not faults.partitioned(1, 0, 3)
    from marlmesh.config import LinkConfig

    assert faults.degrade(LinkConfig(), 2, 0, 5).loss == 0.5 and faults.degrade(LinkConfig(), 2, 0, 8).loss == 0.0

"""``marlmesh bench e2e``: the deadlines it raises for its own pauses, and CPU accounting of process trees."""

import argparse
import os
import subprocess
import sys

import pytest

from marlmesh.bench import e2e, meshrun
from marlmesh.config import ConfigError


def _ns(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_default_window_raises_both_deadlines_above_the_pause() -> None:
    config = e2e.bench_config(_ns())  # --seconds 10: the mesh is paused ~10.5 s at a time
    pause_ms = (10.0 + e2e.PAUSE_OVERHEAD_S) * 1000
    assert config.env.step_deadline_ms >= e2e.PAUSE_DEADLINE_FACTOR * pause_ms
    assert config.bus.round_timeout_ms >= e2e.PAUSE_DEADLINE_FACTOR * pause_ms
    assert (config.env.num_envs, config.channel.name, config.channel.dgat.hops) == (64, "dgat", 2)


def test_user_values_are_kept_and_longer_defaults_never_lowered() -> None:
    config = e2e.bench_config(_ns("--seconds", "1", "--set", "env.step_deadline_ms=90000"))
    assert config.env.step_deadline_ms == 90000  # set by the user
    assert config.bus.round_timeout_ms == 5000  # the default is already above 2 x 1.5 s


def test_a_deadline_set_by_the_user_too_close_to_the_pause_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="bus.round_timeout_ms"):
        e2e.bench_config(_ns("--seconds", "10", "--set", "bus.round_timeout_ms=5000"))


def test_tree_cpu_counts_the_cpu_of_child_processes() -> None:
    # the env service's env.workers are children of the env process: its CPU per tick must include them
    burn = (
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
        "print('done', flush=True)\ntime.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        kid = meshrun.cpu_seconds(child.pid)
        tree = meshrun.tree_cpu_seconds({"me": os.getpid()})["me"]
        assert kid >= 0.25
        assert tree >= meshrun.cpu_seconds(os.getpid()) + kid - 0.02
    finally:
        child.kill()
        child.wait()


def test_env_spec_for_a_config_with_env_workers() -> None:
    # the bench builds the spec from one local copy, whatever env.workers the meshes use
    config = e2e.bench_config(_ns("--set", "env.workers=2"))
    spec = meshrun.env_spec_for(config)
    assert [a.name for a in spec.agents] == ["agent_0", "agent_1", "agent_2"]

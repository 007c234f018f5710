"""Lockstep weight sync (train.weight_sync): the final tick, the weight policies, the sweep's default."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent_service.weight_sync import AsyncWeights, LockstepWeights, weight_sync_for
from marlmesh.config import ConfigError, load_config
from marlmesh.experiments.sweep import cell_command
from marlmesh.experiments.sweep_spec import Cell
from marlmesh.lockstep import final_tick, reproducibility


class FakeLink:
    """The two LearnerLink calls the weight policies use; ``publish`` plays the learner."""

    address = "127.0.0.1:1"

    def __init__(self) -> None:
        self.latest: tuple[int, dict] | None = None
        self.fragments_lost = 0
        self.weights_refused = 0
        self.cond = threading.Condition()

    def publish(self, version: int) -> None:
        with self.cond:
            self.latest = (version, {"w": np.full(2, version, np.float32)})
            self.cond.notify_all()

    def newer_weights(self, have: int):  # noqa: ANN201
        return self.latest if self.latest and self.latest[0] > have else None

    def drop(self) -> None:
        with self.cond:
            self.fragments_lost += 1
            self.cond.notify_all()

    def refuse(self) -> None:
        with self.cond:
            self.weights_refused += 1
            self.cond.notify_all()

    def wait_newer_weights(  # noqa: ANN201
        self, have: int, timeout: float, lost_before: int | None = None, refused_before: int | None = None
    ):
        def done() -> bool:
            lost = self.fragments_lost > (lost_before or 0)
            return bool(self.newer_weights(have)) or lost or self.weights_refused > (refused_before or 0)

        with self.cond:
            self.cond.wait_for(done, timeout)
        return self.newer_weights(have)


@pytest.mark.parametrize(
    ("total", "envs", "steps", "tick"),
    [(400, 2, 50, 200), (400, 4, 50, 100), (2400, 4, 50, 600), (401, 4, 50, 150), (1, 32, 100, 100)],
)
def test_final_tick_rounds_the_budget_up_to_whole_fragments(total, envs, steps, tick):
    assert final_tick(total, envs, steps) == tick
    assert final_tick(total, envs, steps) % steps == 0 and final_tick(total, envs, steps) * envs >= total


def test_final_tick_rejects_non_positive_counts():
    with pytest.raises(ValueError, match="num_envs=0"):
        final_tick(400, 0, 50)


def test_lockstep_waits_for_the_version_trained_on_the_pushed_fragment():
    link = FakeLink()
    sync = LockstepWeights(link, end_tick=100, timeout_s=5.0)
    assert sync.between_steps(0) is None  # never swaps between steps
    link.publish(0)
    threading.Timer(0.05, link.publish, args=(1,)).start()
    start = time.monotonic()
    version, params = sync.after_push(0)
    assert version == 1 and params["w"][0] == 1 and time.monotonic() - start >= 0.04
    assert not sync.is_final(99) and sync.is_final(100) and sync.is_final(101)


def test_lockstep_fails_with_the_missing_version_after_its_deadline():
    link = FakeLink()
    link.publish(3)
    with pytest.raises(TimeoutError, match=r"did not publish weights version 4 within 0s .*lockstep_timeout_s"):
        LockstepWeights(link, end_tick=10, timeout_s=0.05).after_push(3)


def test_lockstep_acts_on_with_its_version_when_the_fragment_was_dropped():
    link = FakeLink()
    link.publish(0)
    sync = LockstepWeights(link, end_tick=10, timeout_s=5.0)
    threading.Timer(0.05, link.drop).start()
    start = time.monotonic()
    assert sync.after_push(0) is None and time.monotonic() - start < 2.0
    threading.Timer(0.05, link.publish, args=(1,)).start()  # the next fragment is trained: back in step
    assert sync.after_push(0)[0] == 1


def test_lockstep_acts_on_with_its_version_when_the_awaited_weights_were_refused():
    link = FakeLink()
    link.publish(0)
    sync = LockstepWeights(link, end_tick=10, timeout_s=30.0)  # a missed refusal would raise after 30 s
    threading.Timer(0.05, link.refuse).start()  # version 1 arrived poisoned: the link refused it
    assert sync.after_push(0) is None
    threading.Timer(0.05, link.publish, args=(2,)).start()  # the next good version is taken up
    assert sync.after_push(0)[0] == 2


def test_async_takes_the_newest_version_between_steps_and_never_ends_the_run():
    link = FakeLink()
    sync = AsyncWeights(link)
    assert sync.between_steps(-1) is None
    link.publish(2)
    assert sync.between_steps(0)[0] == 2 and sync.between_steps(2) is None
    assert sync.after_push(2) is None and not sync.is_final(10**9)
    assert AsyncWeights(None).between_steps(-1) is None


def test_config_picks_the_policy_and_rejects_unknown_modes():
    lock = load_config(None, ["train.weight_sync=lockstep", "train.total_env_steps=400", "train.rollout_steps=50"])
    sync = weight_sync_for(lock, FakeLink(), num_envs=2)
    assert isinstance(sync, LockstepWeights) and sync.end_tick == 200 and sync.timeout_s == 300
    assert isinstance(weight_sync_for(lock, None, 2), AsyncWeights)  # evaluation: no learner
    assert isinstance(weight_sync_for(load_config(None, []), FakeLink(), 2), AsyncWeights)
    with pytest.raises(ConfigError, match="train.weight_sync"):
        load_config(None, ["train.weight_sync=sync"])


def test_sweep_trains_its_cells_in_lockstep_unless_the_sweep_says_otherwise(tmp_path: Path):
    def cell(overrides: dict, baseline: str | None = None) -> Cell:
        return Cell("c", {}, 0, overrides, baseline, "m")

    assert "train.weight_sync=lockstep" in cell_command(cell({"seed": 0}), None, tmp_path)
    own = cell_command(cell({"train.weight_sync": "async"}), None, tmp_path)
    assert "train.weight_sync=lockstep" not in own and 'train.weight_sync="async"' in own
    assert not any("weight_sync" in a for a in cell_command(cell({}, "random"), None, tmp_path))


def test_reproducibility_names_everything_that_made_a_run_depend_on_timing():
    lock = load_config(None, ["train.weight_sync=lockstep"])
    clean = {"round_timeouts": 0, "default_actions": 0, "fragments_lost": 0, "restarts": 0, "stopped_early": False}
    assert reproducibility(lock, **clean) == {"exact": True, "broken_by": []}
    broken = reproducibility(
        lock, round_timeouts=2, default_actions=3, fragments_lost=1, restarts=1, stopped_early=True
    )
    assert not broken["exact"] and len(broken["broken_by"]) == 5
    assert "1 rollout fragment(s) dropped" in broken["broken_by"][2]
    assert "2 bus round(s)" in broken["broken_by"][0] and "3 default action(s)" in broken["broken_by"][1]
    wall_async = reproducibility(load_config(None, ["bus.clock=wall"]), **clean)
    assert [r.split()[0] for r in wall_async["broken_by"]] == ["train.weight_sync=async", "bus.clock=wall"]

import numpy as np
import pytest
import torch

from marlmesh.checkpoint import (
    CorruptCheckpoint,
    list_checkpoints,
    load_latest,
    read_checkpoint,
    save_checkpoint,
)
from marlmesh.rollout import RolloutRecorder, validate_columns
from marlmesh.spaces import SpaceSpec


def test_checkpoints_atomic_keep_and_corruption_fallback(tmp_path):
    for v in range(1, 5):
        save_checkpoint(tmp_path, v, {"version": v, "w": torch.full((3,), float(v))}, keep=2)
    assert [v for v, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert not list(tmp_path.glob(".*tmp*"))
    newest = list_checkpoints(tmp_path)[-1][1]
    newest.write_bytes(newest.read_bytes()[:-10])  # truncated
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        read_checkpoint(newest)
    payload, path = load_latest(tmp_path)
    assert payload["version"] == 3 and path.name.endswith("0000000003.pt")


def _recorder(kind="discrete"):
    space = (
        SpaceSpec(kind="discrete", n=5)
        if kind == "discrete"
        else SpaceSpec(kind="box", shape=(2,), low=(-1, -1), high=(1, 1))
    )
    return RolloutRecorder(3, 2, (4,), space, rounds=1, num_agents=3, message_dim=5), space


def _fill(rec, act):
    inbox = [(np.ones((2, 3, 5), np.float32), np.ones((2, 3), np.float32))]
    for t in range(3):
        rec.add_decision(np.full((2, 4), t, np.float32), inbox, act, np.zeros(2), np.zeros(2), version=7)
        done = np.array([t == 1, False])
        rec.add_outcome(np.ones(2), np.zeros(2, bool), done, np.full((2, 4), 9.0, np.float32))
    return rec.finish(np.zeros((2, 4), np.float32), inbox)


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_recorder_produces_valid_columns(kind):
    rec, space = _recorder(kind)
    act = np.zeros(2, np.int64) if kind == "discrete" else np.zeros((2, 2), np.float32)
    cols = _fill(rec, act)
    assert validate_columns(cols, obs_shape=(4,), action_space=space, rounds=1, num_agents=3, message_dim=5) == (3, 2)
    assert cols["final_obs"][1, 0, 0] == 9.0 and cols["final_obs"][1, 1, 0] == 0.0
    assert cols["obs"][2, 0, 0] == 2.0 and cols["policy_version"].tolist() == [7, 7, 7]
    assert rec.size == 0


def test_validate_columns_names_the_problem():
    rec, space = _recorder()
    cols = _fill(rec, np.zeros(2, np.int64))
    kw = dict(obs_shape=(4,), action_space=space, rounds=1, num_agents=3, message_dim=5)
    bad = dict(cols, reward=np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="'reward'"):
        validate_columns(bad, **kw)
    bad = dict(cols, value=np.full((3, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        validate_columns(bad, **kw)
    bad = {k: v for k, v in cols.items() if k != "logp"}
    with pytest.raises(ValueError, match="missing \\['logp'\\]"):
        validate_columns(bad, **kw)


def _poisoned(cols, cause):
    """One fragment per rejection cause (all start from a valid one)."""
    c = dict(cols)
    if cause == "bad_columns":
        c["inbox.1.msg"] = c["inbox.0.msg"]  # another channel's round count
    elif cause == "bad_shape":
        c["inbox.0.msg"] = np.zeros((3, 2, 3, 4), np.float32)  # message_dim 4, not 5
    elif cause == "bad_dtype":
        c["reward"] = c["reward"].astype(np.int64)
    elif cause == "non_finite":
        c["obs"] = c["obs"].copy()
        c["obs"][1, 0, 2] = np.inf
    elif cause == "action_out_of_range":
        c["action"] = np.full((3, 2), 5, np.int64)
    elif cause == "mask_out_of_range":
        c["boot.inbox.0.mask"] = np.full((2, 3), 2.0, np.float32)
    elif cause == "bad_version":
        c["policy_version"] = np.array([3, 2, 3], np.int64)
    return c


@pytest.mark.parametrize(
    "cause",
    [
        "bad_columns",
        "bad_shape",
        "bad_dtype",
        "non_finite",
        "action_out_of_range",
        "mask_out_of_range",
        "bad_version",
    ],
)
def test_validate_columns_names_each_cause(cause):
    from marlmesh.rollout import FRAGMENT_REJECT_CAUSES, FragmentError

    rec, space = _recorder()
    cols = _fill(rec, np.zeros(2, np.int64))
    kw = dict(obs_shape=(4,), action_space=space, rounds=1, num_agents=3, message_dim=5)
    with pytest.raises(FragmentError) as err:
        validate_columns(_poisoned(cols, cause), **kw)
    assert err.value.cause == cause and cause in FRAGMENT_REJECT_CAUSES


def test_validate_columns_checks_the_header_and_leaves_box_actions_unbounded():
    from marlmesh.rollout import FragmentError

    rec, space = _recorder()
    cols = _fill(rec, np.zeros(2, np.int64))
    kw = dict(obs_shape=(4,), action_space=space, rounds=1, num_agents=3, message_dim=5)
    with pytest.raises(FragmentError, match="num_steps 4") as err:
        validate_columns(cols, num_steps=4, **kw)
    assert err.value.cause == "bad_shape"
    with pytest.raises(FragmentError, match="header") as err:
        validate_columns(cols, version_range=(6, 7), **kw)
    assert err.value.cause == "bad_version"
    assert validate_columns(cols, num_steps=3, version_range=(7, 7), **kw) == (3, 2)
    box_rec, box = _recorder("box")
    wide = _fill(box_rec, np.full((2, 2), 3.0, np.float32))  # a Gaussian sample outside the box [-1, 1]
    assert validate_columns(wide, **dict(kw, action_space=box)) == (3, 2)

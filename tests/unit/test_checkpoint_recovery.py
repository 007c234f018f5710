"""A learner at start: a corrupt or partial newest checkpoint is detected, reported, and the previous one used."""

import logging

import pytest

from learner_service.node import LearnerNode
from marlmesh.checkpoint import list_checkpoints
from marlmesh.config import load_config
from marlmesh.policy_spec import PolicySpec
from marlmesh.spaces import SpaceSpec

SPEC = PolicySpec(
    agent_index=0,
    num_agents=3,
    obs_space=SpaceSpec(kind="box", shape=(6,)),
    action_space=SpaceSpec(kind="discrete", n=5),
    message_dim=4,
    hidden_sizes=(16,),
)


def _config():
    return load_config(None, ["channel.message_dim=4", "algo.ppo.hidden_sizes=[16]", "train.checkpoint_keep=5"])


def _saved(tmp_path, versions):
    node = LearnerNode(_config(), SPEC, tmp_path)
    for v in versions:
        node.version = v
        node.save_checkpoint()
    return node


@pytest.mark.parametrize("damage", ["truncated", "bit_flip", "empty", "not_a_checkpoint"])
def test_corrupt_newest_is_skipped_counted_and_moved_aside(tmp_path, caplog, damage):
    _saved(tmp_path, [1, 2, 3])
    newest = list_checkpoints(tmp_path)[-1][1]
    data = newest.read_bytes()
    newest.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "bit_flip": data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:],
            "empty": b"",
            "not_a_checkpoint": b"hello world" * 20,
        }[damage]
    )
    (tmp_path / ".ckpt-0000000004.pt.tmp-99999").write_bytes(b"half a write")  # writer killed mid-write
    with caplog.at_level(logging.WARNING):
        node = LearnerNode(_config(), SPEC, tmp_path)
    assert node.version == 2 and node.resumed_from_version == 2
    assert node.checkpoints_corrupt == 1 and node.status()["checkpoints_corrupt"] == 1
    assert (tmp_path / (newest.name + ".corrupt")).is_file()
    assert not list(tmp_path.glob(".ckpt-*"))
    assert "corrupt checkpoint" in caplog.text and "partial checkpoint write" in caplog.text
    # the next save takes the corrupt one's place; a restart then resumes from it
    node.version = 3
    node.save_checkpoint()
    again = LearnerNode(_config(), SPEC, tmp_path)
    assert again.version == 3 and again.checkpoints_corrupt == 0


def test_every_checkpoint_corrupt_starts_fresh_and_counts_them(tmp_path):
    _saved(tmp_path, [1, 2])
    for _, path in list_checkpoints(tmp_path):
        path.write_bytes(path.read_bytes()[:100])
    node = LearnerNode(_config(), SPEC, tmp_path)
    assert node.version == 0 and node.resumed_from_version == -1 and node.checkpoints_corrupt == 2

"""Agent side (LearnerLink) and learner side (real gRPC server) together: every fragment is accounted for."""

import threading

import numpy as np
import pytest

from agent_service.learner_link import LearnerLink
from learner_service.node import LearnerNode
from learner_service.servicer import LearnerServicer
from marlmesh.bench.soak import fragment_accounting
from marlmesh.config import load_config
from marlmesh.policy_spec import PolicySpec
from marlmesh.rollout import RolloutRecorder
from marlmesh.serving import Identity, start_server
from marlmesh.spaces import SpaceSpec
from marlmesh.v1 import learner_pb2_grpc

pytestmark = pytest.mark.integration
SPEC = PolicySpec(
    agent_index=0,
    num_agents=3,
    obs_space=SpaceSpec(kind="box", shape=(6,)),
    action_space=SpaceSpec(kind="discrete", n=5),
    message_dim=4,
    hidden_sizes=(16,),
)


def _fragment(bad: bool = False, version: int = 0) -> dict[str, np.ndarray]:
    rec = RolloutRecorder(4, 2, (6,), SPEC.action_space, 0, 3, 4)
    for _ in range(4):
        action = np.full(2, 9 if bad else 1)
        rec.add_decision(np.zeros((2, 6), np.float32), [], action, np.zeros(2), np.zeros(2), version)
        rec.add_outcome(np.ones(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros((2, 6), np.float32))
    return rec.finish(np.zeros((2, 6), np.float32), [])


def start_learner() -> tuple[LearnerNode, threading.Event, object]:
    """A small learner of SPEC behind a real gRPC server on 127.0.0.1: ``(node, stop, server)``."""
    config = load_config(None, ["channel.message_dim=4", "algo.ppo.hidden_sizes=[16]", "algo.ppo.epochs=1"])
    node = LearnerNode(config, SPEC, checkpoint_dir=None)
    stop = threading.Event()
    servicer = LearnerServicer(node, stop)
    server = start_server(
        host="127.0.0.1",
        port=0,
        identity=Identity("learner", 0),
        stop=stop,
        max_message_bytes=1 << 20,
        register=lambda s: learner_pb2_grpc.add_LearnerServiceServicer_to_server(servicer, s),
    )
    return node, stop, server


def test_sent_trained_and_dropped_add_up():
    node, stop, server = start_learner()
    link = LearnerLink(f"127.0.0.1:{server.port}", 0, timeout_s=5, max_message_bytes=1 << 20)
    try:
        for i in range(12):
            link.push(_fragment(bad=i == 3))  # one fragment with an out-of-range action
        for _ in range(3):
            node.train_next(timeout=2.0)
        link.close()
    finally:
        stop.set()
        node.close()
        server.stop(0.2)
    agent = {"fragments_created": link.fragments_created, "fragments_sent": link.fragments_sent}
    agent["fragments_dropped"] = dict(link.fragments_dropped)
    acc = fragment_accounting({"restarts": {}, "agents": [agent], "learners": [node.status()]})
    assert acc["created"] == 12 and acc["trained"] >= 1
    assert acc["unaccounted"] == 0, acc
    assert acc["sent_and_accepted"] + sum(acc["refused_by_learners"].values()) == acc["received_by_learners"]
    if "agent:rejected" in acc["dropped"]:  # the bad fragment may have been replaced in the agent's queue
        assert acc["refused_by_learners"] == {"action_out_of_range": 1}

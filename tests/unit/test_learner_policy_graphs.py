"""A learner serves its agent's policy graphs over gRPC; the agent acts with them on the weights it streams."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from agent_service.learner_link import LearnerLink
from agent_service.training_runtime import learner_graphs_runtime
from env_service.node import EnvNode
from env_service.servicer import EnvServicer
from learner_service.node import LearnerNode
from learner_service.servicer import LearnerServicer
from marlmesh.config import load_config
from marlmesh.policies.torch_runtime import TorchRuntime
from marlmesh.policy_spec import policy_spec_for
from marlmesh.serving import Identity, start_server
from marlmesh.v1 import learner_pb2_grpc

MAX_BYTES = 1 << 22


@pytest.fixture
def learner():
    config = load_config(None, ["env.kwargs={N: 3, max_cycles: 5}", "channel.name=broadcast", "channel.message_dim=4"])
    env_servicer = EnvServicer(EnvNode(config.env, seed=0, num_envs=2))
    spec = policy_spec_for(env_servicer._spec, 0, config)
    node = LearnerNode(config, spec, checkpoint_dir=None)
    stop = threading.Event()
    servicer = LearnerServicer(node, stop)
    server = start_server(
        host="127.0.0.1",
        port=0,
        identity=Identity("learner", 0),
        stop=stop,
        max_message_bytes=MAX_BYTES,
        register=lambda s: learner_pb2_grpc.add_LearnerServiceServicer_to_server(servicer, s),
    )
    links: list[LearnerLink] = []

    def link(agent: int) -> LearnerLink:
        links.append(LearnerLink(f"127.0.0.1:{server.port}", agent, timeout_s=10, max_message_bytes=MAX_BYTES))
        return links[-1]

    yield config, spec, node, servicer, link
    for lk in links:
        lk.close(flush_timeout=0.5)
    stop.set()
    server.stop(grace=0)
    node.close()


def test_agent_acts_like_the_learners_policy_over_the_served_graphs(learner) -> None:
    config, spec, node, servicer, link = learner
    agent = link(0)
    runtime = learner_graphs_runtime(agent, spec, config)
    assert agent.wait_first_weights(10)
    version, params = agent.newer_weights(-1)
    runtime.load_params(params)
    reference = TorchRuntime(node.channel.build_policy(spec), seed=11)
    reference.load_params(params)
    runtime._rng = np.random.default_rng(11)
    obs = np.random.default_rng(0).normal(size=(4, *spec.obs_shape)).astype(np.float32)
    inbox = (np.ones((4, spec.num_agents, spec.message_dim), np.float32), np.ones((4, spec.num_agents), np.float32))
    outs = []
    for rt in (runtime, reference):
        state, _ = rt.encode(obs)
        outs.append(rt.sample(rt.act(state, [inbox]), deterministic=False))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-5)
    assert agent.policy_graphs(10) == agent.policy_graphs(10)  # exported once, then served from the cache
    assert not servicer.rejected and not servicer.internal_errors


def test_graphs_of_another_agent_are_refused_and_counted(learner) -> None:
    _, _, _, servicer, link = learner
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT: learner of agent 0 cannot serve agent 2"):
        link(2).policy_graphs(10)
    assert servicer.rejected["GetPolicyGraphs"] == 1

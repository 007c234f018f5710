"""A training agent without torch (``train.agent_runtime: onnx``): its learner's graphs, fed every weights version.

The agent asks its learner for the policy's stage graphs once (``GetPolicyGraphs``: parameters are graph
inputs named like the published weights) and acts with an :class:`~agent_service.runtime.OnnxRuntime` over
them; each weights version it receives is loaded by name (:meth:`OnnxRuntime.load_params`). It samples with the
same numpy sampler and seed as the torch runtime, so both act alike on the same weights and inputs.
"""

from __future__ import annotations

import logging
import time

from agent_service.learner_link import LearnerLink
from agent_service.runtime import OnnxRuntime
from marlmesh.config import Config
from marlmesh.policy_runtime import sampler_seed
from marlmesh.policy_spec import PolicySpec

log = logging.getLogger(__name__)


def learner_graphs_runtime(learner: LearnerLink, spec: PolicySpec, config: Config) -> OnnxRuntime:
    """The onnx runtime of this agent over its learner's graphs (acts once the first weights are loaded).

    Raises:
        RuntimeError: If the learner does not hand out its graphs within ``runtime.startup_timeout_s``.
        ValueError: If the graphs are malformed or for another agent, observation or action space.
    """
    start = time.monotonic()
    graphs = learner.policy_graphs(config.runtime.startup_timeout_s)
    log.info(
        "acting with the onnx runtime over learner %s's graphs (%d bytes, in %.2fs)",
        learner.address,
        sum(len(b) for b in graphs.files.values()),
        time.monotonic() - start,
    )
    if graphs.agent_index != spec.agent_index:
        raise ValueError(f"learner at {learner.address} sent the graphs of agent {graphs.agent_index}")
    runtime = OnnxRuntime.from_graphs(
        graphs,
        seed=sampler_seed(config.seed, spec.agent_index),
        threads=config.train.torch_threads,
        engine=config.train.graph_engine,
    )
    if runtime.obs_shape != tuple(spec.obs_shape) or runtime.action_space != spec.action_space:
        raise ValueError(
            f"learner at {learner.address} sent graphs for obs {runtime.obs_shape} / {runtime.action_space}, "
            f"the env gives {spec.obs_shape} / {spec.action_space}"
        )
    if not runtime.takes_weights:
        raise ValueError(f"learner at {learner.address} sent graphs that take no weights")
    return runtime

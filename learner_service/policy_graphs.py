"""The graphs a training agent acts with when it runs without torch (``train.agent_runtime: onnx``).

The learner exports its agent's policy stages once, on the first ``GetPolicyGraphs``, with every parameter a
graph input (:func:`marlmesh.policies.onnx_export.training_graphs`); the agent then feeds each weights version
it receives into them. The export is of a fresh policy of the same architecture, so it never races training
and leaves torch's random state as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from marlmesh.policies.onnx_export import training_graphs
from marlmesh.policy_spec import PolicySpec
from marlmesh.v1 import learner_pb2

log = logging.getLogger(__name__)


class PolicyGraphsSource:
    """Exports the agent's graphs on first use and answers every later request from that export.

    Args:
        channel: The run's channel (builds the policy).
        spec: The agent's policy spec.
    """

    def __init__(self, channel: Any, spec: PolicySpec) -> None:
        self._channel = channel
        self._spec = spec
        self._lock = threading.Lock()
        self._message: learner_pb2.PolicyGraphs | None = None

    def message(self) -> learner_pb2.PolicyGraphs:
        """The ``PolicyGraphs`` message.

        Raises:
            ValueError: If the policy cannot be exported with its parameters as inputs.
        """
        with self._lock:
            if self._message is None:
                start = time.monotonic()
                graphs = training_graphs(self._channel, self._spec)
                self._message = graphs.to_proto()
                log.info(
                    "exported agent %d's policy graphs for the onnx runtime in %.2fs (%d bytes)",
                    self._spec.agent_index,
                    time.monotonic() - start,
                    self._message.ByteSize(),
                )
            return self._message

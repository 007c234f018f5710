"""The torch runtime takes read-only arrays (zero-copy wire decodes) without PyTorch's non-writable warning.

``marlmesh.tensors.decode`` returns read-only views over the message bytes; ``torch.from_numpy`` on such an
array warns once per process and aliases memory torch may write. Every stage of the agent's torch path must
hand the policy tensors that own writable memory.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from marlmesh import plugins, tensors
from marlmesh.bench.edge import decide
from marlmesh.config import load_config
from marlmesh.deploy.export import policy_specs
from marlmesh.policies.torch_runtime import TorchRuntime


def _wire(array: np.ndarray) -> np.ndarray:
    """``array`` after a trip over the wire: a read-only view over the message bytes."""
    out = tensors.decode(tensors.encode(array))
    assert not out.flags.writeable
    return out


class _Recording:
    """Delegates to a staged policy and records the address of every numpy-backed tensor it is given."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self.pointers: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def _note(self, *items: Any) -> None:
        for item in items:
            if isinstance(item, (tuple, list)):
                self._note(*item)
            elif hasattr(item, "data_ptr"):
                self.pointers.append(item.data_ptr())

    def encode(self, obs: Any) -> Any:
        self._note(obs)
        return self._policy.encode(obs)

    def round(self, k: int, state: Any, inbox: Any) -> Any:
        self._note(inbox)
        return self._policy.round(k, state, inbox)

    def act(self, state: Any, inboxes: Any) -> Any:
        self._note(inboxes)
        return self._policy.act(state, inboxes)


@pytest.mark.parametrize("channel", ["broadcast", "dgat"])
def test_agent_stages_accept_wire_arrays_without_the_non_writable_warning(channel: str) -> None:
    config = load_config(None, [f"channel.name={channel}", "channel.message_dim=8"])
    spec = policy_specs(config)[0]
    policy = _Recording(plugins.load("channels", channel)(config.channel).build_policy(spec))
    runtime = TorchRuntime(policy)
    rng = np.random.default_rng(0)
    batch = 4
    obs = _wire(rng.normal(size=(batch, *spec.obs_shape)).astype(np.float32))
    inbox = (
        _wire(rng.normal(size=(batch, spec.num_agents, spec.message_dim)).astype(np.float32)),
        _wire(np.ones((batch, spec.num_agents), np.float32)),
    )
    read_only = [a.__array_interface__["data"][0] for a in (obs, *inbox)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning fires once per process: also check the memory below
        action, logp = decide(runtime, obs, inbox, deterministic=False)
    assert action.shape[0] == batch and logp.shape == (batch,)
    assert policy.pointers, "the recording policy saw no tensors: the check below would prove nothing"
    assert not set(policy.pointers) & set(read_only), "a torch tensor aliases a read-only wire array"

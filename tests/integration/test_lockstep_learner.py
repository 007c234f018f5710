"""Lockstep against a real learner over gRPC: after fragment k the agent gets exactly version k."""

import threading

import pytest

from agent_service.learner_link import LearnerLink
from agent_service.weight_sync import LockstepWeights
from tests.integration.test_fragment_accounting import _fragment, start_learner

pytestmark = pytest.mark.integration


def test_each_pushed_fragment_is_trained_in_order_and_its_version_comes_back():
    node, stop, server = start_learner()
    trainer = threading.Thread(target=lambda: [node.train_next(0.2) for _ in iter(stop.is_set, True)], daemon=True)
    trainer.start()
    link = LearnerLink(f"127.0.0.1:{server.port}", 0, timeout_s=5, max_message_bytes=1 << 20)
    sync = LockstepWeights(link, end_tick=12, timeout_s=10.0)
    try:
        assert link.wait_first_weights(10.0)
        have = link.newer_weights(-1)[0]
        seen = []
        for _ in range(5):
            link.push(_fragment(version=have))
            have = sync.after_push(have)[0]
            seen.append(have)
        status = node.status()
    finally:
        stop.set()
        link.close()
        node.close()
        trainer.join(2.0)
        server.stop(0.2)
    assert seen == [1, 2, 3, 4, 5]
    assert status["fragments_trained"] == status["fragments_received"] == 5
    assert status["fragments_dropped"] == {} and link.fragments_dropped == {}
    assert status["last_losses"]["policy_lag"] == 0  # synchronous on-policy: fragment k collected by version k-1

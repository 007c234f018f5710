from marlmesh.bench.soak import MemorySampler, fragment_accounting


def test_accounting_pairs_agent_and_learner_counters():
    summary = {
        "restarts": {"agent-0": 0, "learner-0": 0},
        "agents": [
            {
                "fragments_created": 10,
                "fragments_sent": 7,
                "fragments_dropped": {"agent_queue_full": 1, "rejected": 1, "unsent_at_close": 1},
            }
        ],
        "learners": [
            {
                "fragments_received": 8,
                "fragments_trained": 5,
                "fragments_dropped": {"superseded": 1, "shutdown": 1, "invalid": 1},
            }
        ],
    }
    acc = fragment_accounting(summary)
    assert acc["trained"] == 5 and acc["dropped_total"] == 5 and acc["unaccounted"] == 0
    assert acc["refused_by_learners"] == {"invalid": 1} and acc["complete"]
    assert acc["dropped"] == {
        "agent:agent_queue_full": 1,
        "agent:rejected": 1,
        "agent:unsent_at_close": 1,
        "learner:shutdown": 1,
        "learner:superseded": 1,
    }


def test_memory_growth_uses_the_last_incarnation_after_warmup():
    s = MemorySampler()
    mb = 2**20
    for t, rss in enumerate([50, 90, 100, 100, 100, 105, 105, 105]):
        s.samples["agent-0"].append((float(t), 11, rss * mb))
    s.samples["learner-0"] += [(0.0, 1, 500 * mb), (1.0, 2, 80 * mb), (2.0, 2, 80 * mb)]
    rep = s.report(warmup_s=2.0)
    assert rep["agent-0"]["rss_after_warmup_mb"] == 100.0 and rep["agent-0"]["rss_end_mb"] == 105.0
    assert rep["agent-0"]["growth_after_warmup_pct"] == 5.0
    assert rep["learner-0"]["pid"] == 2 and rep["learner-0"]["samples"] == 2


def test_accounting_counts_what_killed_incarnations_held_from_their_ledgers():
    # agent 0's first incarnation: 9 created = 5 sent + 1 push_failed + 1 push in flight (the learner got it)
    # + 2 still queued (lost); learner 0's first: 6 received = 4 trained + 1 superseded + 1 queued (lost)
    killed_agent = {"fragments_created": 9, "fragments_sent": 5, "fragments_dropped": {"push_failed": 1}}
    killed_learner = {"fragments_received": 6, "fragments_trained": 4, "fragments_dropped": {"superseded": 1}}
    summary = {
        "restarts": {"env": 1, "agent-0": 1, "learner-0": 1},
        "agents": [
            {
                "role": "agent",
                "agent_id": 0,
                "fragments_created": 4,
                "fragments_sent": 4,
                "fragments_dropped": {},
                "earlier_incarnations": [{**killed_agent, "fragments_in_flight": 1}],
            }
        ],
        "learners": [
            {
                "role": "learner",
                "agent_id": 0,
                "fragments_received": 4,
                "fragments_trained": 4,
                "fragments_dropped": {},
                "earlier_incarnations": [killed_learner],
            }
        ],
    }
    acc = fragment_accounting(summary)
    assert acc["created"] == 13 and acc["trained"] == 8 and acc["received_by_learners"] == 10
    assert acc["dropped"] == {
        "agent:lost_in_kill": 2,
        "agent:push_failed": 1,
        "learner:lost_in_kill": 1,
        "learner:superseded": 1,
    }
    assert acc["unaccounted"] == 0 and acc["in_flight_at_kill"] == 1 and acc["complete"]


def test_accounting_is_incomplete_when_a_restarted_process_left_no_ledger():
    summary = {
        "restarts": {"agent-0": 1},
        "agents": [{"role": "agent", "agent_id": 0, "fragments_created": 2, "fragments_sent": 2}],
        "learners": [],
    }
    assert not fragment_accounting(summary)["complete"]

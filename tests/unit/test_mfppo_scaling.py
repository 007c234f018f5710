"""mfppo's message cost per agent does not grow with the team: N=4 vs N=8 on real buses (ZeroMQ, 127.0.0.1).

A mean-field message is one fixed-size summary per env copy whatever N is. On a radio (``shared_medium``: one
transmission reaches every neighbour) the bytes an agent sends per step are therefore the same at N=4 and
N=8; on unicast links the bytes *per message* are the same and only the number of receivers grows.
"""

import numpy as np
import torch
import zmq
from prometheus_client import CollectorRegistry

from comm_bus.bus import Bus, local_buses
from comm_bus.metrics import BusMetrics
from marlmesh import plugins
from marlmesh.centralized.joint_env import JointEnv
from marlmesh.config import load_config

STEPS, B = 5, 3


def _bus_totals(n, *overrides):
    config = load_config(
        None,
        [f"env.kwargs.N={n}", f"env.num_envs={B}", "algo.name=mfppo", "channel.name=meanfield", *overrides],
    )
    env = JointEnv(config, seed=0, num_envs=B)  # the real observations of simple_spread with N agents
    channel = plugins.load("channels", "meanfield")(config.channel)
    policy = channel.build_policy(env.specs[0])  # homogeneous agents: one policy encodes every agent's own obs
    ctx, metrics = zmq.Context(), BusMetrics(CollectorRegistry())
    buses = local_buses(n, lambda i, addressing: Bus(i, n, addressing, config=config.bus, metrics=metrics, context=ctx))
    try:
        for tick in range(STEPS):
            for i, bus in enumerate(buses):
                with torch.no_grad():
                    _, outbox = policy.encode(torch.from_numpy(env.views[i].obs))
                bus.send(
                    tick=tick,
                    round=0,
                    channel="meanfield",
                    payload=channel.payload(outbox.numpy()),
                    peers=range(n),
                    positions=env.views[i].positions,
                )
            for i, bus in enumerate(buses):
                got = bus.collect(tick=tick, round=0, channel="meanfield", expected=range(n), timeout_s=10)
                assert sorted(got) == [j for j in range(n) if j != i]
            env.step([np.zeros(B, np.int64) for _ in range(n)])
        return [b.totals for b in buses], env.specs[0].obs_dim
    finally:
        for b in buses:
            b.close()
        env.close()


def test_bytes_sent_per_agent_per_step_do_not_grow_with_n_on_a_radio():
    per_agent_step = {}
    for n in (4, 8):
        totals, obs_dim = _bus_totals(n, "bus.links.shared_medium=true")
        per_agent_step[n] = {t.bytes_sent / STEPS for t in totals}
        assert len(per_agent_step[n]) == 1  # every agent sends the same
        assert obs_dim == 6 * n  # the observation grows with N, the message does not
    assert per_agent_step[4] == per_agent_step[8] == {B * (16 * 4 + 32)}  # B rows of 16 floats + header


def test_bytes_per_message_do_not_grow_with_n_on_unicast_links():
    per_message = {}
    for n in (4, 8):
        totals, _ = _bus_totals(n, "bus.links.default.latency_ms=1")
        per_message[n] = {t.bytes_sent / t.messages_sent for t in totals}
        assert {t.messages_sent for t in totals} == {STEPS * B * (n - 1)}  # one message per receiver
    assert per_message[4] == per_message[8] == {16 * 4 + 32}

"""Every built-in channel passes the channel conformance suite (marlmesh.testing.channels), through both
exchanges: the in-process one and buses on real ZeroMQ sockets on 127.0.0.1."""

import pytest
from prometheus_client import CollectorRegistry

from comm_bus.bus import Bus, local_buses
from comm_bus.exchange import BusExchange
from comm_bus.metrics import BusMetrics
from marlmesh import plugins
from marlmesh.config import BusConfig, ChannelConfig
from marlmesh.testing.channels import CHECKS, check_replay_identical, local_exchange_factory

BUILTIN = {
    "none": {},
    "broadcast": {},
    "dgat-1hop": {"name": "dgat", "dgat": {"hops": 1}},
    "dgat": {"name": "dgat"},
    "dgat-3hops": {"name": "dgat", "dgat": {"hops": 3}},
    "meanfield": {"name": "meanfield"},
    "meanfield-action": {"name": "meanfield", "meanfield": {"summary": "action"}},
    "blackboard": {"name": "blackboard", "blackboard": {"threshold_init": 0.3}},
}


def zmq_exchange(num_agents: int, rounds: int) -> BusExchange:
    """Every agent's bus in this process, on its own ZeroMQ sockets (ideal links, sim clock)."""
    metrics = BusMetrics(CollectorRegistry())
    buses = local_buses(
        num_agents,
        lambda i, addressing: Bus(i, num_agents, addressing, config=BusConfig(), rounds=rounds, metrics=metrics),
    )
    return BusExchange(dict(enumerate(buses)))


EXCHANGES = {"inprocess": local_exchange_factory, "zmq": zmq_exchange}


def _factory(case: str):
    cfg = ChannelConfig(**{"name": case, "message_dim": 8, **BUILTIN[case]})
    cls = plugins.load("channels", cfg.name)
    return lambda: cls(cfg)


def test_every_installed_builtin_is_covered():
    names = {ChannelConfig(**{"name": c, **BUILTIN[c]}).name for c in BUILTIN}
    assert {"none", "broadcast", "dgat", "meanfield"} <= names <= set(plugins.installed("channels"))


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
@pytest.mark.parametrize("case", sorted(BUILTIN))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_channel_conformance(case, check, exchange):
    check(_factory(case), exchange=EXCHANGES[exchange])


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
@pytest.mark.parametrize("case", sorted(BUILTIN))
def test_replay_identical_box_actions(case, exchange):
    check_replay_identical(_factory(case), action="box", exchange=EXCHANGES[exchange])

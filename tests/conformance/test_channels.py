"""Every built-in channel passes the channel conformance suite (marlmesh.testing.channels)."""

import pytest

from marlmesh import plugins
from marlmesh.config import ChannelConfig
from marlmesh.testing.channels import CHECKS, check_replay_identical

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


def _factory(case: str):
    cfg = ChannelConfig(**{"name": case, "message_dim": 8, **BUILTIN[case]})
    cls = plugins.load("channels", cfg.name)
    return lambda: cls(cfg)


def test_every_installed_builtin_is_covered():
    names = {ChannelConfig(**{"name": c, **BUILTIN[c]}).name for c in BUILTIN}
    assert {"none", "broadcast", "dgat", "meanfield"} <= names <= set(plugins.installed("channels"))


@pytest.mark.parametrize("case", sorted(BUILTIN))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_channel_conformance(case, check):
    check(_factory(case))


@pytest.mark.parametrize("case", sorted(BUILTIN))
def test_replay_identical_box_actions(case):
    check_replay_identical(_factory(case), action="box")

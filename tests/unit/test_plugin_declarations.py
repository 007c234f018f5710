"""Plugins declare what their role needs (marlmesh.interfaces); the loader refuses one that does not."""

import pytest

from marlmesh import plugins
from marlmesh.interfaces import Channel, GatedChannel


class UndeclaredAlgo:
    """An algorithm written before ``centralized`` was part of the Algo protocol."""

    name = "undeclared"
    required_channel = None

    def build_learner(self, config: object, spec: object, channel: object) -> object:
        raise NotImplementedError


@pytest.mark.parametrize("kind", ["channels", "links", "algos"])
def test_every_installed_plugin_declares_its_role(kind: str) -> None:
    for name in plugins.installed(kind):
        obj = plugins.load(kind, name)
        for attr in plugins.DECLARED[kind]:
            assert hasattr(obj, attr), f"{kind} {name} lacks {attr}"


def test_only_mappo_central_is_centralized() -> None:
    centralized = {n for n in plugins.installed("algos") if plugins.load("algos", n).centralized}
    assert centralized == {"mappo-central"}


def test_gated_channels_send_rows_and_the_others_do_not_claim_to() -> None:
    from marlmesh.config import ChannelConfig

    for name in plugins.installed("channels"):
        channel = plugins.load("channels", name)(ChannelConfig(name=name))
        assert isinstance(channel, Channel)
        assert isinstance(channel, GatedChannel) == channel.gated, name
    assert plugins.load("channels", "blackboard").gated


def test_an_undeclared_capability_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "installed", lambda kind: {"undeclared": f"{__name__}:UndeclaredAlgo"})
    with pytest.raises(plugins.PluginError, match=r"does not declare centralized .*marlmesh\.interfaces\.Algo"):
        plugins.load("algos", "undeclared")

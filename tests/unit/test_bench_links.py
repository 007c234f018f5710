"""``marlmesh bench links``: the cells it compares differ only in their links."""

import argparse

import pytest

from marlmesh.bench import links
from marlmesh.config import ConfigError


def _ns(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    links.add_arguments(p)
    return p.parse_args(list(argv))


def test_cells_are_ideal_saturated_with_the_default_limit_and_saturated_unbounded():
    cells = links.cell_configs(_ns("--set", "env.num_envs=4"))
    assert list(cells) == ["ideal", "saturated", "saturated_unbounded"]
    ideal, saturated, unbounded = (cells[k].bus.links for k in cells)
    assert ideal.resolved_model() == "ideal" and ideal.default.rate_bps is None
    assert saturated.resolved_model() == "netem" and saturated.default.rate_bps == 1000
    assert saturated.default.queue_limit == 1000 and unbounded.default.queue_limit is None
    assert unbounded.default.model_copy(update={"queue_limit": 1000}) == saturated.default
    assert all(c.env.num_envs == 4 and c.train.weight_sync == "lockstep" for c in cells.values())
    with pytest.raises(ConfigError, match="--fragments"):
        links.cell_configs(_ns("--fragments", "0"))

"""The progress line's estimate: whichever of the step budget and the wall-clock budget ends the run first."""

import math

from marlmesh.launch.progress import progress


def test_step_budget_when_it_comes_first():
    left, share = progress(steps=1_000, total=4_000, elapsed=10.0, max_wall_seconds=None)
    assert left == 30.0 and share == 25


def test_wall_clock_budget_when_it_comes_first():
    left, share = progress(steps=60_000, total=20_000_000, elapsed=30.0, max_wall_seconds=1800.0)
    assert left == 1770.0 and share == 1  # not the ~2.8 hours the step budget alone would take
    left, share = progress(steps=3_600_000, total=20_000_000, elapsed=1800.0, max_wall_seconds=1800.0)
    assert left == 0.0 and share == 100


def test_before_the_first_step():
    left, share = progress(steps=0, total=100, elapsed=0.0, max_wall_seconds=None)
    assert math.isnan(left) and share == 0
    left, share = progress(steps=0, total=100, elapsed=0.0, max_wall_seconds=60.0)
    assert left == 60.0 and share == 0

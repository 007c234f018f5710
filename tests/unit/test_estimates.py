"""The IQM and its bootstrap interval (rliable) that sweep reports use."""

import math

import numpy as np
import pytest

from marlmesh.experiments.estimates import iqm_interval


def test_iqm_discards_the_outer_quartiles():
    est = iqm_interval([-100.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 1000.0])
    assert est.iqm == pytest.approx(2.5) and est.runs == 8
    assert est.low <= est.iqm <= est.high
    assert -100.0 < est.low and est.high < 1000.0  # an outlier seed does not set the bounds


def test_interval_is_reproducible_and_narrows_with_agreeing_seeds():
    scores = [-52.0, -50.0, -49.5, -51.0, -48.0]
    first = iqm_interval(scores)
    np.random.seed(123)  # rliable resamples with numpy's global generator: the interval must not depend on it
    state = np.random.get_state()
    assert iqm_interval(scores) == first
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # and the caller's generator is left alone
    wide = iqm_interval([-60.0, -50.0, -40.0])
    narrow = iqm_interval([-50.5, -50.0, -49.5])
    assert (narrow.high - narrow.low) < (wide.high - wide.low)
    assert str(narrow).startswith("-50.00 [")


def test_one_seed_is_its_own_value_and_bad_scores_are_refused():
    one = iqm_interval([-7.25])
    assert (one.iqm, one.low, one.high, one.runs) == (-7.25, -7.25, -7.25, 1) and str(one) == "-7.25"
    with pytest.raises(ValueError, match="finite"):
        iqm_interval([])
    with pytest.raises(ValueError, match="finite"):
        iqm_interval([1.0, math.nan])

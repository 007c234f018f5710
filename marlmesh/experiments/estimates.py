"""Scores over seeds as the MARL evaluation protocol aggregates them: the IQM and its bootstrap interval.

The interquartile mean (IQM) and its stratified bootstrap confidence interval are both computed by ``rliable``
(the ``analysis`` extra).

A cell group's scores are one value per independent run (seed), e.g. the mean evaluation return of each seed.
The IQM discards the bottom and top 25 % of the runs and averages the rest, so with 3 or fewer runs it is their
mean; the interval is the percentile bootstrap over runs (rliable's ``get_interval_estimates``, one task, so
"stratified" is per task). With one run the interval is that run's value alone: one seed carries no spread.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_REPS = 2000
"""Bootstrap resamples per interval: rliable's examples use 2,000 (its default is 50,000, about 0.5 ms each
here, so 25 s per cell group); with 3-10 seeds the 95 % bounds move by far less than the seed spread."""

CONFIDENCE = 0.95
"""Confidence level of the intervals."""


@dataclass(frozen=True)
class Interval:
    """An IQM over runs and its confidence interval.

    Attributes:
        iqm: Interquartile mean of the runs' scores.
        low: Lower bound of the ``CONFIDENCE`` interval.
        high: Upper bound.
        runs: Number of runs (seeds) it aggregates.
    """

    iqm: float
    low: float
    high: float
    runs: int

    def __str__(self) -> str:
        if self.runs == 1:
            return f"{self.iqm:.2f}"
        return f"{self.iqm:.2f} [{self.low:.2f}, {self.high:.2f}]"


def iqm_interval(scores: Sequence[float], seed: int = 0) -> Interval:
    """IQM and stratified bootstrap confidence interval of one score per run.

    Args:
        scores: One finite value per run.
        seed: Seed of the bootstrap (the same scores always give the same interval).

    Raises:
        ValueError: If ``scores`` is empty or not finite.
        ImportError: If rliable (the ``analysis`` extra) is not installed.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"an interval needs one or more finite scores, got {list(scores)}")
    if values.size == 1:
        v = float(values[0])
        return Interval(v, v, v, 1)
    try:
        from rliable import library, metrics
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(f"confidence intervals need rliable: pip install 'marlmesh[analysis]' ({exc})") from None
    # rliable's StratifiedBootstrap draws its resamples from numpy's global generator (update_indices calls
    # np.random.choice), whatever random_state says: seed that generator for the call, then restore it.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch's notice about RandomState, which rliable passes
            point, interval = library.get_interval_estimates(
                {"runs": values.reshape(-1, 1)},
                lambda x: np.array([metrics.aggregate_iqm(x)]),
                reps=BOOTSTRAP_REPS,
                confidence_interval_size=CONFIDENCE,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(saved)
    return Interval(float(point["runs"][0]), float(interval["runs"][0, 0]), float(interval["runs"][1, 0]), len(values))

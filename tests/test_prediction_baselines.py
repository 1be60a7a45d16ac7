"""The median-of-the-last-32 baseline: robust to an outlier execution and follows a change of level."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.prediction.baselines import BASELINES, CategoryMean, CategoryMedian
from orchestrator.prediction.features import Execution
from orchestrator.prediction.history_arrays import HistoryArrays, Query


def _history(runtimes):
    return HistoryArrays.from_executions([Execution("c", float(r), 1.0, 1e9, 1e6, None) for r in runtimes])


def test_median_of_the_last_32_ignores_an_outlier_and_follows_a_change():
    q = Query(float(np.log1p(1e6)))
    outlier = _history([10.0] * 20 + [1000.0])
    med = CategoryMedian().predict(outlier, q)
    assert med[0, 1] == pytest.approx(10.0, rel=1e-6)
    assert CategoryMean().predict(outlier, q)[0, 1] > 50  # the mean is pulled far off by one run
    shifted = _history([100.0] * 100 + [10.0] * 32)  # the category became ten times faster
    assert CategoryMedian().predict(shifted, q)[0, 1] == pytest.approx(10.0, rel=1e-6)
    p = CategoryMedian().predict(_history(np.linspace(5, 15, 32)), q)
    assert p[0, 0] <= p[0, 1] <= p[0, 2]  # a band around the median
    assert "category-median-32" in BASELINES


def test_the_conformal_band_covers_the_methods_own_errors():
    """A category whose runtimes drift: the plain band (the spread of the last 32) is narrow and misses; the
    conformal band (ratios of each execution to the median before it) covers the next execution more often."""
    from orchestrator.prediction.baselines import CategoryMedianConformal

    rng = np.random.default_rng(3)
    runtimes = 10.0 * np.exp(np.cumsum(rng.normal(0, 0.15, 400)))  # a random walk of the log runtime
    q = Query(float(np.log1p(1e6)))
    hit_plain = hit_conformal = 0
    for t in range(100, 400):
        h = _history(runtimes[:t])
        plain = CategoryMedian().predict(h, q)[0]
        conf = CategoryMedianConformal().predict(h, q)[0]
        assert conf[1] == pytest.approx(plain[1])  # the same median
        hit_plain += plain[0] <= runtimes[t] <= plain[2]
        hit_conformal += conf[0] <= runtimes[t] <= conf[2]
    assert hit_conformal / 300 >= 0.7 and hit_conformal > hit_plain

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

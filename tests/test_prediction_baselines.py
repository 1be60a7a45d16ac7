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


def test_conformal_bands_cover_new_errors_and_follow_each_categorys_spread():
    """Bands fitted on one sample of a method's errors cover about 80% of a fresh sample; a category whose
    history agrees gets a narrower band than a noisy one (errors are scaled by the history's spread)."""
    from orchestrator.prediction.calibration import ConformalBands, contexts

    rng = np.random.default_rng(3)

    def sample(n):
        hs, truth, preds = [], [], []
        for i in range(n):
            sigma = 0.05 if i % 2 else 0.6  # a tight and a noisy category
            runs = 20.0 * np.exp(rng.normal(0, sigma, 12))
            hs.append(_history(runs))
            truth.append([20.0 * np.exp(rng.normal(0, sigma)), np.nan, np.nan])
            preds.append(np.tile(np.array([[np.nan, float(np.median(runs)), np.nan]]), (3, 1)))
        return hs, np.array(truth), np.array(preds)

    hs, truth, preds = sample(2000)
    spreads, groups = contexts(hs)
    bands = ConformalBands.fit(preds, truth, spreads, groups, (0.1, 0.5, 0.9))
    assert set(bands.table) == {"0"}  # cpu and memory unknown: no band for them
    hs2, truth2, preds2 = sample(2000)
    s2, g2 = contexts(hs2)
    out = bands.apply(preds2, s2, g2)
    inside = (truth2[:, 0] >= out[:, 0, 0]) & (truth2[:, 0] <= out[:, 0, 2])
    assert 0.76 <= inside.mean() <= 0.84, inside.mean()
    width = (out[:, 0, 2] - out[:, 0, 0]) / out[:, 0, 1]
    assert np.median(width[1::2]) < 0.5 * np.median(width[0::2])
    assert (out[:, 0, 0] <= out[:, 0, 1]).all() and (out[:, 0, 1] <= out[:, 0, 2]).all()
    assert ConformalBands.from_dict(bands.to_dict()) == bands


def test_unseen_family_scale_widens_only_unseen_rows_and_is_found_by_coverage():
    from orchestrator.prediction.calibration import ConformalBands, scale_for_coverage

    rng = np.random.default_rng(5)
    n = 3000
    preds = np.ones((n, 3, 3)) * 10.0
    truth = np.full((n, 3), np.nan)
    truth[:, 0] = 10.0 * np.exp(rng.normal(0, 1.0, n))  # errors twice as wide as the band was fitted for
    spreads, groups = np.ones((n, 3)), ["many"] * n
    bands = ConformalBands(0.1, 0.9, {"0": {"*": (-0.64, 0.64)}})  # the 10/90% points of N(0, 0.5)
    scale = scale_for_coverage(bands, preds, truth, spreads, groups, 0, 0.8)
    assert 1.8 <= scale <= 2.2
    bands.unseen_scale = {"0": scale}
    unseen = np.arange(n) % 2 == 0
    out = bands.apply(preds, spreads, groups, unseen)
    inside = (truth[:, 0] >= out[:, 0, 0]) & (truth[:, 0] <= out[:, 0, 2])
    assert 0.76 <= inside[unseen].mean() <= 0.84 and inside[~unseen].mean() < 0.55
    assert ConformalBands.from_dict(bands.to_dict()) == bands

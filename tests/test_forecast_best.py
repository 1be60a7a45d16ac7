"""`Forecaster.forecast_best` (online-best, what capacity planning ships): it picks the candidate with the least
backtest error over the series' last day (checked against a computation written here, one origin at a time), its
p10/p90 band covers about 80% of outcomes, and a series too short to backtest gets the LSTM with a note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import PredictionError
from orchestrator.prediction.capacity import plan_capacity
from orchestrator.prediction.config import CapacityConfig, load_config
from orchestrator.prediction.forecaster import Forecaster, Normaliser, fit_smoothing, min_history
from orchestrator.prediction.node_types import NodeType
from orchestrator.prediction.online_selection import MIN_BACKTEST_ORIGINS
from orchestrator.prediction.series import load_series
from orchestrator.resources import series_dir

SERIES = series_dir()


@pytest.fixture(scope="module")
def forecaster() -> Forecaster:
    cfg = load_config()
    f, _ = Forecaster.load(cfg.models_path("forecaster"), "latest")
    return f


def _series(values: np.ndarray) -> pd.Series:
    return pd.Series(values, index=pd.date_range("2026-03-02", periods=len(values), freq="5min"), name="value")


def level_shifts(n: int = 3 * 288, seed: int = 3) -> pd.Series:
    """A level that jumps every 25 to 60 min, little noise: the last value (smoothing with alpha near 1) is
    right almost at once after a jump; the hour's mean and a model of the daily shape lag behind."""
    rng = np.random.default_rng(seed)
    x, level = [], 50.0
    while len(x) < n:
        level = float(np.clip(level + rng.choice([-1, 1]) * rng.uniform(15, 30), 5, 95))
        x += [level] * int(rng.integers(5, 13))
    return _series(np.asarray(x[:n]) + rng.normal(0, 0.2, n))


def daily(n: int = 4 * 288, noise: float = 1.0, seed: int = 4) -> pd.Series:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return _series(np.maximum(30 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, noise, n), 0.0))


def backtest_by_hand(forecaster: Forecaster, series: pd.Series) -> dict[str, float]:
    """Mean absolute error of each candidate over the last day of forecasts whose whole hour was observed (the
    LSTM's forecasts are the model's; the window, the baselines and the errors are computed here)."""
    cfg = forecaster.cfg
    x = series.to_numpy(dtype=np.float64)
    n, h = len(x), cfg.horizon
    past = list(range(max(min_history(cfg), n - h - cfg.season + 1), n - h + 1))
    assert len(past) == min(cfg.season, n - h - min_history(cfg) + 1)
    lstm = forecaster.forecast_at(series, past, Normaliser.fit(x))
    alpha = fit_smoothing(x)
    levels = [x[0]]  # levels[p]: smoothing's level after x[:p]
    for v in x:
        levels.append(levels[-1] + alpha * (v - levels[-1]))
    errors: dict[str, list[float]] = {"lstm": [], "exp-smoothing": [], "rolling-mean-1h": []}
    for p, f in zip(past, lstm):
        truth = x[p:p + h]
        for method, forecast in (("lstm", f.quantile(0.5)), ("exp-smoothing", levels[p]),
                                 ("rolling-mean-1h", x[p - 12:p].mean())):
            errors[method].append(float(np.mean(np.abs(truth - forecast))))
    return {m: float(np.mean(e)) for m, e in errors.items()}


def business_hours(n: int = 4 * 288, seed: int = 6) -> pd.Series:
    """Busy from 9:00 to 18:00 every day: the jumps come at the same time each day, which a model reading the
    same time yesterday can see coming and a flat forecast cannot."""
    rng = np.random.default_rng(seed)
    hour = (np.arange(n) % 288) / 12
    return _series(np.where((hour >= 9) & (hour < 18), 60.0, 10.0) + rng.normal(0, 1.0, n))


def test_a_series_where_smoothing_obviously_wins_picks_smoothing(forecaster):
    s = level_shifts()
    by_hand = backtest_by_hand(forecaster, s)
    fc = forecaster.forecast_best(s)
    assert fc.backtest == pytest.approx(by_hand, rel=1e-4)
    assert fc.method == "exp-smoothing" == min(by_hand, key=by_hand.get)
    assert by_hand["exp-smoothing"] < 0.8 * min(by_hand["lstm"], by_hand["rolling-mean-1h"])  # obviously
    assert np.allclose(fc.values[:, 1], fc.values[0, 1])  # smoothing's forecast is flat
    assert np.all(fc.values[:, 0] <= fc.values[:, 1]) and np.all(fc.values[:, 1] <= fc.values[:, 2])


@pytest.mark.parametrize("name", ["daily", "business-hours", "ec2_cpu_utilization_53ea38"])
def test_a_seasonal_series_picks_whichever_backtests_best(forecaster, name):
    """On the synthetic daily shapes the bundled LSTM (trained on the EC2 series) errs more than smoothing; on the
    bundled EC2 series 53ea38 it errs least, and its pick is exactly the conformal LSTM forecast."""
    s = {"daily": daily, "business-hours": business_hours}.get(name, lambda: load_series(SERIES / f"{name}.csv"))()
    by_hand = backtest_by_hand(forecaster, s)
    fc = forecaster.forecast_best(s)
    assert fc.backtest == pytest.approx(by_hand, rel=1e-4)
    assert fc.method == min(by_hand, key=by_hand.get)
    if fc.method == "lstm":
        conf = forecaster.forecast_conformal(s)
        np.testing.assert_array_equal(fc.values, conf.values)
        assert fc.levels == conf.levels
    if name.startswith("ec2"):
        assert fc.method == "lstm"


def test_band_covers_near_the_nominal_80_percent(forecaster):
    """Forecasts made at 60 origins one hour apart on noise around a level, each from the series up to that origin
    only. (Where the chosen method's errors depend on the time of day, e.g. smoothing on a daily sine, the band
    from the whole last day covers less: 0.74 on `daily`.)"""
    s = _series(np.random.default_rng(5).normal(40, 3, 4 * 288))
    x = s.to_numpy()
    hits = []
    for o in range(len(x) - 60 * 12, len(x), 12):
        fc = forecaster.forecast_best(s.iloc[:o])
        truth = x[o:o + 12]
        hits += list((truth >= fc.quantile(0.1)) & (truth <= fc.quantile(0.9)))
    assert abs(np.mean(hits) - 0.8) < 0.05, np.mean(hits)


def test_a_series_too_short_to_backtest_gets_the_lstm_with_a_note(forecaster):
    cfg = forecaster.cfg
    s = daily()
    enough = min_history(cfg) + cfg.horizon + MIN_BACKTEST_ORIGINS - 1
    short = s.iloc[:enough - 1]
    fc = forecaster.forecast_best(short)
    assert fc.method == "lstm" and fc.backtest == {} and "too short to backtest" in fc.note
    np.testing.assert_array_equal(fc.values, forecaster.forecast(short).values)
    assert forecaster.forecast_best(s.iloc[:enough]).backtest  # one point more: a choice
    with pytest.raises(PredictionError, match="at least"):
        forecaster.forecast_best(s.iloc[:min_history(cfg) - 1])


def test_the_capacity_plan_reports_the_method_chosen(forecaster):
    fc = forecaster.forecast_best(level_shifts())
    plan = plan_capacity(fc, [NodeType(name="n", cpus=4, memory_gib=16, price_per_hour=0.2)], CapacityConfig())
    assert plan.forecast_method == fc.method == "exp-smoothing"
    assert plan.autoscaler_hint()["forecast_method"] == "exp-smoothing"

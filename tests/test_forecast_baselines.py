"""The forecaster's baselines use only the past of each origin, and the per-series comparison counts wins."""

from __future__ import annotations

import numpy as np

from orchestrator.prediction.forecast_evaluation import wins
from orchestrator.prediction.forecaster import fit_smoothing, rolling_mean_forecast, smoothing_forecast


def test_rolling_mean_is_the_mean_of_the_last_window():
    x = np.arange(20, dtype=float)
    out = rolling_mean_forecast(x, np.array([5, 10, 1]), 3, 3)
    assert out.tolist() == [[3.0] * 3, [8.0] * 3, [0.0] * 3]  # x[2:5], x[7:10], only x[0] before origin 1


def test_smoothing_sees_only_the_past_and_fits_alpha():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 1, 500)
    origins = np.array([100, 300])
    changed = x.copy()
    changed[300:] += 1000  # the future of the second origin
    a = smoothing_forecast(x, origins, 4, 0.3)
    b = smoothing_forecast(changed, origins, 4, 0.3)
    assert np.array_equal(a, b)
    assert smoothing_forecast(x, origins, 2, 1.0)[:, 0].tolist() == x[origins - 1].tolist()
    assert fit_smoothing(x) <= 0.1  # noise around a level: a long memory wins
    assert fit_smoothing(np.cumsum(rng.normal(0, 1, 500))) >= 0.7  # a random walk: the last value wins


def test_wins_counts_series_where_the_model_beats_each_baseline():
    rows = [{"eval": "e", "series": s, "method": m, "mase": v}
            for s, vals in {"a": (0.5, 1.0, 0.4), "b": (0.8, 0.9, 0.9), "c": (1.2, 1.0, 1.1)}.items()
            for m, v in zip(("lstm", "naive", "exp-smoothing"), vals)]
    rows.append({"eval": "e", "series": "ALL (mean)", "method": "lstm", "mase": 0.0})
    out = {r["baseline"]: r for r in wins(rows, "e")}
    assert out["naive"]["wins"] == 2 and out["naive"]["series"] == 3
    assert out["exp-smoothing"]["wins"] == 1
    assert out["naive"]["median_mase_model"] == 0.8 and out["naive"]["median_mase_baseline"] == 1.0


def test_gbm_change_forecaster_sees_only_the_past_and_follows_a_level_shift():
    import pandas as pd

    from orchestrator.prediction.forecast_gbm import GbmDeltaForecaster
    from orchestrator.prediction.forecaster import Normaliser, time_of_day

    rng = np.random.default_rng(1)
    index = pd.date_range("2026-01-01", periods=3000, freq="5min")
    tod = time_of_day(index)
    x = 10 + 3 * tod[:, 0] + rng.normal(0, 0.3, len(index))
    x[1500:] += 20  # a level shift
    model = GbmDeltaForecaster.fit([(x, tod, 2400)], horizon=6, season=288, quantiles=(0.1, 0.5, 0.9))
    norm = Normaliser.fit(x[:2400])
    origins = np.array([1200, 2600])
    a = model.forecast_at(x, tod, origins, norm)
    future = x.copy()
    future[2600:] = -50.0
    assert np.allclose(a, model.forecast_at(future, tod, origins, norm))  # the future is not an input
    assert a.shape == (2, 6, 3) and np.all(np.diff(a, axis=2) >= 0)  # quantiles in order
    assert abs(a[1, 0, 1] - x[2599]) < 3 and abs(a[0, 0, 1] - x[1199]) < 3  # around the current level


def test_the_conformal_band_reads_only_the_past_and_brackets_the_median():
    from orchestrator import resources
    from orchestrator.prediction.config import load_config
    from orchestrator.prediction.forecast_evaluation import conformal_band
    from orchestrator.prediction.forecaster import Forecaster, Normaliser
    from orchestrator.prediction.series import load_series

    cfg = load_config()
    forecaster, _ = Forecaster.load(cfg.models_path("forecaster"), "latest")
    fc = forecaster.cfg
    s = load_series(sorted(resources.series_dir().glob("*.csv"))[0], fc.step_minutes, fc.max_gap_steps)
    x = s.to_numpy(dtype=np.float64)
    norm = Normaliser.fit(x[: int(len(x) * fc.train_fraction)])
    origins = np.array([len(x) - 400, len(x) - 100])
    band = conformal_band(forecaster, s, origins, norm, fc)
    future = s.copy()
    future.iloc[int(origins[1]):] = future.iloc[int(origins[1]):] * 10 + 100
    again = conformal_band(forecaster, future, origins, norm, fc)
    np.testing.assert_allclose(again, band)  # nothing at or after the origins is read
    assert band.shape == (2, fc.horizon, 2) and np.all(band[:, :, 0] <= band[:, :, 1])


def test_forecast_conformal_keeps_the_median_and_widens_a_narrow_band():
    from orchestrator import resources
    from orchestrator.prediction.config import load_config
    from orchestrator.prediction.forecaster import Forecaster, min_history
    from orchestrator.prediction.series import load_series

    cfg = load_config()
    forecaster, _ = Forecaster.load(cfg.models_path("forecaster"), "latest")
    fc = forecaster.cfg
    for path in sorted(resources.series_dir().glob("*.csv")):
        s = load_series(path, fc.step_minutes, fc.max_gap_steps)
        plain, conf = forecaster.forecast(s), forecaster.forecast_conformal(s)
        np.testing.assert_array_equal(plain.values[:, 1], conf.values[:, 1])
        assert np.all(np.diff(conf.values, axis=1) >= 0) and list(conf.index) == list(plain.index)
        short = s.iloc[: min_history(fc) + 20]  # too short a past for the band: the plain forecast
        np.testing.assert_array_equal(forecaster.forecast_conformal(short).values, forecaster.forecast(short).values)

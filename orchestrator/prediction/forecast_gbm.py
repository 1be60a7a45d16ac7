"""A gradient-boosted demand forecaster (LightGBM) that predicts the change from the last value, from lags: a
level shift moves the forecast with it at once, which a model of the level learns only slowly. One model per
quantile over every horizon step (the step is a feature), trained on many series at once: each series is put on
the scale of its own training part (`Normaliser`) so series of different sizes share one model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .forecaster import Normaliser

LAGS = 12  # the last hour at 5 minutes


def _features(z: np.ndarray, origins: np.ndarray, horizon: int, season: int, tod: np.ndarray) -> np.ndarray:
    """(B * H, F) for forecasts made at `origins` (each sees z[:origin] only) for steps 0..H-1."""
    last = z[origins - 1]
    lags = np.stack([z[np.maximum(origins - 1 - k, 0)] - last for k in range(1, LAGS)], axis=1)
    c = np.concatenate([[0.0], np.cumsum(z)])
    c2 = np.concatenate([[0.0], np.cumsum(z * z)])

    def window(n: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.maximum(origins - n, 0)
        cnt = origins - lo
        mean = (c[origins] - c[lo]) / cnt
        var = np.maximum((c2[origins] - c2[lo]) / cnt - mean * mean, 0.0)
        return mean - last, np.sqrt(var)

    m1, s1 = window(LAGS)
    m6, s6 = window(6 * LAGS)
    m24, s24 = window(season)
    base = np.column_stack([last, lags, m1, s1, m6, s6, m24, s24])
    rows = []
    for h in range(horizon):
        target = origins + h
        seasonal = np.where(target - season >= 0, z[np.maximum(target - season, 0)] - last, 0.0)
        rows.append(np.column_stack([base, np.full(len(origins), h), seasonal, tod[target, 0], tod[target, 1]]))
    return np.stack(rows, axis=1).reshape(len(origins) * horizon, -1)


@dataclass
class GbmDeltaForecaster:
    horizon: int
    season: int
    quantiles: tuple[float, ...]
    models: list
    step_minutes: int = 5

    @classmethod
    def fit(cls, series: Sequence[tuple[np.ndarray, np.ndarray, int]], horizon: int, season: int,
            quantiles: Sequence[float], step_minutes: int = 5, seed: int = 0,
            max_rows: int = 200_000) -> "GbmDeltaForecaster":
        """`series`: (values, (n, 2) sin and cos of each point's time of day, n_train) each; trains on origins whose whole
        horizon lies in the first n_train points."""
        import lightgbm as lgb

        xs, ys = [], []
        for x, tod, n_train in series:
            norm = Normaliser.fit(x[:n_train])
            z = norm(x)
            origins = np.arange(LAGS + 1, n_train - horizon + 1)
            if origins.size == 0:
                continue
            xs.append(_features(z, origins, horizon, season, tod))
            ys.append((z[origins[:, None] + np.arange(horizon)[None, :]] - z[origins - 1][:, None]).reshape(-1))
        X, y = np.concatenate(xs), np.concatenate(ys)
        if len(y) > max_rows:
            keep = np.random.default_rng(seed).choice(len(y), max_rows, replace=False)
            X, y = X[keep], y[keep]
        models = []
        for q in quantiles:
            params = {"objective": "quantile", "alpha": q, "learning_rate": 0.05, "num_leaves": 31,
                      "min_data_in_leaf": 50, "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.9,
                      "seed": seed, "num_threads": 1, "verbosity": -1}
            models.append(lgb.train(params, lgb.Dataset(X, y), num_boost_round=200))
        return cls(horizon, season, tuple(quantiles), models, step_minutes)

    def forecast_at(self, x: np.ndarray, tod: np.ndarray, origins: np.ndarray, norm: Normaliser) -> np.ndarray:
        """(B, H, Q) quantiles for forecasts made at `origins`; `tod` ((n, 2) sin and cos of the time of day)
        must cover every target step."""
        z = norm(x)
        F = _features(z, origins, self.horizon, self.season, tod)
        last = z[origins - 1][:, None, None]
        q = np.stack([m.predict(F).reshape(len(origins), self.horizon) for m in self.models], axis=2)
        q = np.sort(q, axis=2)  # quantiles do not cross
        return norm.inverse(last + q)

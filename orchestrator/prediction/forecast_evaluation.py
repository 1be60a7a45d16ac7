"""Evaluation of the demand forecaster on the later part of each series (time order) and on whole held-out
series, beside the baselines it must beat: naive (last value), the mean of the last hour, simple exponential
smoothing (alpha fitted on the series' earlier part) and seasonal-naive (same time yesterday): 1 - WAPE, MASE."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .config import ForecasterConfig
from .forecaster import (
    ONLINE_CANDIDATES,
    Forecaster,
    Normaliser,
    conformal_band,
    fit_forecaster,
    fit_smoothing,
    min_history,
    naive_forecast,
    online_backtest,
    rolling_mean_forecast,
    seasonal_naive_forecast,
    smoothing_forecast,
    time_of_day,
)
from .forecast_gbm import GbmDeltaForecaster
from .metrics import accuracy, coverage, mase, naive_scale
from .online_selection import Backtest


def score_series(forecaster: Forecaster, series: pd.Series, name: str, label: str, cfg: ForecasterConfig,
                 stride: int = 1, gbm: GbmDeltaForecaster | None = None) -> list[dict]:
    """Rows (one per method) for forecasts made at every origin of the later (1 - train_fraction) part."""
    x = series.to_numpy(dtype=np.float64)
    n_train = int(len(x) * cfg.train_fraction)
    origins = np.arange(max(n_train, min_history(cfg)), len(x) - cfg.horizon + 1, stride)
    if origins.size == 0:
        return []
    truth = x[origins[:, None] + np.arange(cfg.horizon)[None, :]]
    norm = Normaliser.fit(x[:n_train])
    fc = forecaster.forecast_at(series, origins, norm)
    values = np.stack([f.values for f in fc])  # (B, H, Q)
    mid = int(np.argmin(np.abs(np.asarray(cfg.quantiles) - 0.5)))
    hour = max(1, round(60 / cfg.step_minutes))
    preds = {"lstm": values[:, :, mid], "naive": naive_forecast(x, origins, cfg.horizon),
             "rolling-mean-1h": rolling_mean_forecast(x, origins, cfg.horizon, hour),
             "exp-smoothing": smoothing_forecast(x, origins, cfg.horizon, fit_smoothing(x[:n_train])),
             "seasonal-naive": seasonal_naive_forecast(x, origins, cfg.horizon, cfg.season)}
    bands = {"lstm": values}
    conformal = conformal_band(forecaster, series, origins, norm, cfg)
    if conformal is not None:
        preds["lstm-conformal"] = values[:, :, mid]
        bands["lstm-conformal"] = conformal
    chosen = online_choice(forecaster, series, origins, norm, cfg, fit_smoothing(x[:n_train]))
    if chosen is not None:
        preds["online-best"] = chosen.point
        bands["online-best"] = chosen.band
    if gbm is not None:
        g = gbm.forecast_at(x, time_of_day(series.index), origins, norm)
        preds["gbm-delta"] = g[:, :, int(np.argmin(np.abs(np.asarray(gbm.quantiles) - 0.5)))]
        bands["gbm-delta"] = g
    scale = naive_scale(x[:n_train])
    rows = []
    for method, p in preds.items():
        band = bands.get(method)
        row = {"eval": label, "series": name, "method": method, "forecasts": int(origins.size),
               "accuracy": accuracy(truth, p), "mase": mase(truth, p, scale),
               "coverage": coverage(truth, band[:, :, 0], band[:, :, -1]) if band is not None else float("nan")}
        rows.append(row)
    return rows


def online_choice(forecaster: Forecaster, series: pd.Series, origins: np.ndarray, norm: Normaliser,
                  cfg: ForecasterConfig, alpha: float, window: int | None = None) -> Backtest | None:
    """At each origin, the forecast of whichever of the LSTM, exponential smoothing and the mean of the last hour
    had the lowest mean absolute error over the last `window` origins (a day) whose horizon was observed before
    it, with a band from that method's own errors: a per-series choice made online, from the series' past only
    (what `Forecaster.forecast_best` ships, here at every origin)."""
    return online_backtest(forecaster, series, origins, norm, cfg, ONLINE_CANDIDATES, alpha, window)


def fit_gbm(series: Sequence[pd.Series], cfg: ForecasterConfig, train_fraction: float) -> GbmDeltaForecaster:
    """The gradient-boosted change forecaster on the first `train_fraction` of each series."""
    return GbmDeltaForecaster.fit([(s.to_numpy(dtype=np.float64), time_of_day(s.index), int(len(s) * train_fraction))
                                   for s in series], cfg.horizon, cfg.season, cfg.quantiles, cfg.step_minutes,
                                  cfg.seed)


def pooled(rows: list[dict], label: str) -> list[dict]:
    """One ALL row per method: accuracy = mean over series of 1 - WAPE, MASE = mean over series."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r["eval"] == label):
        sel = [r for r in rows if r["eval"] == label and r["method"] == method]
        out.append({"eval": label, "series": "ALL (mean)", "method": method,
                    "forecasts": sum(r["forecasts"] for r in sel),
                    "accuracy": float(np.mean([r["accuracy"] for r in sel])),
                    "mase": float(np.mean([r["mase"] for r in sel])),
                    "coverage": (float(np.nanmean([r["coverage"] for r in sel]))
                                 if any(np.isfinite(r["coverage"]) for r in sel) else float("nan"))})
    return out


def wins(rows: list[dict], label: str, method: str = "lstm") -> list[dict]:
    """Per baseline: on how many series `method` has the lower MASE, and the median MASE of each (the goal is
    stated per series: beat each baseline on most of them)."""
    per_series: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["eval"] == label and r["series"] != "ALL (mean)":
            per_series.setdefault(r["series"], {})[r["method"]] = r["mase"]
    out = []
    baselines = [m for m in dict.fromkeys(k for v in per_series.values() for k in v)
                 if m != method and not m.startswith(f"{method}-")  # its own variants (same median) aside
                 and not (method == "online-best" and m == "lstm-conformal")]
    for b in baselines:
        pairs = [(v[method], v[b]) for v in per_series.values() if method in v and b in v]
        if pairs:
            out.append({"eval": label, "model": method, "baseline": b, "series": len(pairs),
                        "wins": sum(m < o for m, o in pairs), "share": sum(m < o for m, o in pairs) / len(pairs),
                        "median_mase_model": float(np.median([m for m, _ in pairs])),
                        "median_mase_baseline": float(np.median([o for _, o in pairs]))})
    return out


def evaluate_forecaster(series: dict[str, pd.Series], cfg: ForecasterConfig, held_out_series: bool = True,
                        progress: Callable[[str], None] | None = None) -> tuple[list[dict], Forecaster, dict]:
    """(a) 'later-part': one model trained on the earlier part of every series, scored on their later parts;
    (b) 'held-out-series': for each series, a model trained on the others only, scored on its later part."""
    say = progress or (lambda _m: None)
    names = list(series)
    say(f"training on the first {cfg.train_fraction:.0%} of {len(names)} series")
    forecaster, info = fit_forecaster([series[n] for n in names], cfg)
    gbm = fit_gbm([series[n] for n in names], cfg, cfg.train_fraction)
    rows: list[dict] = []
    for n in names:
        rows += score_series(forecaster, series[n], n, "later-part", cfg, gbm=gbm)
    rows += pooled(rows, "later-part")
    infos = {"later-part": info}
    if held_out_series and len(names) > 1:
        for n in names:
            say(f"held-out series: {n}")
            others = [series[m] for m in names if m != n]
            # The other series train on all of their points (their own time split is irrelevant here).
            full = cfg.model_copy(update={"train_fraction": 1.0})
            f_other, info_o = fit_forecaster(others, full)
            f_other = Forecaster(f_other.model, cfg)
            gbm_other = fit_gbm(others, cfg, 1.0)
            rows += score_series(f_other, series[n], n, "held-out-series", cfg, gbm=gbm_other)
            infos[f"held-out:{n}"] = info_o
        rows += pooled(rows, "held-out-series")
    return rows, forecaster, infos


def series_names(paths: Sequence[str]) -> list[str]:
    from pathlib import Path
    return [Path(p).stem for p in paths]

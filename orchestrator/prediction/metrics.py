"""Accuracy measures shared by the task predictor and the forecaster: WAPE, MASE, pinball loss, band coverage."""

from __future__ import annotations

import numpy as np


def wape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |y - p| / sum |y| over the finite pairs (NaN if sum |y| = 0)."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    ok = np.isfinite(actual) & np.isfinite(predicted)
    denom = np.abs(actual[ok]).sum()
    return float(np.abs(actual[ok] - predicted[ok]).sum() / denom) if denom > 0 else float("nan")


def accuracy(actual: np.ndarray, predicted: np.ndarray) -> float:
    """1 - WAPE (1 is perfect; can be negative for very bad predictions)."""
    return 1.0 - wape(actual, predicted)


def mase(actual: np.ndarray, predicted: np.ndarray, scale: float) -> float:
    """Mean absolute error divided by `scale` (the in-sample MAE of the one-step naive forecast)."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    ok = np.isfinite(actual) & np.isfinite(predicted)
    return float(np.abs(actual[ok] - predicted[ok]).mean() / scale) if scale > 0 else float("nan")


def naive_scale(train: np.ndarray, lag: int = 1) -> float:
    """In-sample MAE of the lag-`lag` naive forecast on the training part (the MASE denominator)."""
    train = np.asarray(train, dtype=float)
    return float(np.abs(train[lag:] - train[:-lag]).mean()) if train.size > lag else float("nan")


def coverage(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Share of finite actual values inside [low, high]."""
    actual, low, high = (np.asarray(a, dtype=float) for a in (actual, low, high))
    ok = np.isfinite(actual) & np.isfinite(low) & np.isfinite(high)
    return float(((actual[ok] >= low[ok]) & (actual[ok] <= high[ok])).mean()) if ok.any() else float("nan")


def pinball(actual: np.ndarray, predicted: np.ndarray, quantiles: np.ndarray) -> float:
    """Mean pinball loss; predicted (..., Q) against actual (...)."""
    actual = np.asarray(actual, dtype=float)[..., None]
    diff = actual - np.asarray(predicted, dtype=float)
    q = np.asarray(quantiles, dtype=float)
    loss = np.maximum(q * diff, (q - 1) * diff)
    return float(np.nanmean(loss)) if np.isfinite(loss).any() else float("nan")

"""Online choice between demand forecasts: at each forecast origin, backtest every candidate method over the last
day of forecasts whose horizon was already observed, pick the one that erred least, and put a conformal p10/p90
band around its forecast from its own errors over that day. Plain arrays in and out (no model, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MIN_BACKTEST_ORIGINS = 25  # fewer observed past forecasts than this: no choice and no band (about 2 h at 5 min)


def backtest_start(origins: np.ndarray, first: int, horizon: int, window: int) -> int | None:
    """The earliest past origin the backtest of forecasts made at `origins` reads (candidates must be given for
    every origin from it up to `origins.max()`), or None when the earliest origin has fewer than
    `MIN_BACKTEST_ORIGINS` past forecasts (origins >= `first`) whose whole horizon ended before it."""
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size == 0 or int(origins.min()) - horizon - first + 1 < MIN_BACKTEST_ORIGINS:
        return None
    return max(first, int(origins.min()) - horizon - window + 1)


@dataclass(frozen=True)
class Backtest:
    """For forecasts made at each of B origins: each candidate's mean absolute error over the last `window`
    past origins whose horizon was observed before it (`errors`, B x M), the candidate with the least
    (`picks`, ties to the earlier in `methods`), its forecast (`point`, B x H) and the 10th and 90th
    percentiles of its own errors per horizon step over those origins (`offsets`, B x H x 2)."""

    methods: tuple[str, ...]
    origins: np.ndarray
    errors: np.ndarray
    picks: np.ndarray
    point: np.ndarray
    offsets: np.ndarray
    past_origins: np.ndarray  # (B,) how many past forecasts each choice read

    def method(self, b: int = 0) -> str:
        return self.methods[int(self.picks[b])]

    @property
    def band(self) -> np.ndarray:
        """(B, H, 2) p10/p90: the chosen forecast plus its error percentiles, widened to contain the forecast
        and floored at 0 (usage is not negative)."""
        return band_around(self.point, self.offsets)


def band_around(point: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(..., H, 2): `point` + the error percentiles, floored at 0, the low end at most and the high end at least
    the point itself (a point forecast that erred all one way stays inside its band)."""
    lo = np.minimum(np.maximum(point + offsets[..., 0], 0.0), point)
    hi = np.maximum(np.maximum(point + offsets[..., 1], 0.0), point)
    return np.stack([lo, hi], axis=-1)


def backtest_online(x: np.ndarray, origins: np.ndarray, candidates: Mapping[str, np.ndarray], first: int,
                    horizon: int, window: int) -> Backtest | None:
    """Choose per origin among `candidates` (method -> (A, H) point forecasts made at the origins
    `backtest_start(...)` .. `origins.max()`), from the series `x` before each origin only. None when the
    earliest origin has too short a past (see `backtest_start`)."""
    origins = np.asarray(origins, dtype=np.int64)
    start = backtest_start(origins, first, horizon, window)
    if start is None:
        return None
    methods = tuple(candidates)
    preds = np.stack([np.asarray(candidates[m], dtype=np.float64) for m in methods])  # (M, A, H)
    if preds.shape[1] != int(origins.max()) - start + 1 or preds.shape[2] != horizon:
        raise ValueError(f"candidates must be ({int(origins.max()) - start + 1}, {horizon}) forecasts for origins "
                         f"{start}..{int(origins.max())}; got {preds.shape[1:]}")
    past = np.arange(start, int(origins.max()) - horizon + 1)  # origins whose horizon can have been observed
    truth = x[past[:, None] + np.arange(horizon)[None, :]]
    resid = truth[None] - preds[:, : past.size]  # (M, P, H)
    csum = np.concatenate([np.zeros((len(methods), 1)), np.cumsum(np.abs(resid).mean(axis=2), axis=1)], axis=1)
    b_count = origins.size
    errors = np.empty((b_count, len(methods)))
    picks = np.empty(b_count, dtype=np.int64)
    point = np.empty((b_count, horizon))
    offsets = np.empty((b_count, horizon, 2))
    used = np.empty(b_count, dtype=np.int64)
    for b, o in enumerate(origins):
        hi = int(o) - horizon - start + 1  # past[:hi] had their whole horizon observed before o
        lo = max(0, hi - window)
        errors[b] = (csum[:, hi] - csum[:, lo]) / (hi - lo)
        picks[b] = int(np.argmin(errors[b]))
        point[b] = preds[picks[b], int(o) - start]
        offsets[b] = np.quantile(resid[picks[b], lo:hi], [0.1, 0.9], axis=0).T
        used[b] = hi - lo
    return Backtest(methods, origins, errors, picks, point, offsets, used)

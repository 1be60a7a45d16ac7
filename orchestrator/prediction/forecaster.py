"""Cluster-demand forecasting: windows cut from regular usage series, the training loop of `DemandLSTM`, the
`Forecaster` that turns a series into quantiles for the next hour, and its naive / seasonal-naive baselines."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import PredictionError
from .checkpoints import load_checkpoint, save_checkpoint
from .config import ForecasterConfig
from .forecast_model import DemandLSTM
from .online_selection import MIN_BACKTEST_ORIGINS, Backtest, backtest_online, backtest_start, band_around
from .task_model import pinball_loss

ONLINE_CANDIDATES = ("lstm", "exp-smoothing", "rolling-mean-1h")  # what `forecast_best` chooses among


@dataclass(frozen=True)
class Normaliser:
    """z = (x - centre) / scale with a robust centre (median) and scale (mean absolute deviation)."""

    centre: float
    scale: float

    @classmethod
    def fit(cls, values: np.ndarray) -> "Normaliser":
        centre = float(np.median(values))
        scale = float(np.mean(np.abs(values - centre)))
        return cls(centre, scale if scale > 1e-9 else max(abs(centre) * 0.01, 1e-3))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.centre) / self.scale

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.scale + self.centre


def time_of_day(index: pd.DatetimeIndex) -> np.ndarray:
    """(n, 2) sin and cos of the time of day."""
    frac = (index.hour * 3600 + index.minute * 60 + index.second).to_numpy(dtype=np.float64) / 86400.0
    return np.stack([np.sin(2 * np.pi * frac), np.cos(2 * np.pi * frac)], axis=1)


def min_history(cfg: ForecasterConfig) -> int:
    """Points needed before a forecast origin: one season for the seasonal lags plus the window."""
    return cfg.season + cfg.window


def make_windows(z: np.ndarray, tod: np.ndarray, origins: np.ndarray,
                 cfg: ForecasterConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs for forecasts starting at each origin t (first predicted step t, history z[:t]).
    window (B, W, 4): z, z one season earlier, time of day; horizon (B, H, 3): z one season before the target
    step, its time of day; level (B,): the window's median, subtracted from every z so the model only sees
    the shape of the recent past, not its absolute level (series drift between training and use).
    `tod` must cover up to t + H (times are known ahead)."""
    w, h, s = cfg.window, cfg.horizon, cfg.season
    steps = origins[:, None] + np.arange(-w, 0)[None, :]
    hsteps = origins[:, None] + np.arange(h)[None, :]
    level = np.median(z[steps], axis=1)
    lv = level[:, None]
    window = np.stack([z[steps] - lv, z[steps - s] - lv, tod[steps, 0], tod[steps, 1]], axis=-1)
    horizon = np.stack([z[hsteps - s] - lv, tod[hsteps, 0], tod[hsteps, 1]], axis=-1)
    return window.astype(np.float32), horizon.astype(np.float32), level


@dataclass(frozen=True)
class SeriesSet:
    """Training windows gathered from one or more series (each normalised by its own training part)."""

    window: np.ndarray
    horizon: np.ndarray
    target: np.ndarray  # (B, H) normalised

    def __len__(self) -> int:
        return self.window.shape[0]


def _future_tod(index: pd.DatetimeIndex, extra: int, step_minutes: int) -> np.ndarray:
    step = pd.Timedelta(minutes=step_minutes)
    full = index.append(pd.DatetimeIndex([index[-1] + step * (i + 1) for i in range(extra)])) if extra else index
    return time_of_day(full)


def windows_from_series(series: pd.Series, start: int, end: int, cfg: ForecasterConfig,
                        normaliser: Normaliser, stride: int = 1) -> SeriesSet:
    """Windows whose targets lie in [start, end) (origins start..end-H)."""
    x = series.to_numpy(dtype=np.float64)
    z = normaliser(x)
    tod = time_of_day(series.index)
    first = max(start, min_history(cfg))
    origins = np.arange(first, end - cfg.horizon + 1, stride)
    if origins.size == 0:
        return SeriesSet(np.zeros((0, cfg.window, 4), np.float32), np.zeros((0, cfg.horizon, 3), np.float32),
                         np.zeros((0, cfg.horizon), np.float32))
    window, horizon, level = make_windows(z, tod, origins, cfg)
    target = (z[origins[:, None] + np.arange(cfg.horizon)[None, :]] - level[:, None]).astype(np.float32)
    return SeriesSet(window, horizon, target)


def concat(sets: Sequence[SeriesSet]) -> SeriesSet:
    return SeriesSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in ("window", "horizon", "target")))


def train_forecaster(train: SeriesSet, val: SeriesSet | None, cfg: ForecasterConfig,
                     report: Callable[[int, float, DemandLSTM], None] | None = None) -> tuple[DemandLSTM, list[float]]:
    """Adam on pinball loss over all horizon steps; the best validation epoch's weights are kept."""
    if len(train) == 0:
        raise PredictionError(f"No training windows: a series needs more than {min_history(cfg) + cfg.horizon} "
                              "points in its training part")
    torch.manual_seed(cfg.seed)
    model = DemandLSTM(cfg.horizon, cfg.hidden_size, len(cfg.quantiles))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    q = torch.tensor(cfg.quantiles, dtype=torch.float32)
    tw, th, tt = (torch.from_numpy(a) for a in (train.window, train.horizon, train.target))
    ones = torch.ones_like(tt)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, losses = float("inf"), None, []
    check = val if val is not None and len(val) else train
    vw, vh, vt = (torch.from_numpy(a) for a in (check.window, check.horizon, check.target))
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = pinball_loss(model(tw[idx], th[idx]), tt[idx], ones[idx], q)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(pinball_loss(model(vw, vh), vt, torch.ones_like(vt), q)) / cfg.horizon
        losses.append(val_loss)
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(model.state_dict())
        if report is not None:
            report(epoch, val_loss, model)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), losses


def training_sets(series: Sequence[pd.Series], cfg: ForecasterConfig) -> tuple[SeriesSet, SeriesSet]:
    """Training and validation windows from the earlier `train_fraction` of each series; validation = the
    latest `validation_fraction` of that part (time order), each series normalised by its training part."""
    train, val = [], []
    for s in series:
        n_train = int(len(s) * cfg.train_fraction)
        n_fit = int(n_train * (1 - cfg.validation_fraction))
        norm = Normaliser.fit(s.to_numpy()[:n_train])
        train.append(windows_from_series(s, 0, n_fit, cfg, norm))
        val.append(windows_from_series(s, n_fit, n_train, cfg, norm))
    return concat(train), concat(val)


@dataclass(frozen=True)
class Forecast:
    """Quantiles of usage for each future step: `values[h, i]` is the `levels[i]` quantile at `index[h]`.
    `method` names what made the median (see `Forecaster.forecast_best`), `backtest` each candidate's mean
    absolute error over the last day of forecasts already observed (empty when there was no choice), `note` why
    a fallback was used."""

    index: pd.DatetimeIndex
    levels: tuple[float, ...]
    values: np.ndarray  # (H, Q)
    method: str = "lstm"
    backtest: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    note: str = ""

    def quantile(self, level: float) -> np.ndarray:
        """(H,) the forecast at `level`, interpolated between the predicted quantiles."""
        return np.array([np.interp(level, self.levels, row) for row in self.values])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=self.index, columns=[f"p{round(l * 100):02d}" for l in self.levels])


class Forecaster:
    """The trained `DemandLSTM` with its config. `forecast(series)` uses the series' own history for the
    normalisation (median / mean absolute deviation of all points given)."""

    def __init__(self, model: DemandLSTM, cfg: ForecasterConfig):
        self.model = model.eval()
        self.cfg = cfg

    def forecast(self, series: pd.Series) -> Forecast:
        return self.forecast_at(series, [len(series)])[0]

    def forecast_conformal(self, series: pd.Series) -> Forecast:
        """`forecast`, its lowest and highest quantiles replaced by the median plus the 10th and 90th percentiles
        of the model's own errors on this series' last day (`conformal_band`): calibrated on series the model
        never saw, where its own band is too narrow. The plain forecast when the series is too short for it."""
        return self._forecast_online(series, ("lstm",))

    def forecast_best(self, series: pd.Series) -> Forecast:
        """Online-best: backtest the LSTM, simple exponential smoothing (alpha fitted on the series) and the mean
        of the last hour over the series' last day of forecasts already observed (origins whose whole hour was
        seen), and return the forecast of the one with the least mean absolute error, with a p10/p90 band from
        THAT method's own errors over the same forecasts (as `forecast_conformal` does for the LSTM). Reads only
        the series given. `method` says which won and `backtest` the errors; a series with fewer than
        `MIN_BACKTEST_ORIGINS` observed past forecasts gets the LSTM's own quantiles and a `note` saying so."""
        return self._forecast_online(series, ONLINE_CANDIDATES)

    def _forecast_online(self, series: pd.Series, methods: Sequence[str]) -> Forecast:
        cfg = self.cfg
        fc = self.forecast(series)  # raises a clear error when the series is too short for any forecast
        x = series.to_numpy(dtype=np.float64)
        # The normaliser `forecast` uses (every point given); smoothing's alpha is fitted on the whole series too.
        bt = online_backtest(self, series, np.array([len(x)]), Normaliser.fit(x), cfg, methods)
        if bt is None:
            need = min_history(cfg) + cfg.horizon + MIN_BACKTEST_ORIGINS - 1
            return replace(fc, note=(
                f"series too short to backtest: {len(x)} points, {need} ({need * cfg.step_minutes / 60:.1f} h) "
                f"needed for {MIN_BACKTEST_ORIGINS} observed past forecasts; the LSTM's own quantiles, no choice"))
        backtest = {m: float(e) for m, e in zip(bt.methods, bt.errors[0])}
        if bt.method() == "lstm":  # its own quantiles in between, the ends from its errors
            mid = _median_index(cfg)
            band = band_around(fc.values[:, mid], bt.offsets[0])
            values = fc.values.copy()
            values[:, 0], values[:, -1] = band[:, 0], band[:, 1]
            return replace(fc, values=values, backtest=backtest)
        band = band_around(bt.point[0], bt.offsets[0])
        return Forecast(fc.index, (0.1, 0.5, 0.9), np.column_stack([band[:, 0], bt.point[0], band[:, 1]]),
                        bt.method(), backtest)

    def forecast_at(self, series: pd.Series, origins: Sequence[int], normaliser: Normaliser | None = None) -> list[Forecast]:
        """Forecasts made at several origins of one series (each sees only the points before it)."""
        cfg = self.cfg
        need = min_history(cfg)
        x = series.to_numpy(dtype=np.float64)
        if len(x) < need or not np.isfinite(x).all():
            raise PredictionError(
                f"The forecaster needs at least {need} regular, finite points ({need * cfg.step_minutes / 60:.0f} h "
                f"at {cfg.step_minutes} min) before the forecast; got {len(x)}. Load the series with load_series()")
        origins = np.asarray(origins, dtype=np.int64)
        if origins.min() < need or origins.max() > len(x):
            raise PredictionError(f"Forecast origins must lie in [{need}, {len(x)}]")
        # Without a given normaliser, fit one on the points before the earliest origin: what every origin has seen.
        norm = normaliser or Normaliser.fit(x[:int(origins.min())])
        tod = _future_tod(series.index, cfg.horizon, cfg.step_minutes)
        z = np.concatenate([norm(x), np.zeros(cfg.horizon)])
        window, horizon, level = make_windows(z, tod, origins, cfg)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(window), torch.from_numpy(horizon)).numpy().astype(np.float64)
        out += level[:, None, None]
        values = np.maximum(norm.inverse(out), 0.0)
        step = pd.Timedelta(minutes=cfg.step_minutes)
        full_index = series.index.append(pd.DatetimeIndex([series.index[-1] + step * (i + 1)
                                                           for i in range(cfg.horizon)]))
        return [Forecast(full_index[o:o + cfg.horizon], tuple(cfg.quantiles), values[i])
                for i, o in enumerate(origins)]

    def save(self, directory: Path, metadata: dict[str, Any]) -> Path:
        return save_checkpoint(directory, {"model": self.model.state_dict(), "config": self.cfg.model_dump()}, metadata)

    @classmethod
    def load(cls, directory: Path, version: str = "latest") -> tuple["Forecaster", dict[str, Any]]:
        state, metadata, _ = load_checkpoint(directory, version)
        cfg = ForecasterConfig.model_validate(state["config"])
        model = DemandLSTM(cfg.horizon, cfg.hidden_size, len(cfg.quantiles))
        model.load_state_dict(state["model"])
        return cls(model, cfg), metadata


def fit_forecaster(series: Sequence[pd.Series], cfg: ForecasterConfig,
                   report: Callable[[int, float, DemandLSTM], None] | None = None) -> tuple[Forecaster, dict]:
    train, val = training_sets(series, cfg)
    model, losses = train_forecaster(train, val, cfg, report)
    return Forecaster(model, cfg), {"train_windows": len(train), "validation_windows": len(val),
                                    "validation_loss": losses, "best_validation_loss": min(losses)}


def _median_index(cfg: ForecasterConfig) -> int:
    return int(np.argmin(np.abs(np.asarray(cfg.quantiles) - 0.5)))


def online_candidates(forecaster: "Forecaster", series: pd.Series, origins: np.ndarray, norm: Normaliser,
                      methods: Sequence[str] = ONLINE_CANDIDATES, alpha: float | None = None) -> dict[str, np.ndarray]:
    """method -> (B, H) point forecasts made at `origins`: the LSTM's median (`norm` normalises), simple exponential
    smoothing (`alpha`, default fitted on the whole series) and the mean of the last hour."""
    cfg = forecaster.cfg
    x = series.to_numpy(dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for m in methods:
        if m == "lstm":
            out[m] = np.stack([f.values[:, _median_index(cfg)] for f in forecaster.forecast_at(series, origins, norm)])
        elif m == "exp-smoothing":
            out[m] = smoothing_forecast(x, origins, cfg.horizon, fit_smoothing(x) if alpha is None else alpha)
        elif m == "rolling-mean-1h":
            out[m] = rolling_mean_forecast(x, origins, cfg.horizon, max(1, round(60 / cfg.step_minutes)))
        else:
            raise PredictionError(f"Unknown forecast method '{m}'; choose from {', '.join(ONLINE_CANDIDATES)}")
    return out


def online_backtest(forecaster: "Forecaster", series: pd.Series, origins: np.ndarray, norm: Normaliser,
                    cfg: ForecasterConfig, methods: Sequence[str] = ONLINE_CANDIDATES, alpha: float | None = None,
                    window: int | None = None) -> Backtest | None:
    """`backtest_online` of `online_candidates` for forecasts made at `origins` (each reads the series before it
    only); None when the earliest origin has too short a past."""
    origins = np.asarray(origins, dtype=np.int64)
    window = window or cfg.season
    start = backtest_start(origins, min_history(cfg), cfg.horizon, window)
    if start is None:
        return None
    cands = online_candidates(forecaster, series, np.arange(start, int(origins.max()) + 1), norm, methods, alpha)
    return backtest_online(series.to_numpy(dtype=np.float64), origins, cands, min_history(cfg), cfg.horizon, window)


def conformal_band(forecaster: "Forecaster", series: pd.Series, origins: np.ndarray, norm: Normaliser,
                   cfg: ForecasterConfig, window: int | None = None) -> np.ndarray | None:
    """(B, H, 2) p10/p90 for forecasts made at `origins`: the LSTM's median plus the 10th and 90th percentiles of
    its own errors, per horizon step, over the forecasts of the last `window` origins (a day) whose whole
    horizon was observed before the origin (online conformal: only the series' past is used)."""
    bt = online_backtest(forecaster, series, origins, norm, cfg, ("lstm",), window=window)
    return None if bt is None else np.maximum(bt.point[:, :, None] + bt.offsets, 0.0)


def naive_forecast(x: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(B, H): the last observed value, repeated."""
    return np.repeat(x[origins - 1][:, None], horizon, axis=1)


def rolling_mean_forecast(x: np.ndarray, origins: np.ndarray, horizon: int, window: int) -> np.ndarray:
    """(B, H): the mean of the last `window` observed values (e.g. the last hour), repeated."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.maximum(origins - window, 0)
    means = (c[origins] - c[lo]) / (origins - lo)
    return np.repeat(means[:, None], horizon, axis=1)


def fit_smoothing(train: np.ndarray, grid: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)) -> float:
    """The alpha of simple exponential smoothing with the least one-step squared error on `train`."""
    best, best_err = 1.0, float("inf")
    for alpha in grid:
        level, err = train[0], 0.0
        for v in train[1:]:
            err += (v - level) ** 2
            level += alpha * (v - level)
        if err < best_err:
            best, best_err = alpha, err
    return best


def smoothing_forecast(x: np.ndarray, origins: np.ndarray, horizon: int, alpha: float) -> np.ndarray:
    """(B, H): simple exponential smoothing's level at each origin (from the start of the series), repeated."""
    levels = np.empty(len(x) + 1)
    level = x[0]
    for i, v in enumerate(x):
        levels[i] = level  # the level before seeing x[i]: the forecast made at origin i
        level += alpha * (v - level)
    levels[len(x)] = level  # origin len(x): the next, unseen step
    return np.repeat(levels[origins][:, None], horizon, axis=1)


def seasonal_naive_forecast(x: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(B, H): the value one season (a day) before each target step."""
    return x[origins[:, None] + np.arange(horizon)[None, :] - season]

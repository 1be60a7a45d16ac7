"""Usage time series for the demand forecaster: read a `timestamp,value` CSV or a DataFrame of samples, check
it, and put it on a regular grid. Rule for gaps: missing points (irregular timestamps, NaN values) are
linearly interpolated in time when the hole spans at most `max_gap_steps` steps; a longer hole raises
`PredictionError` naming it (split the series there, or raise `max_gap_steps`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PredictionError


def load_series(path: str | Path, step_minutes: int = 5, max_gap_steps: int = 3,
                value_column: str = "value", time_column: str = "timestamp") -> pd.Series:
    """A regular series (DatetimeIndex, float values) from a CSV with a timestamp column and a value column."""
    path = Path(path)
    if not path.exists():
        raise PredictionError(f"Series file '{path}' does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PredictionError(f"Cannot read series '{path}' as CSV: {exc}") from None
    return series_from_frame(frame, step_minutes, max_gap_steps, value_column, time_column, source=str(path))


def series_from_frame(frame: pd.DataFrame, step_minutes: int = 5, max_gap_steps: int = 3,
                      value_column: str = "value", time_column: str | None = "timestamp",
                      source: str = "<frame>") -> pd.Series:
    """Same as `load_series` for a DataFrame (e.g. the runtime's system-state samples). The times come from
    `time_column`, or from the index when it is a DatetimeIndex or the column is absent."""
    if frame is None or len(frame) == 0:
        raise PredictionError(f"Series {source} is empty")
    if value_column not in frame.columns:
        raise PredictionError(f"Series {source} has no column '{value_column}' (columns: {list(frame.columns)})")
    if time_column and time_column in frame.columns:
        raw_times = frame[time_column]
    elif isinstance(frame.index, pd.DatetimeIndex):
        raw_times = pd.Series(frame.index, index=frame.index)
    else:
        raise PredictionError(f"Series {source} has no time column '{time_column}' and no DatetimeIndex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": each row parsed on its own
        times = pd.to_datetime(raw_times, errors="coerce")
    if times.isna().any():
        i = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise PredictionError(f"Series {source}: row {i + 1} has timestamp {raw_times.iloc[i]!r}, not a date/time")
    raw = frame[value_column]
    stripped = raw.astype(str).str.strip()
    missing = raw.isna().to_numpy() | stripped.str.lower().isin(["", "nan", "na", "null", "none"]).to_numpy()
    values = pd.to_numeric(stripped.where(~missing, None), errors="coerce")
    bad = values.isna().to_numpy() & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PredictionError(f"Series {source}: row {i + 1} has value {raw.iloc[i]!r}, not a number")
    v = values.to_numpy(dtype=np.float64)
    if np.isinf(v).any():
        i = int(np.flatnonzero(np.isinf(v))[0])
        raise PredictionError(f"Series {source}: row {i + 1} has an infinite value")
    if (v[np.isfinite(v)] < 0).any():
        i = int(np.flatnonzero(np.nan_to_num(v) < 0)[0])
        raise PredictionError(f"Series {source}: row {i + 1} has value {v[i]}, but usage cannot be negative")
    series = pd.Series(v, index=pd.DatetimeIndex(times.to_numpy()), name=value_column)
    return regularise(series, step_minutes, max_gap_steps, source)


def regularise(series: pd.Series, step_minutes: int = 5, max_gap_steps: int = 3, source: str = "<series>") -> pd.Series:
    """Sort, average duplicate timestamps, drop NaN values, and resample onto the grid first + k x step by
    linear interpolation in time; raise if two consecutive known points are more than max_gap_steps + 1
    steps apart (that many grid points would be invented)."""
    s = series.dropna().sort_index()
    s = s.groupby(level=0).mean()
    if len(s) < 2:
        raise PredictionError(f"Series {source} has {len(s)} usable point(s); at least 2 are needed")
    step = pd.Timedelta(minutes=step_minutes)
    t = (s.index - s.index[0]) / step  # in steps
    gaps = np.diff(t.to_numpy(dtype=np.float64))
    limit = max_gap_steps + 1 + 1e-6
    if (gaps > limit).any():
        i = int(np.argmax(gaps > limit))
        raise PredictionError(
            f"Series {source} has a gap of {gaps[i] * step_minutes:.0f} minutes between {s.index[i]} and "
            f"{s.index[i + 1]}, longer than the {max_gap_steps} missing steps that are interpolated; "
            "split the series at the gap or raise max_gap_steps")
    grid_steps = np.arange(0, np.floor(t[-1] + 1e-6) + 1)
    values = np.interp(grid_steps, t.to_numpy(dtype=np.float64), s.to_numpy(dtype=np.float64))
    index = s.index[0] + pd.to_timedelta(grid_steps * step_minutes, unit="min")
    return pd.Series(values, index=pd.DatetimeIndex(index), name=series.name or "value")

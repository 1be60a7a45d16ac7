"""Baseline task predictors (category mean, median of the last 32, last value, log-log regression on input
size) and the prior used
for a category with no history. Each returns quantiles of (runtime s, cpu cores, memory bytes) per query."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import ExecutionTable
from .history_arrays import HistoryArrays, Query

CPU_EPS = 0.01  # cores; cpu is regressed as log(cpu + CPU_EPS)


def _monotone(q: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(q, axis=-1)


def _band(values: np.ndarray, centre: float, quantiles: np.ndarray, relative: bool) -> np.ndarray:
    """Quantiles around `centre` shaped like the spread of `values` around their median: ratios when
    `relative` (positive quantities), differences otherwise. The middle quantile (0.5) is the centre itself."""
    values = values[np.isfinite(values)]
    if values.size == 0 or not np.isfinite(centre):
        return np.full(quantiles.size, np.nan)
    med = float(np.median(values))
    if relative and med > 0:
        band = centre * np.quantile(values / med, quantiles)
    else:
        band = centre + np.quantile(values - med, quantiles)
    band[np.isclose(quantiles, 0.5)] = centre
    return _monotone(band)


class TaskBaseline:
    """Interface: `predict(history, query) -> (3, Q)` quantiles of runtime, cpu, memory (NaN = cannot say);
    `predict_group(history, queries) -> (m, 3, Q)` for several tasks sharing one history (fitted once)."""

    name = "baseline"

    def __init__(self, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)):
        self.quantiles = np.asarray(quantiles, dtype=np.float64)

    def predict(self, history: HistoryArrays, query: Query) -> np.ndarray:
        return self.predict_group(history, [query])[0]

    def predict_group(self, history: HistoryArrays, queries: list[Query]) -> np.ndarray:
        out = np.full((len(queries), 3, self.quantiles.size), np.nan)
        x = np.array([q.log_input for q in queries], dtype=np.float64)
        targets = (np.exp(history.log_runtime), history.cpu, np.exp(history.log_memory))
        for k, values in enumerate(targets):
            ok = np.isfinite(values)
            if ok.any():
                out[:, k] = self._one(values[ok], history, ok, x, k)
        return out

    def _one(self, values: np.ndarray, history: HistoryArrays, ok: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
        """Quantiles (m, Q) of target k for m queries with log input sizes x."""
        raise NotImplementedError


class CategoryMean(TaskBaseline):
    """The mean of the category's history; the band is the history's own spread."""

    name = "category-mean"

    def _one(self, values, history, ok, x, k):
        return _band(values, float(values.mean()), self.quantiles, relative=True)[None, :]


class CategoryMedian(TaskBaseline):
    """The median of the category's last `window` executions (robust to the odd outlier run, and following
    a change in the category's runtimes); the band is those executions' spread."""

    name = "category-median-32"
    window = 32

    def _one(self, values, history, ok, x, k):
        recent = values[-self.window:]
        return _band(recent, float(np.median(recent)), self.quantiles, relative=True)[None, :]


class LastValue(TaskBaseline):
    """The most recent execution of the category; the band is the history's spread around it."""

    name = "last-value"

    def _one(self, values, history, ok, x, k):
        return _band(values, float(values[-1]), self.quantiles, relative=True)[None, :]


class LogLinear(TaskBaseline):
    """log(target) = a + b log(input bytes), least squares on the category's history.

    Falls back to the mean of the logs with fewer than 3 points, input sizes spread by under 5% (log 0.05),
    or an unknown query size. Extrapolation is clipped to the history's range widened by one e-fold: an
    unguarded fit on a handful of near-equal sizes otherwise predicts absurd values.
    """

    name = "log-linear"
    min_points = 3
    min_spread = 0.05

    def _one(self, values, history, ok, x, k):
        y = np.log(values + CPU_EPS) if k == 1 else np.log(np.maximum(values, 1e-12))
        hx = history.log_input[ok]
        good = np.isfinite(hx)
        centre = np.full(x.size, float(y.mean()))
        resid = y - y.mean()
        if good.sum() >= self.min_points and hx[good].std() > self.min_spread:
            b, a = np.polyfit(hx[good], y[good], 1)
            resid = y[good] - (a + b * hx[good])
            known = np.isfinite(x)
            centre[known] = np.clip(a + b * x[known], y.min() - 1.0, y.max() + 1.0)
        offsets = np.quantile(resid - np.median(resid), self.quantiles)
        offsets[np.isclose(self.quantiles, 0.5)] = 0.0
        q = _monotone(centre[:, None] + offsets[None, :])
        return np.maximum(np.exp(q) - CPU_EPS, 0.0) if k == 1 else np.exp(q)


@dataclass
class Prior:
    """The fallback for a category with no history at all: the quantiles of each target over every training
    execution of the task's family (pooled over its categories), or over all families when the family is
    unknown or unseen. Coarse by design — it is only a sane first guess until the category's first task
    finishes; the evaluation reports it alone (row `prior`) so its quality is visible."""

    quantiles: np.ndarray
    table: dict[str, np.ndarray] = field(default_factory=dict)  # family or "*" -> (3, Q), NaN = no data
    name: str = "prior"

    @classmethod
    def fit(cls, table: ExecutionTable, rows: np.ndarray | None = None,
            quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> "Prior":
        prior = cls(np.asarray(quantiles, dtype=np.float64))
        rows = np.arange(len(table)) if rows is None else np.asarray(rows)
        groups: dict[str, np.ndarray] = {"*": rows}
        for f, fam in enumerate(table.families):
            groups[fam] = rows[table.family[rows] == f]
        for name, r in groups.items():
            if r.size == 0:
                continue
            q = np.full((3, prior.quantiles.size), np.nan)
            for k, y in enumerate((table.runtime[r], table.cpu[r], table.memory[r])):
                y = y[np.isfinite(y)]
                if y.size:
                    q[k] = np.quantile(y, prior.quantiles)
            prior.table[name] = q
        return prior

    def predict(self, history: HistoryArrays, query: Query) -> np.ndarray:
        return self.predict_group(history, [query])[0]

    def predict_group(self, history: HistoryArrays, queries: list[Query]) -> np.ndarray:
        out = np.full((len(queries), 3, self.quantiles.size), np.nan)
        for i, q in enumerate(queries):
            fam = self.table.get(q.family) if q.family else None
            glob = self.table.get("*")
            for k in range(3):
                for source in (fam, glob):
                    if source is not None and np.isfinite(source[k]).all():
                        out[i, k] = source[k]
                        break
        return out

    def to_dict(self) -> dict:
        return {"quantiles": self.quantiles.tolist(), "table": {k: v.tolist() for k, v in self.table.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Prior":
        return cls(np.asarray(d["quantiles"], dtype=np.float64),
                   {k: np.asarray(v, dtype=np.float64) for k, v in d["table"].items()})


BASELINES = {c.name: c for c in (CategoryMean, CategoryMedian, LastValue, LogLinear)}

"""Calibrated p10/p90 for any task predictor: normalised split conformal.

A method's band is replaced by its median moved by quantiles of its own errors on executions it did not train
on (the calibration episodes: the latest training runs, cut with the same protocol as the evaluation). An error
is measured on the modelled scale (log runtime, log(cpu + eps), log memory) and divided by the spread of the
category's history on that scale, so a category whose executions agree gets a narrow band and a noisy one a
wide band. Errors are pooled by how much history the prediction had (none, 1-3, 4 or more executions) and
whether it held earlier runs; a group with too few errors uses the pooled quantiles of its target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .baselines import CPU_EPS
from .features import MIN_RUNTIME
from .history_arrays import HistoryArrays

MIN_RUN_ERRORS = 30  # a run's own errors make a band once its finished siblings gave this many
SPREAD_FLOOR = 0.1  # on the log scale: a category whose history agrees exactly still gets a 10%-wide unit
MIN_ERRORS = 30
POOLED = "*"


def to_scale(values: np.ndarray, k: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if k == 0:
            return np.log(np.maximum(v, MIN_RUNTIME))
        if k == 1:
            return np.log(np.maximum(v, 0.0) + CPU_EPS)
        return np.log(v)


def from_scale(z: np.ndarray, k: int) -> np.ndarray:
    return np.maximum(np.exp(z) - CPU_EPS, 0.0) if k == 1 else np.exp(z)


def history_context(h: HistoryArrays, window: int = 32) -> tuple[np.ndarray, str]:
    """(3,) spread of each target in the history's last `window` executions (SPREAD_FLOOR-floored; 1 when
    fewer than 4 are known, so the errors are plain log ratios) and the history's group name."""
    n = len(h)
    group = "none" if n == 0 else ("few" if n < 4 else "many") + ("+runs" if (~h.same_run).any() else "")
    t = h.tail(window)
    spread = np.ones(3)
    for k, y in enumerate((t.log_runtime, np.log(t.cpu + CPU_EPS), t.log_memory)):
        y = y[np.isfinite(y)]
        if y.size >= 4:
            spread[k] = float(np.sqrt(y.var() + SPREAD_FLOOR**2))
    return spread, group


@dataclass
class ConformalBands:
    """Per (target, group): the `low` and `high` quantiles of the normalised errors of one method."""

    low: float = 0.1
    high: float = 0.9
    table: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # "k" -> group -> (lo, hi)
    errors: dict[str, int] = field(default_factory=dict)  # "k" -> number of errors fitted on
    # "k" -> how much wider the band must be for a family the model never trained on (measured by holding out
    # whole families: `unseen_family_scales`); 1 when not measured
    unseen_scale: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, preds: np.ndarray, truth: np.ndarray, spreads: np.ndarray, groups: Sequence[str],
            levels: Sequence[float]) -> "ConformalBands":
        """preds (n, 3, Q) with the median at the middle level, truth (n, 3), spreads (n, 3), groups (n,)."""
        levels = np.asarray(levels)
        mid = int(np.argmin(np.abs(levels - 0.5)))
        bands = cls(float(levels[0]), float(levels[-1]))
        groups = np.asarray(groups)
        for k in range(3):
            err = (to_scale(truth[:, k], k) - to_scale(preds[:, k, mid], k)) / spreads[:, k]
            ok = np.isfinite(err)
            if ok.sum() < MIN_ERRORS:
                continue
            per: dict[str, tuple[float, float]] = {POOLED: bands._quantiles(err[ok])}
            for g in np.unique(groups[ok]):
                e = err[ok & (groups == g)]
                if e.size >= MIN_ERRORS:
                    per[str(g)] = bands._quantiles(e)
            bands.table[str(k)] = per
            bands.errors[str(k)] = int(ok.sum())
        return bands

    def _quantiles(self, err: np.ndarray) -> tuple[float, float]:
        # Finite-sample conformal levels: the band covers at least high - low of exchangeable new errors.
        n = err.size
        lo = max(0.0, np.floor(self.low * (n + 1)) / n - 1e-12)
        hi = min(1.0, np.ceil(self.high * (n + 1)) / n)
        return float(np.quantile(err, lo, method="lower")), float(np.quantile(err, hi, method="higher"))

    def apply(self, preds: np.ndarray, spreads: np.ndarray, groups: Sequence[str],
              unseen: np.ndarray | None = None, scale: dict[str, float] | None = None) -> np.ndarray:
        """A copy of preds (n, 3, Q) with the first and last quantile replaced by the calibrated band (targets
        without calibration keep theirs); the median and any inner levels are kept, the result monotone. Rows
        flagged `unseen` (a family the model never trained on) get the band widened by `scale` (default: the
        fitted `unseen_scale`)."""
        out = preds.copy()
        scale = self.unseen_scale if scale is None else scale
        spreads = np.array(spreads, dtype=np.float64, copy=True)
        if unseen is not None and np.any(unseen):
            for key, factor in scale.items():
                spreads[np.asarray(unseen, dtype=bool), int(key)] *= factor
        q = out.shape[-1]
        mid = q // 2
        for key, per in self.table.items():
            k = int(key)
            z = to_scale(out[:, k, mid], k)
            bounds = np.array([per.get(g, per[POOLED]) for g in groups], dtype=np.float64).reshape(-1, 2)
            lo = from_scale(z + bounds[:, 0] * spreads[:, k], k)
            hi = from_scale(z + bounds[:, 1] * spreads[:, k], k)
            out[:, k, 0] = np.fmin(lo, out[:, k, 1:].min(axis=-1)) if q > 1 else lo
            out[:, k, q - 1] = np.fmax(hi, out[:, k, :q - 1].max(axis=-1)) if q > 1 else hi
        return out

    def with_run_errors(self, plain: np.ndarray, spreads: np.ndarray, errors: np.ndarray) -> np.ndarray | None:
        """For a family the model never trained on: the runtime band of `plain` (calibrated, not widened) joined
        with the band of the run's own normalised errors so far (their `low`-`high` quantiles), or None when the
        run has fewer than MIN_RUN_ERRORS of them. A new family's errors differ from family to family; once its
        run has shown them, they say more than a factor measured on other families."""
        errors = np.asarray(errors, dtype=np.float64)
        errors = errors[np.isfinite(errors)]
        if errors.size < MIN_RUN_ERRORS:
            return None
        out = plain.copy()
        z = to_scale(plain[:, 0, plain.shape[-1] // 2], 0)
        lo, hi = np.quantile(errors, [self.low, self.high])
        out[:, 0, 0] = np.fmin(plain[:, 0, 0], from_scale(z + lo * spreads[:, 0], 0))
        out[:, 0, -1] = np.fmax(plain[:, 0, -1], from_scale(z + hi * spreads[:, 0], 0))
        return out

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "errors": self.errors, "unseen_scale": self.unseen_scale,
                "table": {k: {g: list(v) for g, v in per.items()} for k, per in self.table.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "ConformalBands":
        return cls(float(d["low"]), float(d["high"]),
                   {k: {g: (float(v[0]), float(v[1])) for g, v in per.items()} for k, per in d["table"].items()},
                   {k: int(v) for k, v in d.get("errors", {}).items()},
                   {k: float(v) for k, v in d.get("unseen_scale", {}).items()})


def normalised_error(actual: float, median: float, spread: float, k: int = 0) -> float:
    """The error `ConformalBands` works with: on the target's log scale, divided by the history's spread."""
    return float((to_scale(np.array([actual]), k)[0] - to_scale(np.array([median]), k)[0]) / spread)


def contexts(hs: Sequence[HistoryArrays]) -> tuple[np.ndarray, list[str]]:
    """Spreads (n, 3) and groups for a batch of histories, computed once per distinct history object."""
    cache: dict[int, tuple[np.ndarray, str]] = {}
    spreads = np.empty((len(hs), 3))
    groups = []
    for i, h in enumerate(hs):
        c = cache.get(id(h))
        if c is None:
            c = cache[id(h)] = history_context(h)
        spreads[i] = c[0]
        groups.append(c[1])
    return spreads, groups


SCALES = np.round(np.arange(0.5, 4.001, 0.05), 2)


def scale_for_coverage(bands: ConformalBands, preds: np.ndarray, truth: np.ndarray, spreads: np.ndarray,
                       groups: Sequence[str], k: int, target: float = 0.8) -> float:
    """The widening factor of target k's band whose coverage of `truth` is closest to `target`."""
    known = np.isfinite(truth[:, k])
    if str(k) not in bands.table or known.sum() < MIN_ERRORS:
        return float("nan")
    p, t, sp = preds[known], truth[known, k], spreads[known]
    g = [x for x, ok in zip(groups, known) if ok]
    everyone = np.ones(len(t), dtype=bool)
    best, best_gap = 1.0, np.inf
    for s in SCALES:
        out = bands.apply(p, sp, g, everyone, {str(k): float(s)})
        cov = float(((t >= out[:, k, 0]) & (t <= out[:, k, -1])).mean())
        if abs(cov - target) < best_gap - 1e-12:
            best, best_gap = float(s), abs(cov - target)
    return best

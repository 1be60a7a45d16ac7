"""A gradient-boosted task predictor (LightGBM) on tabular features of what is known before a task runs: its
input size and the running statistics of its category's finished executions (median, spread, last value,
the siblings of its own run, a log-log fit on input size, the nearest executions in input size).

It predicts, per target, the residual from the category's recent median (log runtime, cpu cores, log peak
memory), so one model serves every category and family: it learns how to correct a category's median from the
shape of its history, not the category's level itself. One LightGBM model per target and quantile (p10, p50,
p90), trained on episodes cut from recorded runs like the LSTM's (`sample_episodes`)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import PredictionError
from .baselines import CPU_EPS, Prior
from .config import TaskModelConfig
from .features import ExecutionTable
from .history_arrays import HistoryArrays, Query

GBM = "lightgbm"
WINDOW = 32  # the category's last executions the statistics are computed on
KNN = 5
FEATURES_PER_TARGET = 11
N_FEATURES = 3 + 3 * FEATURES_PER_TARGET
GBM_VERSION = 1


def _target_values(h: HistoryArrays, k: int) -> np.ndarray:
    """Target k of the history on the scale it is modelled on: log runtime, log(cpu + eps), log memory."""
    if k == 0:
        return h.log_runtime
    if k == 1:
        return np.log(h.cpu + CPU_EPS)
    return h.log_memory


def centres(h: HistoryArrays) -> np.ndarray:
    """(3,) the median of each target over the category's last `WINDOW` executions (NaN when unknown)."""
    h = h.tail(WINDOW)
    out = np.full(3, np.nan)
    for k in range(3):
        y = _target_values(h, k)
        y = y[np.isfinite(y)]
        if y.size:
            out[k] = np.median(y)
    return out


def features(h: HistoryArrays, q: Query) -> np.ndarray:
    """The feature vector of one query given its category's history (NaN = unknown; LightGBM handles it)."""
    f = np.full(N_FEATURES, np.nan)
    h = h.tail(WINDOW)
    n = len(h)
    f[0] = q.log_input
    f[1] = np.log1p(n)
    f[2] = float(h.same_run.mean()) if n else np.nan
    hx = h.log_input
    for k in range(3):
        y = _target_values(h, k)
        ok = np.isfinite(y)
        if not ok.any():
            continue
        y, x, same = y[ok], hx[ok], h.same_run[ok]
        c = float(np.median(y))  # the level itself is no feature: it does not carry over to new families
        base = 3 + k * FEATURES_PER_TARGET
        v = f[base:base + FEATURES_PER_TARGET]
        v[0] = float(y.std()) if y.size > 1 else np.nan
        v[1] = y[-1] - c
        v[2] = float(y.mean()) - c
        v[3] = float(y.min()) - c
        v[4] = float(y.max()) - c
        v[5] = float(np.median(y[same])) - c if same.any() else np.nan
        v[6] = np.log1p(ok.sum())
        known = np.isfinite(x)
        if np.isfinite(q.log_input) and known.any():
            xs, ys = x[known], y[known]
            v[7] = q.log_input - float(np.median(xs))
            near = np.argsort(np.abs(xs - q.log_input), kind="stable")[:KNN]
            v[8] = float(np.median(ys[near])) - c
            v[9] = float(np.abs(xs[near] - q.log_input).mean())
            if xs.size >= 3:
                dx = xs - xs.mean()
                sxx = float(dx @ dx)
                if sxx > xs.size * 0.05**2:  # input sizes spread by more than 5% (as LogLinear requires)
                    b = float(dx @ (ys - ys.mean())) / sxx
                    fit = ys.mean() + b * (q.log_input - xs.mean())
                    v[10] = float(np.clip(fit, ys.min() - 1.0, ys.max() + 1.0)) - c
    return f


def _design(hs: Sequence[HistoryArrays], qs: Sequence[Query]) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, F) and the centres (n, 3), computed once per distinct history object."""
    X = np.empty((len(hs), N_FEATURES))
    C = np.empty((len(hs), 3))
    cache: dict[int, np.ndarray] = {}
    for i, (h, q) in enumerate(zip(hs, qs)):
        X[i] = features(h, q)
        c = cache.get(id(h))
        if c is None:
            c = cache[id(h)] = centres(h)
        C[i] = c
    return X, C


class TaskGBM:
    """LightGBM models per (target, quantile) of the residual from the category's recent median; the prior
    answers for an empty history. `predict_group` / `predict_batch` match the baselines' and the LSTM's."""

    name = GBM

    def __init__(self, boosters: dict[tuple[int, float], Any], quantiles: Sequence[float], prior: Prior | None,
                 info: dict | None = None):
        self.boosters = boosters
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.prior = prior
        self.info = info or {}

    # ---- training -----------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: ExecutionTable, runs: Sequence[int], cfg: TaskModelConfig, prior: Prior | None = None,
            num_boost_round: int = 300, seed: int | None = None, holdout: bool = False,
            params: dict[str, Any] | None = None) -> "TaskGBM":
        """Fit on episodes of `runs`; with `holdout`, of all but the latest runs of each family (those the LSTM
        validates on), so that the model's errors can be measured on them (`calibration.py`)."""
        import lightgbm as lgb

        from .task_training import sample_episodes, split_validation_runs

        train_runs, val_runs = (split_validation_runs(table, runs, cfg.validation_fraction) if holdout
                                else (list(runs), []))
        rng = np.random.default_rng(cfg.seed if seed is None else seed)
        episodes = sample_episodes(table, train_runs, cfg, rng)
        if not episodes:
            raise PredictionError("No training episodes for the gradient-boosted task model: the runs hold no "
                                  "category with at least two executions")
        hs = [HistoryArrays.from_table(table, e.history, e.same_run) for e in episodes]
        qs = [Query.from_table(table, e.query) for e in episodes]
        X, C = _design(hs, qs)
        q_idx = np.array([e.query for e in episodes])
        truth = np.stack([table.log_runtime[q_idx], np.log(table.cpu[q_idx] + CPU_EPS), table.log_memory[q_idx]],
                         axis=1)
        resid = truth - C
        # Runtime examples weighted by the category's typical runtime (clipped), as the LSTM's loss is: WAPE is
        # dominated by the long tasks.
        scale = np.exp(np.nan_to_num(C[:, 0], nan=0.0))
        w_rt = np.clip(scale / np.median(scale), 0.1, 10.0)
        boosters: dict[tuple[int, float], Any] = {}
        counts = {}
        for k in range(3):
            ok = np.isfinite(resid[:, k])
            counts[k] = int(ok.sum())
            if ok.sum() < 50:
                continue
            weight = w_rt[ok] if k == 0 else None
            for level in cfg.quantiles:
                settings = {"objective": "quantile", "alpha": float(level), "learning_rate": 0.05, "num_leaves": 31,
                            "min_data_in_leaf": 40, "feature_fraction": 0.9, "bagging_fraction": 0.8,
                            "bagging_freq": 1, "lambda_l2": 1.0, "seed": cfg.seed, "num_threads": 1,
                            "deterministic": True, "verbose": -1, **(params or {})}
                data = lgb.Dataset(X[ok], resid[ok, k], weight=weight, free_raw_data=True)
                boosters[(k, float(level))] = lgb.train(settings, data, num_boost_round=num_boost_round)
        info = {"episodes": len(episodes), "examples_per_target": counts, "rounds": num_boost_round,
                "train_runs": len(train_runs), "validation_runs": len(val_runs)}
        return cls(boosters, cfg.quantiles, prior, info)

    # ---- prediction ---------------------------------------------------------------------------------------
    def predict_batch(self, hs: Sequence[HistoryArrays], qs: Sequence[Query],
                      median_only: frozenset[int] = frozenset()) -> np.ndarray:
        """(n, 3, Q) quantiles of runtime (s), cpu (cores), memory (bytes); NaN where nothing is known. For the
        targets in `median_only` (whose band a calibration replaces anyway) only the median model runs and the
        outer quantiles repeat it."""
        out = np.full((len(hs), 3, self.quantiles.size), np.nan)
        have = [i for i, h in enumerate(hs) if len(h)]
        for i, h in enumerate(hs):
            if not len(h) and self.prior is not None:
                out[i] = self.prior.predict(h, qs[i])
        if not have:
            return out
        X, C = _design([hs[i] for i in have], [qs[i] for i in have])
        for k in range(3):
            cols, done = [], {}
            for level in self.quantiles:
                level = 0.5 if k in median_only or (k, float(level)) not in self.boosters else float(level)
                if level not in done:
                    b = self.boosters.get((k, level))
                    done[level] = b.predict(X, num_threads=1) if b is not None else np.zeros(len(have))
                cols.append(done[level])
            z = C[:, k, None] + np.maximum.accumulate(np.column_stack(cols), axis=1)
            if k == 0:
                vals = np.exp(z)
            elif k == 1:
                vals = np.maximum(np.exp(z) - CPU_EPS, 0.0)
            else:
                vals = np.exp(z)
            out[have, k] = vals
        return out

    def predict_group(self, history: HistoryArrays, queries: list[Query]) -> np.ndarray:
        return self.predict_batch([history] * len(queries), queries)

    def predict(self, history: HistoryArrays, query: Query, median_only: frozenset[int] = frozenset()) -> np.ndarray:
        return self.predict_batch([history], [query], median_only)[0]

    # ---- persistence --------------------------------------------------------------------------------------
    @property
    def has_bands(self) -> bool:
        """Whether the p10/p90 models are here (a shipped model keeps only the medians: calibrated bands
        replace its own)."""
        return any(abs(level - 0.5) > 1e-9 for _, level in self.boosters)

    def state(self, median_only: bool = False) -> dict[str, Any]:
        return {"version": GBM_VERSION, "quantiles": self.quantiles.tolist(), "info": self.info,
                "prior": self.prior.to_dict() if self.prior else None,
                "boosters": [[k, level, zlib.compress(b.model_to_string().encode(), 9)]
                             for (k, level), b in self.boosters.items()
                             if not median_only or abs(level - 0.5) < 1e-9]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TaskGBM":
        import lightgbm as lgb

        if state.get("version") != GBM_VERSION:
            raise PredictionError(f"This gradient-boosted task model has format {state.get('version')}, this code "
                                  f"reads {GBM_VERSION}; retrain it with `orchestrator train predictor`")
        boosters = {(int(k), float(level)): lgb.Booster(model_str=zlib.decompress(text).decode())
                    for k, level, text in state["boosters"]}
        prior = Prior.from_dict(state["prior"]) if state.get("prior") else None
        return cls(boosters, state["quantiles"], prior, state.get("info"))

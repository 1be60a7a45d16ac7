"""Task resource prediction for callers: `Prediction` (quantiles of runtime, cpu, memory), the LSTM predictor
with its fallbacks, and the `Predictor` facade that uses, per target, the method that won the last evaluation."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PredictionError
from ..model import TaskSpec
from .baselines import BASELINES, CategoryMean, Prior, TaskBaseline
from .calibration import ConformalBands, history_context, normalised_error
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TaskModelConfig, load_config
from .features import TARGETS, Execution, History, TaskFeatures
from .history_arrays import HistoryArrays, Query
from .task_gbm import GBM, TaskGBM
from .task_model import FEATURE_VERSION, TaskHistoryLSTM, encode

LSTM = "lstm"


@dataclass(frozen=True)
class Quantiles:
    """Predicted quantiles of one quantity, non-decreasing: `values[i]` is the `levels[i]` quantile."""

    levels: tuple[float, ...]
    values: tuple[float, ...]

    def at(self, level: float) -> float:
        """The quantile at `level`, interpolated between the predicted ones (clamped at the ends)."""
        return float(np.interp(level, self.levels, self.values))

    @property
    def median(self) -> float:
        return self.at(0.5)

    @property
    def low(self) -> float:
        return self.values[0]

    @property
    def high(self) -> float:
        return self.values[-1]


@dataclass(frozen=True)
class Prediction:
    """What a task is expected to use. `memory` is None when no execution of its category recorded memory.
    `methods` names the method behind each target (e.g. lstm, category-mean, prior)."""

    category: str
    runtime: Quantiles  # seconds
    cpu: Quantiles | None  # cores
    memory: Quantiles | None  # bytes
    methods: dict[str, str]
    history_size: int

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"category": self.category, "history_size": self.history_size}
        for name in TARGETS:
            q = getattr(self, name)
            for level, value in zip(q.levels, q.values) if q else ():
                row[f"{name}_p{round(level * 100):02d}"] = value
            row[f"{name}_method"] = self.methods.get(name)
        return row


class LSTMTaskPredictor:
    """The trained `TaskHistoryLSTM` with its fallbacks: the `Prior` when the category has no history, and the
    category mean for memory when training saw no memory at all (only montage records it)."""

    name = LSTM

    def __init__(self, model: TaskHistoryLSTM, cfg: TaskModelConfig, prior: Prior, memory_trained: bool = True):
        self.model = model.eval()
        self.cfg = cfg
        self.prior = prior
        self.memory_trained = memory_trained
        self.quantiles = np.asarray(cfg.quantiles, dtype=np.float64)
        self._memory_fallback = CategoryMean(cfg.quantiles)

    def predict(self, history: HistoryArrays, query: Query) -> np.ndarray:
        return self.predict_batch([history], [query])[0]

    def predict_batch(self, histories: Sequence[HistoryArrays], queries: Sequence[Query]) -> np.ndarray:
        """(B, 3, Q) quantiles of runtime (s), cpu (cores), memory (bytes); NaN where nothing is known."""
        out = np.full((len(histories), 3, self.quantiles.size), np.nan)
        have = [i for i, h in enumerate(histories) if len(h)]
        for i, (h, q) in enumerate(zip(histories, queries)):
            if not len(h):
                out[i] = self.prior.predict(h, q)
        if not have:
            return out
        batch = encode([histories[i] for i in have], [queries[i] for i in have], self.cfg.max_history)
        with torch.inference_mode():
            res = self.model(torch.from_numpy(batch.steps), torch.from_numpy(batch.query)).numpy().astype(np.float64)
        c = batch.centres[:, :, None]
        res = self._clip_to_history(res, [histories[i] for i in have], batch.centres)
        values = np.stack([np.exp(c[:, 0] + res[:, 0]), np.maximum(c[:, 1] + res[:, 1], 0.0),
                           np.exp(c[:, 2] + res[:, 2])], axis=1)
        out[have] = values
        for j, i in enumerate(have):
            if not np.isfinite(batch.centres[j, 1]):
                out[i, 1] = self.prior.predict(histories[i], queries[i])[1]
            if not self.memory_trained and np.isfinite(batch.centres[j, 2]):
                out[i, 2] = self._memory_fallback.predict(histories[i], queries[i])[2]
        return out

    def _clip_to_history(self, res: np.ndarray, histories: Sequence[HistoryArrays], centres: np.ndarray) -> np.ndarray:
        """Keep predicted log runtime within the history's range widened by `clip_to_history` e-folds, log
        memory within it widened by `clip_memory_to_history`, cpu within [0, max + 1 core]: a guard against
        wild extrapolation on unusual inputs."""
        margin, mem_margin = self.cfg.clip_to_history, self.cfg.clip_memory_to_history
        res = res.copy()
        for j, h in enumerate(histories):
            h = h.tail(self.cfg.max_history)
            for k, values, pad in ((0, h.log_runtime, margin), (1, h.cpu, 1.0), (2, h.log_memory, mem_margin)):
                ok = np.isfinite(values)
                if ok.any() and np.isfinite(centres[j, k]):
                    lo, hi = values[ok].min() - pad - centres[j, k], values[ok].max() + pad - centres[j, k]
                    res[j, k] = np.clip(res[j, k], lo, hi)
        return res

    # ---- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "config": self.cfg.model_dump(), "prior": self.prior.to_dict(),
                "memory_trained": self.memory_trained, "feature_version": FEATURE_VERSION}

    def save(self, directory: Path, metadata: dict[str, Any], gbm: TaskGBM | None = None) -> Path:
        """A new version holding the LSTM and, when given, the gradient-boosted model's median models beside it
        (a selection naming it must carry its calibrated band)."""
        state = self.state()
        if gbm is not None:  # its medians only: the calibrated bands (selection.json) replace its own
            state["gbm"] = gbm.state(median_only=True)
        return save_checkpoint(directory, state, metadata)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LSTMTaskPredictor":
        if state.get("feature_version") != FEATURE_VERSION:
            raise PredictionError(
                f"This predictor checkpoint was trained on task features version {state.get('feature_version')}, "
                f"but this code computes version {FEATURE_VERSION}; retrain it with `orchestrator train predictor`")
        cfg = TaskModelConfig.model_validate(state["config"])
        model = TaskHistoryLSTM(cfg.hidden_size, cfg.num_layers, cfg.dropout, len(cfg.quantiles))
        model.load_state_dict(state["model"])
        return cls(model, cfg, Prior.from_dict(state["prior"]), bool(state.get("memory_trained", True)))

    @classmethod
    def load(cls, directory: Path, version: str = "latest") -> tuple["LSTMTaskPredictor", dict[str, Any]]:
        state, metadata, _ = load_checkpoint(directory, version)
        return cls.from_state(state), metadata


def _as_history(history: History | Sequence[Execution] | None, category: str) -> list[Execution]:
    if history is None:
        return []
    if isinstance(history, History):
        return history.of(category)
    rows = list(history)
    for e in rows:
        if not isinstance(e, Execution):
            raise PredictionError(f"History entries must be Execution records, got {type(e).__name__}")
    return [e for e in rows if e.category == category]


class Predictor:
    """Predict a task's runtime, cpu and memory with, per target and family, the method named in `selection`
    (set from the last evaluation: the LSTM, the gradient-boosted model or a baseline, whichever won on the
    calibration runs), its p10/p90 replaced by the conformal band in `bands` where one was fitted.
    Empty history -> the prior."""

    def __init__(self, lstm: LSTMTaskPredictor | None, selection: dict[str, str] | None = None,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), prior: Prior | None = None,
                 version: str | None = None, gbm: TaskGBM | None = None,
                 family_selection: dict[str, dict[str, str]] | None = None,
                 bands: dict[str, ConformalBands] | None = None):
        self.lstm = lstm
        self.gbm = gbm
        self.quantiles = tuple(lstm.cfg.quantiles) if lstm else tuple(quantiles)
        self.prior = lstm.prior if lstm else prior
        default = LSTM if lstm else "category-mean"
        self.selection = {t: (selection or {}).get(t, default) for t in TARGETS}
        self.family_selection = {f: dict(c) for f, c in (family_selection or {}).items()}
        self.bands = dict(bands or {})
        for choice in (self.selection, *self.family_selection.values()):
            for target, method in choice.items():
                if target not in TARGETS:
                    raise PredictionError(f"Unknown target '{target}' in the selection; targets are {list(TARGETS)}")
                self._check(target, method)
        self._baselines: dict[str, TaskBaseline] = {n: c(self.quantiles) for n, c in BASELINES.items()}
        self.version = version

    def _check(self, target: str, method: str) -> None:
        if method == LSTM and self.lstm is None:
            raise PredictionError(f"Selection uses the LSTM for {target} but no LSTM checkpoint was loaded")
        if method == GBM and self.gbm is None:
            raise PredictionError(f"Selection uses the gradient-boosted model for {target} but the checkpoint has "
                                  "none; retrain with `orchestrator train predictor`")
        if method == GBM and not self.gbm.has_bands and GBM not in self.bands:
            raise PredictionError(f"Selection uses the gradient-boosted model for {target}, whose checkpoint holds "
                                  "only its median models, but no calibrated band for it; run `orchestrator eval "
                                  "predictor --write-selection`")
        if method not in (LSTM, GBM) and method not in BASELINES:
            raise PredictionError(f"Unknown prediction method '{method}' for {target}; "
                                  f"use one of {[LSTM, GBM, *BASELINES]}")

    def trained_on(self, family: str | None) -> bool:
        """Whether the models trained on this family (else its band is widened: `ConformalBands.unseen_scale`)."""
        return bool(family) and self.prior is not None and family in self.prior.table

    def choice(self, family: str | None) -> dict[str, str]:
        """The method per target for a task of `family` (the overall choice for an unknown family)."""
        return {**self.selection, **self.family_selection.get(family or "", {})}

    def predict(self, task: TaskFeatures | TaskSpec, history: History | Sequence[Execution] | None = None,
                family: str | None = None, run_errors: Sequence[float] | None = None) -> Prediction:
        """Quantiles for one task given its category's finished executions (other categories are ignored).
        `run_errors`: `runtime_error` of the run's finished tasks so far; for a family the models never trained
        on, enough of them set the runtime band (`ConformalBands.with_run_errors`)."""
        features = TaskFeatures.from_task(task, family) if isinstance(task, TaskSpec) else task
        rows = _as_history(history, features.category)
        arrays = HistoryArrays.from_executions(rows)
        values, methods = self.predict_arrays(arrays, Query.from_features(features), run_errors)
        qs = [None if not np.isfinite(v).all() else Quantiles(self.quantiles, tuple(float(x) for x in v))
              for v in values]
        if qs[0] is None:
            raise PredictionError(f"No runtime prediction for category '{features.category}': the history is empty "
                                  "and no prior is loaded; load a trained model or give some history")
        return Prediction(features.category, qs[0], qs[1], qs[2], methods, len(rows))

    def runtime_error(self, task: TaskFeatures | TaskSpec, history: History | Sequence[Execution] | None,
                      family: str | None, actual: float) -> float | None:
        """How far off the runtime prediction of a task that has just finished was, from the history before it,
        on the calibration's scale (None without history: the prior is not what `run_errors` measures)."""
        features = TaskFeatures.from_task(task, family) if isinstance(task, TaskSpec) else task
        arrays = HistoryArrays.from_executions(_as_history(history, features.category))
        if not len(arrays):
            return None
        values, _ = self.predict_arrays(arrays, Query.from_features(features))
        median = float(np.interp(0.5, self.quantiles, values[0]))
        return normalised_error(actual, median, float(history_context(arrays)[0][0]))

    def predict_arrays(self, history: HistoryArrays, query: Query,
                       run_errors: Sequence[float] | None = None) -> tuple[np.ndarray, dict[str, str]]:
        if not len(history):
            if self.prior is None:
                return np.full((3, len(self.quantiles)), np.nan), {t: "none" for t in TARGETS}
            return self.prior.predict(history, query), {t: "prior" for t in TARGETS}
        cache: dict[str, np.ndarray] = {}
        out = np.full((3, len(self.quantiles)), np.nan)
        methods = {}
        context = None
        for k, (target, method) in enumerate(self.choice(query.family).items()):
            if method not in cache:
                if method == LSTM:
                    p = self.lstm.predict(history, query)
                elif method == GBM:
                    band = self.bands.get(GBM)
                    p = self.gbm.predict(history, query, frozenset(int(k) for k in band.table) if band else frozenset())
                else:
                    p = self._baselines[method].predict(history, query)
                if method in self.bands:
                    context = context or history_context(history)
                    band, unseen = self.bands[method], not self.trained_on(query.family)
                    calibrated = band.apply(p[None], context[0][None], [context[1]], np.array([unseen]))
                    if unseen and run_errors is not None and target == "runtime":  # the run's own errors, if enough
                        plain = band.apply(p[None], context[0][None], [context[1]])
                        from_run = band.with_run_errors(plain, context[0][None], run_errors)
                        calibrated = calibrated if from_run is None else from_run
                    p = calibrated[0]
                cache[method] = p
            out[k] = cache[method][k]
            methods[target] = method
        return out, methods

    @classmethod
    def load(cls, version: str = "latest", models_dir: str | Path | None = None) -> "Predictor":
        """The checkpoint `version` (LSTM, and the gradient-boosted model where it holds one) plus the selection
        and bands written by the last `orchestrator eval predictor --write-selection` (`selection.json` beside
        the versions); without one, the LSTM for every target."""
        directory = Path(models_dir) if models_dir else load_config().models_path("predictor")
        state, metadata, _ = load_checkpoint(directory, version)
        lstm = LSTMTaskPredictor.from_state(state)
        gbm = TaskGBM.from_state(state["gbm"]) if state.get("gbm") else None
        saved: dict[str, Any] = {}
        sel_path = directory / "selection.json"
        if sel_path.exists():
            try:
                saved = json.loads(sel_path.read_text())
            except json.JSONDecodeError as exc:
                raise PredictionError(f"Cannot parse '{sel_path}': {exc}; re-run orchestrator eval predictor") from None
        bands = {m: ConformalBands.from_dict(d) for m, d in (saved.get("bands") or {}).items()}
        return cls(lstm, saved.get("selection"), version=metadata.get("version"), gbm=gbm,
                   family_selection=saved.get("families"), bands=bands)


def write_selection(directory: Path, selection: dict[str, str], evidence: dict[str, Any],
                    families: dict[str, dict[str, str]] | None = None,
                    bands: dict[str, ConformalBands] | None = None) -> Path:
    """Record which method each target (and family) should use and each method's calibrated band (called by
    the evaluation)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "selection.json"
    path.write_text(json.dumps({"selection": selection, "families": families or {},
                                "bands": {m: b.to_dict() for m, b in (bands or {}).items()}, "evidence": evidence,
                                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    return path

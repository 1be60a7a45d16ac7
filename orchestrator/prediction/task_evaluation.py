"""Evaluation of the task predictors on data they were not trained on: (a) the latest runs of every family
(time order), (b) each family held out entirely; LSTM beside its baselines in one table, plus the online curve
(error as more of the run finishes) and the prediction latency."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .baselines import BASELINES, Prior
from .calibration import ConformalBands, contexts, to_scale
from .config import PredictionConfig
from .features import TARGETS, ExecutionTable, Execution, TaskFeatures
from .history_arrays import HistoryArrays, Query
from .metrics import accuracy, coverage, pinball
from .predictor import LSTM, LSTMTaskPredictor, Predictor
from .task_gbm import GBM, TaskGBM
from .task_training import Episode, category_groups, fit_task_model, split_validation_runs


def time_split(table: ExecutionTable, test_fraction: float) -> tuple[list[int], list[int]]:
    """The latest `test_fraction` of each family's runs (by execution time, at least one) are the test runs."""
    train, test = [], []
    for fam in table.families:
        runs = table.runs_of_family(fam)
        k = max(1, int(round(test_fraction * len(runs))))
        train += runs[:-k]
        test += runs[-k:]
    return sorted(train), sorted(test)


def held_out_episodes(table: ExecutionTable, runs: Sequence[int], fraction: float, with_prior_runs: bool,
                  max_history: int, query_from: float | None = None) -> list[Episode]:
    """For each category of each run: history = the first floor(fraction x n) tasks (plus, if
    `with_prior_runs`, the category's executions in earlier runs of the family); queries = the tasks after
    them, or — with `query_from` — the tasks after ceil(query_from x n), so curves over fractions share queries."""
    episodes = []
    for (run, cat), rows in category_groups(table, runs).items():
        n = rows.size
        k = int(np.floor(fraction * n))
        start = k if query_from is None else max(k, int(np.ceil(query_from * n)))
        prior = np.zeros(0, dtype=np.int64)
        if with_prior_runs:
            fam = table.run_family[run]
            earlier = [r for r in range(run) if table.run_family[r] == fam]
            p = table.select_runs(earlier)
            prior = p[table.category[p] == cat][-max_history:]
        hist = np.concatenate([prior, rows[:k]])[-max_history:]
        same = np.concatenate([np.zeros(prior.size, bool), np.ones(k, bool)])[-max_history:]
        for j in rows[start:]:
            episodes.append(Episode(hist, same, int(j)))
    return episodes


Method = Callable[[list[HistoryArrays], list[Query]], np.ndarray]


def _grouped(predictor) -> "Method":
    """Batch function over a predictor with `predict_group`, fitting once per distinct history object."""
    def run(hs: list[HistoryArrays], qs: list[Query]) -> np.ndarray:
        groups: dict[int, list[int]] = {}
        for i, h in enumerate(hs):
            groups.setdefault(id(h), []).append(i)
        out = np.empty((len(hs), 3, predictor.quantiles.size))
        for idx in groups.values():
            out[idx] = predictor.predict_group(hs[idx[0]], [qs[i] for i in idx])
        return out
    return run


def with_prior(baseline, prior: Prior) -> Method:
    """A baseline as a batch function that falls back to the prior for empty histories, as the LSTM does."""
    grouped, fallback = _grouped(baseline), _grouped(prior)

    def run(hs: list[HistoryArrays], qs: list[Query]) -> np.ndarray:
        out = np.empty((len(hs), 3, baseline.quantiles.size))
        empty = np.array([len(h) == 0 for h in hs])
        for sel, fn in ((~empty, grouped), (empty, fallback)):
            idx = np.flatnonzero(sel)
            if idx.size:
                out[idx] = fn([hs[i] for i in idx], [qs[i] for i in idx])
        return out
    return run


def method_table(lstm: LSTMTaskPredictor, prior: Prior, quantiles: tuple[float, ...],
                 gbm: TaskGBM | None = None) -> dict[str, Method]:
    """Every method as a batch function; all share the prior for empty histories."""
    methods: dict[str, Method] = {LSTM: lstm.predict_batch}
    if gbm is not None:
        methods[GBM] = gbm.predict_batch
    for name, cls in BASELINES.items():
        methods[name] = with_prior(cls(quantiles), prior)
    empty = HistoryArrays.empty()
    methods["prior"] = lambda hs, qs: prior.predict_group(empty, list(qs))  # the fallback alone, no history
    return methods


def calibrated(fn: Method, bands: ConformalBands) -> Method:
    """The method with its p10/p90 replaced by the conformal band fitted on its calibration errors."""
    def run(hs: list[HistoryArrays], qs: list[Query]) -> np.ndarray:
        spreads, groups = contexts(hs)
        return bands.apply(fn(hs, qs), spreads, groups)
    return run


@dataclass
class Scored:
    rows: list[dict] = field(default_factory=list)

    def add(self, **row) -> None:
        self.rows.append(row)


@dataclass
class Batch:
    """Episodes made ready for the methods: histories, queries, truth (n, 3), family names and contexts."""

    histories: list[HistoryArrays]
    queries: list[Query]
    truth: np.ndarray
    families: list[str]
    spreads: np.ndarray
    groups: list[str]

    def __len__(self) -> int:
        return len(self.queries)

    @classmethod
    def of(cls, table: ExecutionTable, episodes: list[Episode]) -> "Batch":
        families = [table.families[table.family[e.query]] for e in episodes]
        cache: dict[bytes, HistoryArrays] = {}
        hs = [cache.setdefault(e.history.tobytes() + e.same_run.tobytes(),
                               HistoryArrays.from_table(table, e.history, e.same_run)) for e in episodes]
        qs = [Query.from_table(table, e.query, fam) for e, fam in zip(episodes, families)]
        q_idx = np.array([e.query for e in episodes], dtype=np.int64)
        truth = (np.stack([table.runtime[q_idx], table.cpu[q_idx], table.memory[q_idx]], axis=1)
                 if episodes else np.zeros((0, 3)))
        spreads, groups = contexts(hs)
        return cls(hs, qs, truth, families, spreads, groups)


def _relative_width(p: np.ndarray, mid: int) -> float:
    """Median over tasks of (p90 - p10) / p50."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (p[:, -1] - p[:, 0]) / p[:, mid]
    w = w[np.isfinite(w)]
    return float(np.median(w)) if w.size else float("nan")


def score_predictions(batch: Batch, preds: dict[str, np.ndarray], quantiles: tuple[float, ...], label: str,
                      out: Scored, by_family: bool = True, raw: dict[str, np.ndarray] | None = None) -> None:
    """Accuracy (1 - WAPE of the median), p10-p90 coverage, the band's median relative width and pinball loss
    per method and target; with `raw`, also the coverage of the method's own band before calibration."""
    if not len(batch):
        return
    qarr = np.asarray(quantiles)
    mid = int(np.argmin(np.abs(qarr - 0.5)))
    truth = batch.truth
    groups = {"ALL": np.ones(len(batch), bool)}
    if by_family:
        for fam in sorted(set(batch.families)):
            groups[fam] = np.array([f == fam for f in batch.families])
    for group, sel in groups.items():
        for name, p in preds.items():
            row = {"eval": label, "family": group, "method": name, "tasks": int(sel.sum())}
            for k, target in enumerate(TARGETS):
                y = truth[sel, k]
                known = np.isfinite(y)
                nan = float("nan")
                row[f"{target}_accuracy"] = accuracy(y[known], p[sel, k, mid][known]) if known.any() else nan
                row[f"{target}_coverage"] = coverage(y, p[sel, k, 0], p[sel, k, -1]) if known.any() else nan
                row[f"{target}_width"] = _relative_width(p[sel, k][known], mid) if known.any() else nan
                if raw is not None and name in raw:
                    r = raw[name]
                    row[f"{target}_coverage_raw"] = coverage(y, r[sel, k, 0], r[sel, k, -1]) if known.any() else nan
                scale = np.abs(y[known]).mean() if known.any() else 1.0
                row[f"{target}_pinball"] = (pinball(y[known] / scale, p[sel, k][known] / scale, qarr)
                                            if known.any() else nan)
                row[f"{target}_n"] = int(known.sum())
            out.add(**row)


def score_methods(table: ExecutionTable, episodes: list[Episode], methods: dict[str, Method],
                  quantiles: tuple[float, ...], label: str, out: Scored,
                  by_family: bool = True) -> dict[str, np.ndarray]:
    """`score_predictions` of every method on these episodes; returns the predictions."""
    batch = Batch.of(table, episodes)
    preds = {name: fn(batch.histories, batch.queries) for name, fn in methods.items()} if len(batch) else {}
    score_predictions(batch, preds, quantiles, label, out, by_family)
    return preds


def online_curve(table: ExecutionTable, runs: Sequence[int], methods: dict[str, Method], cfg: PredictionConfig,
                 out: Scored, with_prior_runs: bool) -> None:
    """Runtime accuracy on the same queries (the last 40% of each category) as more siblings finish."""
    fractions = cfg.evaluation.online_fractions
    last = max(fractions)
    for f in fractions:
        eps = held_out_episodes(table, runs, f, with_prior_runs, cfg.task_model.max_history, query_from=last)
        score_methods(table, eps, methods, cfg.task_model.quantiles, f"online@{f:.2f}", out, by_family=False)


def measure_latency(predictor: Predictor, trials: int = 1000, history_size: int = 32, seed: int = 0) -> dict[str, float]:
    """Wall time of `Predictor.predict` for one task with a full history, single thread, in milliseconds."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    history = [Execution("mProject", float(rng.uniform(5, 50)), float(rng.uniform(0.5, 1.0)),
                         float(rng.uniform(1e7, 1e8)), float(rng.uniform(1e6, 1e7)), float(rng.uniform(1e6, 1e7)),
                         bool(i % 2)) for i in range(history_size)]
    task = TaskFeatures("mProject", 4e6, 8e6)
    for _ in range(20):
        predictor.predict(task, history)
    times = np.empty(trials)
    for i in range(trials):
        t0 = time.perf_counter()
        predictor.predict(task, history)
        times[i] = time.perf_counter() - t0
    torch.set_num_threads(threads)
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3),
            "mean_ms": float(times.mean() * 1e3), "trials": trials, "history_size": history_size}


SELECTED = "selected"
PER_FAMILY = "per-family"  # the choice per target and family, scored beside the shipped one
MIN_FAMILY_TASKS = 100  # below this many calibration tasks a family uses the overall choice
FAMILY_MARGIN = 0.05  # a family's own choice must beat the overall choice by this much 1-WAPE on calibration


@dataclass
class TaskEvaluation:
    rows: list[dict]
    selection: dict[str, str]  # per target, for families without their own choice (and unseen ones)
    latency: dict[str, float]
    models: dict[str, LSTMTaskPredictor]
    info: dict
    family_selection: dict[str, dict[str, str]] = field(default_factory=dict)  # family -> target -> method
    bands: dict[str, ConformalBands] = field(default_factory=dict)  # method -> its calibration (time split)
    gbms: dict[str, TaskGBM] = field(default_factory=dict)
    methods: dict[str, Method] = field(default_factory=dict)  # the time split's, calibrated


def _best(rows: list[dict], label: str, family: str, min_tasks: int = 0) -> dict[str, str]:
    best: dict[str, str] = {}
    for target in TARGETS:
        cands = [r for r in rows if r["eval"] == label and r["family"] == family
                 and r["method"] not in ("prior", SELECTED, PER_FAMILY) and np.isfinite(r[f"{target}_accuracy"])
                 and r[f"{target}_n"] >= min_tasks]
        if cands:
            best[target] = max(cands, key=lambda r: r[f"{target}_accuracy"])["method"]
    return best


def select_per_family(rows: list[dict], label: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The overall choice per target and, for each family with enough calibration tasks, its own choice where
    it beats the overall one by at least `FAMILY_MARGIN` there (smaller differences on a few runs do not carry
    over to the next runs)."""
    default = _best(rows, label, "ALL")
    acc = {(r["family"], r["method"]): r for r in rows if r["eval"] == label}
    families: dict[str, dict[str, str]] = {}
    for fam in sorted({r["family"] for r in rows if r["eval"] == label and r["family"] != "ALL"}):
        own = {}
        for t, m in _best(rows, label, fam, MIN_FAMILY_TASKS).items():
            base = acc.get((fam, default.get(t)))
            if m != default.get(t) and (base is None or not np.isfinite(base[f"{t}_accuracy"])
                                        or acc[(fam, m)][f"{t}_accuracy"] >= base[f"{t}_accuracy"] + FAMILY_MARGIN):
                own[t] = m
        if own:
            families[fam] = own
    return default, families


def selected_predictions(preds: dict[str, np.ndarray], families: Sequence[str], default: dict[str, str],
                         per_family: dict[str, dict[str, str]]) -> np.ndarray:
    """Each task's prediction per target from the method chosen for its family (else the overall choice)."""
    first = next(iter(preds.values()))
    out = np.full_like(first, np.nan)
    for i, fam in enumerate(families):
        choice = {**default, **per_family.get(fam, {})}
        for k, target in enumerate(TARGETS):
            method = choice.get(target)
            if method in preds:
                out[i, k] = preds[method][i, k]
    return out


def selected_method(methods: dict[str, Method], default: dict[str, str],
                    per_family: dict[str, dict[str, str]]) -> Method:
    def run(hs: list[HistoryArrays], qs: list[Query]) -> np.ndarray:
        used = set(default.values()) | {m for c in per_family.values() for m in c.values()}
        preds = {m: methods[m](hs, qs) for m in used if m in methods}
        return selected_predictions(preds, [q.family or "" for q in qs], default, per_family)
    return run


@dataclass
class Fold:
    """One training set's models, their calibration and the choice made on the calibration episodes."""

    lstm: LSTMTaskPredictor
    gbm: TaskGBM
    prior: Prior
    raw: dict[str, Method]
    methods: dict[str, Method]  # calibrated
    bands: dict[str, ConformalBands]
    default: dict[str, str]
    per_family: dict[str, dict[str, str]]
    info: dict
    family_selection: bool = False  # whether the shipped choice uses `per_family`


def fit_fold(table: ExecutionTable, runs: Sequence[int], cfg: PredictionConfig, label: str,
             with_prior_runs: bool = True) -> Fold:
    """Train the LSTM and the gradient-boosted model on `runs` (both leave the latest runs of each family out
    for validation), fit every method's conformal band on those validation runs (history with and without
    earlier runs, cut as the evaluation cuts), and choose the method per target and family there on the
    episodes cut like the ones that will be scored (`with_prior_runs`)."""
    tm = cfg.task_model
    frac = cfg.evaluation.history_fraction
    prior = Prior.fit(table, table.select_runs(runs), tm.quantiles)
    model, fit_info = fit_task_model(table, runs, tm)
    lstm = LSTMTaskPredictor(model, tm, prior, memory_trained=fit_info["memory_examples"] > 0)
    # The gradient-boosted model's errors are measured with a copy that did not see the validation runs; the
    # one scored is then refitted on every run, its band the copy's (a little wider than its own would be).
    gbm = TaskGBM.fit(table, runs, tm, prior, holdout=True)
    raw = method_table(lstm, prior, tm.quantiles, gbm)
    _, val_runs = split_validation_runs(table, runs, tm.validation_fraction)
    chosen_on = held_out_episodes(table, val_runs, frac, with_prior_runs, tm.max_history)
    episodes = chosen_on + held_out_episodes(table, val_runs, frac, not with_prior_runs, tm.max_history)
    batch = Batch.of(table, episodes)
    bands: dict[str, ConformalBands] = {}
    scored = Scored()
    default: dict[str, str] = {}
    per_family: dict[str, dict[str, str]] = {}
    if len(batch):
        preds = {name: fn(batch.histories, batch.queries) for name, fn in raw.items()}
        bands = {name: ConformalBands.fit(p, batch.truth, batch.spreads, batch.groups, tm.quantiles)
                 for name, p in preds.items()}
        part = Batch(batch.histories[:len(chosen_on)], batch.queries[:len(chosen_on)],
                     batch.truth[:len(chosen_on)], batch.families[:len(chosen_on)],
                     batch.spreads[:len(chosen_on)], batch.groups[:len(chosen_on)])
        score_predictions(part, {n: p[:len(chosen_on)] for n, p in preds.items()}, tm.quantiles, label, scored)
        default, per_family = select_per_family(scored.rows, label)
    gbm = TaskGBM.fit(table, runs, tm, prior)
    raw[GBM] = gbm.predict_batch
    methods = {name: calibrated(fn, bands[name]) if name in bands else fn for name, fn in raw.items()}
    info = {**fit_info, "gbm": gbm.info, "calibration_runs": [table.runs[r] for r in val_runs],
            "calibration_tasks": len(batch), "selection": default, "family_selection": per_family,
            "calibration_rows": scored.rows if len(batch) else []}
    return Fold(lstm, gbm, prior, raw, methods, bands, default, per_family, info,
                cfg.evaluation.family_selection)


@dataclass
class Scoring:
    """A fold's predictions on its scored episodes, kept so that bands can be applied to them later."""

    fold: Fold
    batch: Batch
    raw: dict[str, np.ndarray]
    runs: np.ndarray  # the run of each scored episode
    sibling_errors: dict[str, dict[int, np.ndarray]]  # method -> run -> normalised runtime errors on its siblings


def predict_fold(table: ExecutionTable, fold: Fold, episodes: list[Episode]) -> Scoring:
    batch = Batch.of(table, episodes)
    raw = {name: fn(batch.histories, batch.queries) for name, fn in fold.raw.items()} if len(batch) else {}
    runs = np.array([int(table.run[e.query]) for e in episodes], dtype=np.int64)
    return Scoring(fold, batch, raw, runs, sibling_errors(table, episodes, fold.raw) if len(batch) else {})


def sibling_errors(table: ExecutionTable, episodes: list[Episode], methods: dict[str, Method]
                   ) -> dict[str, dict[int, np.ndarray]]:
    """For each method and run: its normalised runtime errors (`ConformalBands`' scale) on the run's siblings that
    had finished when the episodes were cut, each predicted from what had finished before it. What the method
    got wrong on this run so far: the evidence a run-level band is made of."""
    first: dict[tuple[int, int], Episode] = {}
    for e in episodes:
        first.setdefault((int(table.run[e.query]), int(table.category[e.query])), e)
    cut, runs = [], []
    for (run, _cat), e in first.items():
        prior, sibs = e.history[~e.same_run], e.history[e.same_run]
        for t in range(sibs.size):
            if prior.size + t:
                cut.append(Episode(np.concatenate([prior, sibs[:t]]),
                                   np.concatenate([np.zeros(prior.size, bool), np.ones(t, bool)]), int(sibs[t])))
                runs.append(run)
    if not cut:
        return {}
    batch, runs_arr = Batch.of(table, cut), np.asarray(runs)
    out: dict[str, dict[int, np.ndarray]] = {}
    for name, fn in methods.items():
        p = fn(batch.histories, batch.queries)
        err = (to_scale(batch.truth[:, 0], 0) - to_scale(p[:, 0, 1], 0)) / batch.spreads[:, 0]
        out[name] = {int(r): err[(runs_arr == r) & np.isfinite(err)] for r in np.unique(runs_arr)}
    return out


def score_fold(scoring: Scoring, quantiles: tuple[float, ...], label: str, out: Scored, by_family: bool = True,
               unseen_scale: dict[str, dict[str, float]] | None = None) -> None:
    """Score a fold's predictions with its calibrated bands and the selected row. With `unseen_scale` (the scored
    family was never trained on), a run whose siblings already gave MIN_RUN_ERRORS errors gets its runtime band
    from them (`run_band`); other runs get the band widened by `unseen_scale[method]`."""
    fold, batch, raw = scoring.fold, scoring.batch, dict(scoring.raw)
    if not len(batch):
        return
    unseen = np.ones(len(batch), dtype=bool) if unseen_scale else None
    preds = {name: fold.bands[name].apply(p, batch.spreads, batch.groups, unseen, (unseen_scale or {}).get(name))
             if name in fold.bands else p for name, p in raw.items()}
    if unseen_scale:  # a family never trained on: where the run's own errors suffice, its runtime band follows them
        for name in preds:
            if name in fold.bands and name in scoring.sibling_errors:
                plain = fold.bands[name].apply(raw[name], batch.spreads, batch.groups)
                preds[name] = run_band(plain, preds[name], batch.spreads, scoring.runs, scoring.sibling_errors[name],
                                       fold.bands[name])
    shipped = fold.per_family if fold.family_selection else {}
    preds[SELECTED] = selected_predictions(preds, batch.families, fold.default, shipped)
    raw[SELECTED] = selected_predictions(raw, batch.families, fold.default, shipped)
    if fold.per_family and not fold.family_selection:
        preds[PER_FAMILY] = selected_predictions(preds, batch.families, fold.default, fold.per_family)
        raw[PER_FAMILY] = selected_predictions(raw, batch.families, fold.default, fold.per_family)
    score_predictions(batch, preds, quantiles, label, out, by_family, raw=raw)


def run_band(plain: np.ndarray, fallback: np.ndarray, spreads: np.ndarray, runs: np.ndarray,
             errors: dict[int, np.ndarray], bands: ConformalBands) -> np.ndarray:
    """`ConformalBands.with_run_errors` per run: runs with too few sibling errors keep `fallback`."""
    out = fallback.copy()
    for run in np.unique(runs):
        sel = runs == run
        widened = bands.with_run_errors(plain[sel], spreads[sel], errors.get(int(run), np.zeros(0)))
        if widened is not None:
            out[sel] = widened
    return out


def unseen_family_scales(scorings: dict[str, Scoring]) -> dict[str, dict[str, dict[str, float]]]:
    """Per held-out family, method and target: the widening factor that brings the band's coverage to nominal
    on that family. A family's band is then widened by the median factor of the OTHER families (so its own
    outcomes never set it), and the shipped model by the median over all of them."""
    from .calibration import scale_for_coverage

    found: dict[str, dict[str, dict[str, float]]] = {}
    for fam, sc in scorings.items():
        if not len(sc.batch):
            continue
        found[fam] = {}
        for name, p in sc.raw.items():
            band = sc.fold.bands.get(name)
            if band is None:
                continue
            found[fam][name] = {str(k): scale_for_coverage(band, p, sc.batch.truth, sc.batch.spreads, sc.batch.groups,
                                                           k, band.high - band.low) for k in range(3)}
    return found


def pooled_scales(found: dict[str, dict[str, dict[str, float]]],
                  leave_out: str | None = None) -> dict[str, dict[str, float]]:
    """Median factor per method and target over the held-out families (but `leave_out`)."""
    per: dict[str, dict[str, list[float]]] = {}
    for fam, methods in found.items():
        if fam == leave_out:
            continue
        for name, ks in methods.items():
            for k, v in ks.items():
                if np.isfinite(v):
                    per.setdefault(name, {}).setdefault(k, []).append(v)
    return {name: {k: float(np.median(v)) for k, v in ks.items()} for name, ks in per.items()}


def evaluate_task_predictors(table: ExecutionTable, cfg: PredictionConfig, lofo: bool = True,
                             progress: Callable[[str], None] | None = None) -> TaskEvaluation:
    """Train on the earlier runs and score the later ones (eval 'time-split'); then, for each family, train on
    the others and score it with only 20% of each category's history (eval 'lofo:<family>'). Every method's
    band is calibrated, and the `selected` row made, on the latest training runs, never on the scored ones."""
    say = progress or (lambda _msg: None)
    frac = cfg.evaluation.history_fraction
    tm = cfg.task_model
    out = Scored()
    models: dict[str, LSTMTaskPredictor] = {}
    gbms: dict[str, TaskGBM] = {}
    info: dict = {}

    train_runs, test_runs = time_split(table, cfg.evaluation.test_fraction)
    say(f"time split: training the LSTM and the gradient-boosted model on {len(train_runs)} runs, "
        f"testing on {len(test_runs)}")
    fold = fit_fold(table, train_runs, cfg, "calibration")
    models["time-split"], gbms["time-split"] = fold.lstm, fold.gbm
    info["time-split"] = {**fold.info, "test_runs": [table.runs[r] for r in test_runs]}
    out.rows += [{**r, "eval": "calibration"} for r in fold.info["calibration_rows"]]  # where the choice was made
    eps = held_out_episodes(table, test_runs, frac, True, tm.max_history)
    score_fold(predict_fold(table, fold, eps), tm.quantiles, f"time-split@{frac:.0%}", out)
    say("time split: online curve")
    shipped = fold.per_family if fold.family_selection else {}
    online_curve(table, test_runs, {**fold.methods, SELECTED: selected_method(fold.methods, fold.default, shipped)},
                 cfg, out, with_prior_runs=True)

    if lofo:
        scorings: dict[str, Scoring] = {}
        for fam in table.families:
            say(f"leave-one-family-out: {fam}")
            fam_idx = table.families.index(fam)
            others = [r for r in range(len(table.runs)) if table.run_family[r] != fam_idx]
            held = [r for r in range(len(table.runs)) if table.run_family[r] == fam_idx]
            f = fit_fold(table, others, cfg, "calibration", with_prior_runs=False)
            models[f"lofo:{fam}"], gbms[f"lofo:{fam}"] = f.lstm, f.gbm
            info[f"lofo:{fam}"] = f.info
            scorings[fam] = predict_fold(table, f, held_out_episodes(table, held, frac, False, tm.max_history))
        # A family never trained on is less predictable than the calibration runs (families it trained on)
        # say: each held-out family's band is widened by what the other held-out families needed.
        found = unseen_family_scales(scorings)
        info["unseen_family_scales"] = found
        for fam, sc in scorings.items():
            score_fold(sc, tm.quantiles, f"lofo:{fam}@{frac:.0%}", out, by_family=False,
                       unseen_scale=pooled_scales(found, leave_out=fam))
        for name, ks in pooled_scales(found).items():
            if name in fold.bands:
                fold.bands[name].unseen_scale = ks

    say("latency")
    predictor = Predictor(fold.lstm, fold.default, gbm=fold.gbm, family_selection=shipped, bands=fold.bands)
    latency = measure_latency(predictor, cfg.evaluation.latency_trials)
    info["family_choice"] = fold.per_family  # found on the calibration runs, shipped only with family_selection
    return TaskEvaluation(out.rows, fold.default, latency, models, info, shipped, fold.bands, gbms, fold.methods)

"""Evaluation of the task predictors on data they were not trained on: (a) the latest runs of every family
(time order), (b) each family held out entirely; LSTM beside its baselines in one table, plus the online curve
(error as more of the run finishes) and the prediction latency."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .baselines import BASELINES, Prior
from .config import PredictionConfig
from .features import TARGETS, ExecutionTable, Execution, TaskFeatures
from .history_arrays import HistoryArrays, Query
from .metrics import accuracy, coverage, pinball
from .predictor import LSTM, LSTMTaskPredictor, Predictor
from .task_training import Episode, category_groups, fit_task_model


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


def method_table(lstm: LSTMTaskPredictor, prior: Prior, quantiles: tuple[float, ...]) -> dict[str, Method]:
    """Every method as a batch function; all share the prior for empty histories."""
    methods: dict[str, Method] = {LSTM: lstm.predict_batch}
    for name, cls in BASELINES.items():
        methods[name] = with_prior(cls(quantiles), prior)
    empty = HistoryArrays.empty()
    methods["prior"] = lambda hs, qs: prior.predict_group(empty, list(qs))  # the fallback alone, no history
    return methods


@dataclass
class Scored:
    rows: list[dict] = field(default_factory=list)

    def add(self, **row) -> None:
        self.rows.append(row)


def score_methods(table: ExecutionTable, episodes: list[Episode], methods: dict[str, Method],
                  quantiles: tuple[float, ...], label: str, out: Scored, by_family: bool = True) -> dict[str, np.ndarray]:
    """Accuracy (1 - WAPE of the median), p10-p90 coverage and pinball loss per method and target."""
    if not episodes:
        return {}
    families = [table.families[table.family[e.query]] for e in episodes]
    cache: dict[bytes, HistoryArrays] = {}
    hs = [cache.setdefault(e.history.tobytes() + e.same_run.tobytes(),
                           HistoryArrays.from_table(table, e.history, e.same_run)) for e in episodes]
    qs = [Query.from_table(table, e.query, fam) for e, fam in zip(episodes, families)]
    q_idx = np.array([e.query for e in episodes])
    truth = np.stack([table.runtime[q_idx], table.cpu[q_idx], table.memory[q_idx]], axis=1)
    qarr = np.asarray(quantiles)
    mid = int(np.argmin(np.abs(qarr - 0.5)))
    preds = {name: fn(hs, qs) for name, fn in methods.items()}
    groups = {"ALL": np.ones(len(episodes), bool)}
    if by_family:
        for fam in sorted(set(families)):
            groups[fam] = np.array([f == fam for f in families])
    for group, sel in groups.items():
        for name, p in preds.items():
            row = {"eval": label, "family": group, "method": name, "tasks": int(sel.sum())}
            for k, target in enumerate(TARGETS):
                y = truth[sel, k]
                known = np.isfinite(y)
                row[f"{target}_accuracy"] = accuracy(y[known], p[sel, k, mid][known]) if known.any() else float("nan")
                row[f"{target}_coverage"] = coverage(y, p[sel, k, 0], p[sel, k, -1]) if known.any() else float("nan")
                scale = np.abs(y[known]).mean() if known.any() else 1.0
                row[f"{target}_pinball"] = (pinball(y[known] / scale, p[sel, k][known] / scale, qarr)
                                            if known.any() else float("nan"))
                row[f"{target}_n"] = int(known.sum())
            out.add(**row)
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


@dataclass
class TaskEvaluation:
    rows: list[dict]
    selection: dict[str, str]
    latency: dict[str, float]
    models: dict[str, LSTMTaskPredictor]
    info: dict


def choose_selection(rows: list[dict], label: str) -> dict[str, str]:
    """Per target, the method with the best accuracy on the ALL row of evaluation `label` (prior excluded)."""
    best: dict[str, str] = {}
    for target in TARGETS:
        cands = [r for r in rows if r["eval"] == label and r["family"] == "ALL" and r["method"] != "prior"
                 and np.isfinite(r[f"{target}_accuracy"])]
        if cands:
            best[target] = max(cands, key=lambda r: r[f"{target}_accuracy"])["method"]
    return best


def evaluate_task_predictors(table: ExecutionTable, cfg: PredictionConfig, lofo: bool = True,
                             progress: Callable[[str], None] | None = None) -> TaskEvaluation:
    """Train on the earlier runs and score the later ones (eval 'time-split'); then, for each family, train on
    the others and score it with only 20% of each category's history (eval 'lofo:<family>')."""
    say = progress or (lambda _msg: None)
    frac = cfg.evaluation.history_fraction
    tm = cfg.task_model
    out = Scored()
    models: dict[str, LSTMTaskPredictor] = {}
    info: dict = {}

    train_runs, test_runs = time_split(table, cfg.evaluation.test_fraction)
    say(f"time split: training the LSTM on {len(train_runs)} runs, testing on {len(test_runs)}")
    rows = table.select_runs(train_runs)
    prior = Prior.fit(table, rows, tm.quantiles)
    model, fit_info = fit_task_model(table, train_runs, tm)
    lstm = LSTMTaskPredictor(model, tm, prior, memory_trained=fit_info["memory_examples"] > 0)
    models["time-split"] = lstm
    info["time-split"] = {**fit_info, "test_runs": [table.runs[r] for r in test_runs]}
    methods = method_table(lstm, prior, tm.quantiles)
    eps = held_out_episodes(table, test_runs, frac, True, tm.max_history)
    score_methods(table, eps, methods, tm.quantiles, f"time-split@{frac:.0%}", out)
    say("time split: online curve")
    online_curve(table, test_runs, methods, cfg, out, with_prior_runs=True)

    if lofo:
        for fam in table.families:
            say(f"leave-one-family-out: {fam}")
            fam_idx = table.families.index(fam)
            others = [r for r in range(len(table.runs)) if table.run_family[r] != fam_idx]
            held = [r for r in range(len(table.runs)) if table.run_family[r] == fam_idx]
            prior = Prior.fit(table, table.select_runs(others), tm.quantiles)
            model, fit_info = fit_task_model(table, others, tm)
            lstm_f = LSTMTaskPredictor(model, tm, prior, memory_trained=fit_info["memory_examples"] > 0)
            models[f"lofo:{fam}"] = lstm_f
            info[f"lofo:{fam}"] = fit_info
            eps = held_out_episodes(table, held, frac, False, tm.max_history)
            score_methods(table, eps, method_table(lstm_f, prior, tm.quantiles), tm.quantiles,
                          f"lofo:{fam}@{frac:.0%}", out, by_family=False)

    selection = choose_selection(out.rows, f"time-split@{frac:.0%}")
    say("latency")
    latency = measure_latency(Predictor(lstm, {t: LSTM for t in TARGETS}), cfg.evaluation.latency_trials)
    return TaskEvaluation(out.rows, selection, latency, models, info)

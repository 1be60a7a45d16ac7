"""The optimization engine measured against Monte Carlo ground truth, beside the baselines it must beat.

Protocol (`orchestrator eval optimizer`):
- Workflows: every WfCommons file of `--traces` (default: the bundled real traces) with `min_tasks..max_tasks`
  tasks, up to `per_family` per family spread over sizes, plus synthetic instances of families no model trained on
  (`--unseen`, from the wfcommons recipes: blast, bwa, seismology, soykb, srasearch).
- Each on its tight cluster (`groundtruth.tight_cluster`: half its average parallelism) under `policy`.
- Ground truth: `gt_samples` Monte Carlo draws (10,000) for the makespan mean/P50/P90; each task's gain (drop in
  the expected makespan at 30% faster) with common random numbers over the first `gain_samples` of those draws.
- The learned model is scored only on families it never trained on: a bundled family is scored by a model trained
  on the other three (leave one family out; `train_model` in process), an unseen family by the shipped model.
- Rows per workflow and method: makespan error (mean, P90), Spearman rho and precision@5 of the task ranking by
  gain, compute seconds. Baselines: critical path on mean durations, one list schedule on means, slack on means,
  Monte Carlo with 1,000 samples (criticality index x duration for the ranking), and Monte Carlo at the learned
  model's time budget (the honest rival at equal time).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..dag import analyse, dag_arrays
from ..model import Workflow
from .durations import TaskDurations, durations_for
from .groundtruth import (SPEEDUP, TRAINING_FAMILIES, UNSEEN_FAMILIES, MonteCarloResult, monte_carlo,
                          synthetic_workflows, tight_cluster)
from .montecarlo import ListScheduler

TOP_K = 5


@dataclass
class EvalConfig:
    traces: Path | None = None
    out: Path = Path("results/optimizer")
    policy: str = "srpt-cp"
    min_tasks: int = 10
    max_tasks: int = 1000
    per_family: int = 6
    unseen: tuple[str, ...] = UNSEEN_FAMILIES
    unseen_sizes: tuple[int, ...] = (30, 100, 300, 1000)
    gt_samples: int = 10_000
    gain_samples: int = 2_000
    baseline_samples: int = 1_000
    lofo: bool = True
    lofo_epochs: int | None = None  # None: the training config's
    seed: int = 0
    cache: bool = True
    served: bool = True  # score `analyze` (what `orchestrator analyze` serves) beside the rest
    recommendations_max_tasks: int = 200  # the top recommendation against every single change, up to this size


@dataclass
class GroundTruth:
    name: str
    family: str
    n: int
    nodes: int
    mean: float
    p50: float
    p90: float
    gains: np.ndarray
    criticality: np.ndarray
    seconds_10k: float  # wall time of the makespan Monte Carlo
    gain_seconds: float
    gain_samples: int
    gain_noise: float = float("nan")  # split-half Spearman of the gains (how well the labels agree with themselves)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _precision_at_k(pred: np.ndarray, true: np.ndarray, k: int = TOP_K) -> float:
    """Share of the predicted top k that are in the true top k (ties in the truth count in its favour: any task
    whose true gain reaches the k-th largest is a top-k task)."""
    k = min(k, len(true))
    if k == 0:
        return float("nan")
    top_pred = np.argsort(-pred, kind="stable")[:k]
    kth = np.sort(true)[::-1][k - 1]
    return float(np.mean(true[top_pred] >= kth - 1e-12 * max(1.0, abs(kth))))


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def ground_truth(wf: Workflow, cfg: EvalConfig, cache_dir: Path | None) -> tuple[GroundTruth, object, TaskDurations]:
    dag = dag_arrays(wf)
    td = durations_for(wf)
    cluster = tight_cluster(dag, td.mean)
    gain_samples = gain_samples_for(dag.n, cfg.gain_samples)
    key = _key(wf.name, dag.n, float(td.mean.sum()), [n.cpus for n in cluster.nodes], cfg.policy, cfg.gt_samples,
               gain_samples, cfg.seed, "v1")
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        d = json.loads(path.read_text())
        d["gains"] = np.asarray(d["gains"])
        d["criticality"] = np.asarray(d["criticality"])
        return GroundTruth(**d), cluster, td
    mc: MonteCarloResult = monte_carlo(dag, td, cluster, cfg.policy, cfg.gt_samples, 0, cfg.seed)
    # gains over the first `gain_samples` draws, in two halves: their mean is the gain over all of them, and how
    # well the halves rank the tasks alike says how noisy the labels are
    ls = ListScheduler(dag, cluster, td.mean, cfg.policy)
    draws = td.sample(cfg.gt_samples, seed=cfg.seed)[:gain_samples]
    half = gain_samples // 2
    t0 = time.perf_counter()
    ga, gb = ls.gains(draws[:half]), ls.gains(draws[half:2 * half])
    gain_seconds = time.perf_counter() - t0
    gt = GroundTruth(wf.name, wf.family or "unknown", dag.n, len(cluster.nodes), mc.mean, mc.p50, mc.p90,
                     (ga + gb) / 2, mc.criticality, mc.seconds, gain_seconds, 2 * half, _spearman(ga, gb))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = asdict(gt)
        d["gains"] = gt.gains.tolist()
        d["criticality"] = gt.criticality.tolist()
        path.write_text(json.dumps(d))
    return gt, cluster, td


def gain_samples_for(n: int, most: int) -> int:
    """Samples of the ground-truth gains: `most` up to 600 tasks, half that above (their cost is tasks x samples
    runs); the split-half agreement reported beside each workflow says how far the labels can be trusted."""
    return most if n <= 600 else max(100, most // 2)


def dag_shape(wf: Workflow, td: TaskDurations, gt: GroundTruth) -> str:
    """serial (average parallelism < 1.5), several-near-critical (3+ tasks critical in 10-90% of samples, or a
    work-weighted cv of 0.6 and more), or one-dominant-path."""
    dag = dag_arrays(wf)
    a = analyse(dag, td.mean)
    parallelism = float((td.mean * dag.cpus).sum()) / max(a.critical_path_length, 1e-9)
    if parallelism < 1.5:
        return "serial"
    near = int(np.sum((gt.criticality > 0.1) & (gt.criticality < 0.9)))
    weighted_cv = float(np.sum(td.cv * td.mean) / max(td.mean.sum(), 1e-9))
    if near >= 3 or weighted_cv >= 0.6:
        return "several-near-critical"
    return "one-dominant-path"


@dataclass
class MethodResult:
    method: str
    mean: float | None = None
    p90: float | None = None
    gain: np.ndarray | None = None
    seconds: float = 0.0


def baseline_methods(wf: Workflow, cluster, td: TaskDurations, cfg: EvalConfig,
                     equal_time_s: float | None = None) -> list[MethodResult]:
    dag = dag_arrays(wf)
    out = []
    t0 = time.perf_counter()
    a = analyse(dag, td.mean)
    on_cp = np.zeros(dag.n)
    on_cp[a.critical_path] = 1.0
    cp_gain = on_cp * SPEEDUP * td.mean
    out.append(MethodResult("critical path on means", a.critical_path_length, None, cp_gain,
                            time.perf_counter() - t0))
    t0 = time.perf_counter()
    slack_gain = np.maximum(SPEEDUP * td.mean - a.slack, 0.0) - 1e-9 * a.slack  # ties: the less slack first
    out.append(MethodResult("slack on means", None, None, slack_gain, time.perf_counter() - t0))
    t0 = time.perf_counter()
    ls = ListScheduler(dag, cluster, td.mean, cfg.policy)
    ms_means, _, _ = ls.run(td.mean)
    out.append(MethodResult("list schedule on means", ms_means, None, None, time.perf_counter() - t0))
    for label, samples in ((f"monte carlo {cfg.baseline_samples}", cfg.baseline_samples),
                           *((("monte carlo at the model's time", None),) if equal_time_s is not None else ())):
        if samples is None:  # as many samples as fit in the learned model's time (measured rate of the 1,000)
            rate = out[-1].seconds / cfg.baseline_samples
            samples = int(max(4, min(cfg.baseline_samples, equal_time_s / max(rate, 1e-9))))
            label = "monte carlo at the model's time"
        t0 = time.perf_counter()
        draws = td.sample(samples, seed=cfg.seed + 1)  # draws independent of the ground truth's
        tr = ls.trace(draws)
        out.append(MethodResult(label, float(tr.makespans.mean()), float(np.percentile(tr.makespans, 90)),
                                tr.criticality * SPEEDUP * td.mean, time.perf_counter() - t0))
    return out


def served_method(wf: Workflow, cluster, td: TaskDurations, cfg: EvalConfig) -> MethodResult:
    """`analyze` as `orchestrator analyze` runs it (its time budget, screening then measured gains)."""
    from .analysis import analyze

    analyze(wf, cluster, policy=cfg.policy, durations=td, seed=cfg.seed + 2)  # warm
    rep = analyze(wf, cluster, policy=cfg.policy, durations=td, seed=cfg.seed + 3)
    gain = np.zeros(len(wf.tasks))
    index = {t: i for i, t in enumerate(t.id for t in wf.tasks)}
    for tid, g in zip(rep.task_ids, np.asarray(rep.task_gain)):
        gain[index[tid]] = g
    return MethodResult(f"analyze (served, {rep.method})", rep.makespan.mean, rep.makespan.p90, gain, rep.seconds)


def recommendation_check(wf: Workflow, cluster, td: TaskDurations, cfg: EvalConfig, samples: int = 2000) -> dict:
    """The top recommendation against the best single change found by trying every candidate, both re-measured on
    the same fresh draws; with every kind of change, and with changes of the workflow only (no added nodes)."""
    from .recommend import best_single_change, recommend, verify

    t0 = time.perf_counter()
    recs = recommend(wf, cluster, policy=cfg.policy, seed=cfg.seed)
    rec_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    everything = best_single_change(wf, cluster, policy=cfg.policy, seed=cfg.seed)
    all_s = time.perf_counter() - t0
    out: dict = {"candidates_tried": len(everything), "recommend_seconds": rec_s, "try_all_seconds": all_s,
                 "offered": len(recs.offered), "worse_offered": 0}

    def gain_of(r) -> float:
        return verify(r, wf, cluster, policy=cfg.policy, samples=samples, seed=cfg.seed + 17).gain

    for label, keep in (("all", lambda r: True), ("workflow_only", lambda r: r.kind != "add-nodes")):
        offered = [r for r in recs.offered if keep(r)]
        tried = [r for r in everything if keep(r)]
        top = gain_of(offered[0]) if offered else 0.0
        best = max([gain_of(r) for r in tried[:3]] + [0.0])  # the three best by the search, re-measured
        out[f"{label}_top_gain_s"] = top
        out[f"{label}_best_gain_s"] = best
        out[f"{label}_top_kind"] = offered[0].kind if offered else None
        out[f"{label}_best_kind"] = tried[0].kind if tried and best > 0 else None
        out[f"{label}_ratio"] = top / best if best > 0 else (1.0 if top >= 0 else 0.0)
    for r in recs.offered:  # an offered change that fresh draws say makes things worse
        if gain_of(r) < 0:
            out["worse_offered"] += 1
    return out


def score(gt: GroundTruth, m: MethodResult) -> dict:
    row: dict = {"method": m.method, "seconds": m.seconds}
    if m.mean is not None:
        row["mean_ape"] = abs(m.mean - gt.mean) / gt.mean if gt.mean > 0 else float("nan")
    if m.p90 is not None:
        row["p90_ape"] = abs(m.p90 - gt.p90) / gt.p90 if gt.p90 > 0 else float("nan")
    if m.gain is not None and gt.gains is not None:
        row["spearman"] = _spearman(m.gain, gt.gains)
        row["precision_at_5"] = _precision_at_k(m.gain, gt.gains)
    return row


def select_workflows(cfg: EvalConfig, progress: Callable[[str], None] = print) -> list[Workflow]:
    from ..loaders import default_trace_dir, load_traces

    out: list[Workflow] = []
    source = cfg.traces or default_trace_dir()
    by_family: dict[str, list[Workflow]] = {}
    for wf in load_traces(source):
        if cfg.min_tasks <= len(wf.tasks) <= cfg.max_tasks:
            by_family.setdefault(wf.family or "unknown", []).append(wf)
    for fam, wfs in sorted(by_family.items()):
        wfs.sort(key=lambda w: (len(w.tasks), w.name))
        if len(wfs) > cfg.per_family:  # spread over sizes
            idx = np.unique(np.linspace(0, len(wfs) - 1, cfg.per_family).round().astype(int))
            wfs = [wfs[i] for i in idx]
        out.extend(wfs)
    for k, fam in enumerate(cfg.unseen):
        sizes = [s for s in cfg.unseen_sizes if cfg.min_tasks <= s <= cfg.max_tasks]
        out.extend(w for w in synthetic_workflows(fam, sizes, seed=cfg.seed + 101 + k)
                   if cfg.min_tasks <= len(w.tasks) <= cfg.max_tasks)
    progress(f"{len(out)} workflows from {source} and {len(cfg.unseen)} unseen synthetic families")
    return out


@dataclass
class EvalResult:
    rows: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    by_shape: list[dict] = field(default_factory=list)
    by_family: list[dict] = field(default_factory=list)
    by_size: list[dict] = field(default_factory=list)
    recommendations: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def _summarise(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    import pandas as pd

    if not rows:
        return []
    df = pd.DataFrame(rows)
    out = []
    for group, sub in df.groupby(list(keys), sort=True):
        group = group if isinstance(group, tuple) else (group,)
        r = dict(zip(keys, group))
        r["workflows"] = int(sub["workflow"].nunique())
        for col, fn in (("mean_ape", "mean"), ("p90_ape", "mean"), ("spearman", "mean"),
                        ("precision_at_5", "mean"), ("seconds", "median")):
            if col in sub and sub[col].notna().any():
                r[f"{col}" if fn == "mean" else f"{col}_median"] = float(getattr(sub[col], fn)())
        if "mean_ape" in sub and sub["mean_ape"].notna().any():
            r["mean_ape_median"] = float(sub["mean_ape"].median())
            r["mean_ape_max"] = float(sub["mean_ape"].max())
        out.append(r)
    return out


def run_evaluation(cfg: EvalConfig, progress: Callable[[str], None] = print,
                   learned: Callable | None = None) -> EvalResult:
    """Score every method on every selected workflow. `learned(family) -> model | None` gives the learned model to
    score a family with (one never trained on it); None: the default (leave-one-family-out / the shipped one)."""
    cache_dir = cfg.out / "ground_truth" if cfg.cache else None
    workflows = select_workflows(cfg, progress)
    models = learned or LearnedModels(cfg, progress)
    res = EvalResult(meta={"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}})
    t_start = time.perf_counter()
    for i, wf in enumerate(workflows):
        gt, cluster, td = ground_truth(wf, cfg, cache_dir)
        shape = dag_shape(wf, td, gt)
        base = {"workflow": wf.name, "family": gt.family, "tasks": gt.n, "nodes": gt.nodes, "shape": shape,
                "size": _size_band(gt.n), "true_mean_s": gt.mean, "true_p90_s": gt.p90,
                "mc10k_seconds": gt.seconds_10k, "gain_label_agreement": gt.gain_noise}
        methods: list[MethodResult] = []
        model = models(gt.family)
        equal_time = None
        if model is not None:
            dag = dag_arrays(wf)
            model.predict(dag, td, cluster, policy=cfg.policy)  # warm (first call pays allocation)
            pred = model.predict(dag, td, cluster, policy=cfg.policy)
            equal_time = pred.seconds
            methods.append(MethodResult("gnn", pred.mean, pred.p90, np.asarray(pred.gain), pred.seconds))
        methods += baseline_methods(wf, cluster, td, cfg, equal_time)
        if cfg.served:
            methods.append(served_method(wf, cluster, td, cfg))
        for m in methods:
            res.rows.append({**base, **score(gt, m)})
        if gt.n <= cfg.recommendations_max_tasks:
            res.recommendations.append({**{k: base[k] for k in ("workflow", "family", "tasks", "nodes", "shape")},
                                        **recommendation_check(wf, cluster, td, cfg)})
        progress(f"[{i + 1}/{len(workflows)}] {wf.name} ({gt.n} tasks, {gt.nodes} nodes, {shape}): "
                 f"mean {gt.mean:.0f}s p90 {gt.p90:.0f}s; {time.perf_counter() - t_start:.0f}s so far")
    res.summary = _summarise(res.rows, ("method",))
    res.by_shape = _summarise(res.rows, ("shape", "method"))
    res.by_family = _summarise(res.rows, ("family", "method"))
    res.by_size = _summarise(res.rows, ("size", "method"))
    return res


def _size_band(n: int) -> str:
    for hi, label in ((30, "10-30"), (100, "31-100"), (300, "101-300"), (1000, "301-1000")):
        if n <= hi:
            return label
    return ">1000"


class LearnedModels:
    """The learned model for a family it never trained on: for a training family, one trained on the other three
    (built once per family, in process); for any other family, the shipped model. None when no model is
    available (the evaluation then scores the baselines alone, and says so)."""

    def __init__(self, cfg: EvalConfig, progress: Callable[[str], None] = print):
        self.cfg, self.progress = cfg, progress
        self._cache: dict[str, object | None] = {}

    def __call__(self, family: str):
        key = family if (self.cfg.lofo and family in TRAINING_FAMILIES) else "*"
        if key not in self._cache:
            self._cache[key] = self._build(key)
        return self._cache[key]

    def _build(self, key: str):
        try:
            from . import gnn
        except ImportError:
            self.progress("no learned model (orchestrator.optimization.gnn missing): baselines only")
            return None
        if key == "*":
            try:
                return gnn.OptimizerModel.load()
            except Exception as exc:  # noqa: BLE001 - reported, the baselines still run
                self.progress(f"the shipped optimizer model did not load ({exc}): baselines only")
                return None
        return gnn.train_leave_one_out(key, seed=self.cfg.seed, epochs=self.cfg.lofo_epochs,
                                       cache_dir=self.cfg.out / "datasets", progress=self.progress)


__all__ = ["EvalConfig", "EvalResult", "run_evaluation", "ground_truth", "baseline_methods", "score",
           "select_workflows", "dag_shape", "LearnedModels"]

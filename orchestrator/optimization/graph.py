"""The one graph featurisation of a workflow for learned models: DAG + duration distributions + cluster (+ what has
already run) -> `torch_geometric.data.Data`. The makespan GNN (`gnn`) reads it, and so will the learned scheduler.

Everything is what is known before a task runs: predicted mean and spread of its duration, its resource request,
its input size, the graph around it, one list schedule of the predicted means on the given cluster and a few (32)
of durations sampled from the predicted distributions (seeded, Latin hypercube). Never the task's actual runtime
(`DagArrays.duration`, `TaskSpec.duration` of a trace) nor its output size.

Times are divided by a per-graph scale, `time_scale` = the lower bound max(critical path on means, total work /
total cpus) of what remains, so that a workflow of seconds and one of days look alike; a model's outputs in units of
that scale are turned back into seconds with `data.time_scale`. Vectorised throughout (no Python loop over tasks or
edges): about 10 ms for 1,000 tasks with 32 sampled schedules after the first call (which loads the compiled list
scheduler); `samples=0` leaves the sampled schedules out (a few ms).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from ..dag import DagArrays, analyse
from ..model import Workflow
from ..sim.cluster import Cluster
from ..states import TaskStatus
from .durations import AnalysisInputError, TaskDurations
from .montecarlo import SUPPORTED_POLICIES, ListScheduler

FEATURE_VERSION = 5  # 4: Latin hypercube draws, control-variate mean; 5: the sampled P50
SAMPLES = 32  # list schedules of sampled durations summarised by default

# Column names of `data.x` (one row per task) and `data.u` (one row per graph), in order.
NODE_FEATURES = (
    # predicted duration, relative to the time scale, and its spread
    "mean", "log_mean", "cv", "log_p90_over_mean", "p90",
    "work_share_x_n",  # mean x cpus / total work x n (1 = an average task), log
    # resources
    "cpus_of_node", "memory_of_node", "gpus", "cpus_of_cluster",
    # input size: log bytes, relative to the workflow's median, known?
    "log_input", "input_vs_median", "input_known",
    # structure
    "log_in_degree", "log_out_degree", "is_source", "is_sink", "depth", "level_width", "level_demand",
    "top_level", "bottom_level", "slack", "path_through",
    # one list schedule of the means on the cluster (the policy's order, contention included)
    "sched_start", "sched_end", "sched_wait", "sched_tail", "sched_critical",
    # a few schedules of sampled durations: share of them with the task on the critical chain, that share times
    # the task's time (the Monte Carlo estimate of its gain, up to the speed-up), mean wait
    "sampled_critical", "sampled_critical_time", "sampled_wait",
    # status: one-hot, elapsed and remaining (running tasks)
    "pending", "ready", "running", "done", "elapsed", "remaining",
    # category: share of the workflow's work and tasks, this task against its category, the stages it spans
    "category_work_share", "category_task_share", "log_category_size", "mean_vs_category", "category_level_span",
)
GLOBAL_FEATURES = (
    "log_tasks", "log_nodes", "log_cpus_over_parallelism", "critical_path", "work_over_cpus", "log_schedule",
    "log_sampled_mean", "log_sampled_p50", "log_sampled_p90", "sampled_cv",
    "largest_task_of_node", "levels_per_task", "weighted_cv", "max_cv", "done_share", "running_share",
    "log_categories", "node_cpu_spread", "schedule_modelled",
    *(f"policy_{p}" for p in SUPPORTED_POLICIES),
)
EDGE_FEATURES = ("parent_to_child", "child_to_parent")

# Status codes of the one-hot (TaskStatus values map onto them).
PENDING, READY, RUNNING, DONE = 0, 1, 2, 3
_STATUS_CODE = {
    TaskStatus.PENDING.value: PENDING, TaskStatus.READY.value: READY, TaskStatus.RETRYING.value: READY,
    TaskStatus.RUNNING.value: RUNNING, TaskStatus.SUCCEEDED.value: DONE, TaskStatus.FAILED.value: DONE,
    TaskStatus.CANCELLED.value: DONE, TaskStatus.SKIPPED.value: DONE, "done": DONE,
}
_TRAILING_NUMBER = re.compile(r"[_-]?(ID)?\d+$")


def categories_from_ids(ids: Sequence[str]) -> list[str]:
    """A task's kind guessed from its id when no categories are given: `mProject_ID0000001` and
    `mProject_00000001` -> `mProject`. When that leaves most ids distinct, the first `_`-separated word."""
    names = [_TRAILING_NUMBER.sub("", i) or i for i in ids]
    if len(set(names)) > max(8, len(names) // 4):
        names = [n.split("_", 1)[0] or n for n in names]
    return names


def status_codes(status, n: int) -> np.ndarray | None:
    """`status` (None; TaskStatus or their values per task; or integer codes 0-3) -> int64 codes, or None."""
    if status is None:
        return None
    arr = np.asarray(status)
    if arr.shape != (n,):
        raise AnalysisInputError(f"status: expected one status per task ({n}), got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 3):
            raise AnalysisInputError("status: integer codes must be 0 pending, 1 ready, 2 running, 3 done")
        return arr.astype(np.int64)
    try:
        return np.array([_STATUS_CODE[s.value if isinstance(s, TaskStatus) else str(s)] for s in status],
                        dtype=np.int64)
    except KeyError as exc:
        raise AnalysisInputError(f"status: unknown task status {exc.args[0]!r}; one of "
                                 f"{', '.join(sorted(_STATUS_CODE))}") from None


def remaining_mean(durations: TaskDurations, elapsed: np.ndarray) -> np.ndarray:
    """Expected remaining seconds of a log-normal duration that has already lasted `elapsed`:
    E[D - e | D > e] (the mean itself when e = 0)."""
    from scipy.special import log_ndtr

    e = np.maximum(np.asarray(elapsed, dtype=np.float64), 0.0)
    sigma = durations.sigma
    out = np.maximum(durations.mean - e, 0.0)
    ok = (e > 0) & (sigma > 0) & (durations.mean > 0)
    if ok.any():
        z = (np.log(e[ok]) - durations.mu[ok]) / sigma[ok]
        tail = np.exp(log_ndtr(sigma[ok] - z) - log_ndtr(-z))  # E[D | D > e] / mean
        out[ok] = np.maximum(durations.mean[ok] * tail - e[ok], 0.0)
    return out


def _subgraph(dag: DagArrays, keep: np.ndarray, first: np.ndarray) -> DagArrays:
    """The tasks `keep` (bool) with the edges among them; `first` (bool) get a priority above every other, so that
    a list schedule starts them at once (they are already running)."""
    from ..dag import _csr

    idx = np.flatnonzero(keep)
    new = np.full(dag.n, -1, dtype=np.int64)
    new[idx] = np.arange(len(idx))
    e = keep[dag.src] & keep[dag.dst]
    src, dst = new[dag.src[e]], new[dag.dst[e]]
    m = len(idx)
    cptr, kids = _csr(src, dst, m)
    pptr, parents = _csr(dst, src, m)
    prio = dag.priority[idx].copy()
    if first.any():
        prio[first[idx]] = int(prio.max(initial=0)) + 1
    return DagArrays(ids=tuple(dag.ids[i] for i in idx), src=src, dst=dst, children_ptr=cptr, children=kids,
                     parents_ptr=pptr, parents=parents, duration=np.zeros(m), cpus=dag.cpus[idx],
                     memory=dag.memory[idx], gpus=dag.gpus[idx], index={dag.ids[i]: k for k, i in enumerate(idx)},
                     priority=prio, retries=dag.retries[idx], retry_delay=dag.retry_delay[idx], custom=None)


@dataclass
class _Schedules:
    """One list schedule of the means, and a few of sampled durations (what the features read of them)."""

    makespan: float
    start: np.ndarray
    end: np.ndarray
    critical: np.ndarray  # 1 on the schedule's critical chain
    wait: np.ndarray  # seconds between ready and start (waiting for room)
    modelled: bool  # the kernel models the policy and the resources
    sampled: np.ndarray  # makespans of the sampled durations (empty without samples)
    sampled_critical: np.ndarray  # share of the samples in which the task is on the critical chain
    sampled_wait: np.ndarray


def _draws(durations: TaskDurations, elapsed: np.ndarray, samples: int, seed: int,
           stratified: bool = False) -> np.ndarray:
    """`samples` x n durations from now: log-normal, and for a task that has run `elapsed` > 0, its rest given that
    it has lasted that long (inverse cdf of the truncated log-normal). `stratified`: Latin hypercube (each task's
    draws cover the `samples` equal-probability strata once each, in a random order), which for 32 draws halves
    the error of the mean makespan against independent draws."""
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(seed)
    shape = (samples, durations.n)
    if stratified:
        u = (np.argsort(rng.random(shape), axis=0) + rng.random(shape)) / samples
    else:
        u = ndtr(rng.standard_normal(shape))
    u = np.clip(u, 1e-12, 1 - 1e-12)
    out = durations.sample(samples, z=ndtri(u))
    late = np.flatnonzero((elapsed > 0) & (durations.mean > 0) & (durations.sigma > 0))
    if late.size:
        mu, sigma, e = durations.mu[late], durations.sigma[late], elapsed[late]
        floor = ndtr((np.log(e) - mu) / sigma)
        rest = np.clip(floor + (1 - floor) * u[:, late], 1e-12, 1 - 1e-12)
        out[:, late] = np.maximum(np.exp(mu + sigma * ndtri(rest)) - e, 0.0)
    flat = np.flatnonzero((elapsed > 0) & (durations.sigma <= 0))
    out[:, flat] = np.maximum(durations.mean[flat] - elapsed[flat], 0.0)
    return out


def _controlled_mean(makespans: np.ndarray, controls: np.ndarray) -> float:
    """The mean makespan with control variates: `controls` (k x c) are sampled quantities whose expectation is
    zero (total work, and time along the critical path on means, less their expected values); the intercept of
    the least-squares fit of the makespans on them. The plain mean when there are too few samples."""
    k = len(makespans)
    if k < 3 * (controls.shape[1] + 1):
        return float(makespans.mean())
    coef = np.linalg.lstsq(np.c_[controls, np.ones(k)], makespans, rcond=None)[0]
    return float(coef[-1])


def _schedule(dag: DagArrays, cluster: Cluster, means: np.ndarray, policy: str, draws: np.ndarray) -> _Schedules:
    """One list schedule of `means`, and the schedules of `draws` (k x n). A policy or resource the compiled kernel
    does not model is approximated by srpt-cp without custom resources (`modelled` False); a task that fits on no
    node is the caller's error.

    The critical chain of the schedule on means is the kernel's chain of causes read back from start and end
    times: from the last task to end, to the parent whose end made it ready when it started then, else to a task
    whose end at that moment freed the room it started in."""
    modelled = policy in SUPPORTED_POLICIES and dag.custom is None
    if dag.custom is not None:
        dag = dataclasses.replace(dag, custom=None)
    ls = ListScheduler(dag, cluster, means, policy if policy in SUPPORTED_POLICIES else "srpt-cp")
    makespan, start, end = ls.run(means)
    n = dag.n
    ready = np.zeros(n)
    if dag.src.size:
        np.maximum.at(ready, dag.dst, end[dag.src])
    wait = np.maximum(start - ready, 0.0)
    # cause of each start: a parent ending at its ready time when it started then, else a task ending at its start
    cause = np.full(n, -1, dtype=np.int64)
    if dag.src.size:
        hit = np.flatnonzero((end[dag.src] == ready[dag.dst]) & (start[dag.dst] == ready[dag.dst]))
        hit = hit[np.argsort(start[dag.src[hit]], kind="stable")]  # ties: the parent that started last (as the
        cause[dag.dst[hit]] = dag.src[hit]  # kernel, whose last write wins here too)
    by_end = np.lexsort((start, end))  # ties: the first to start
    sorted_end = end[by_end]
    pos = np.searchsorted(sorted_end, start)
    freed = (cause < 0) & (pos < n) & (sorted_end[np.minimum(pos, n - 1)] == start) & (start > 0)
    cause[freed] = by_end[pos[freed]]
    crit = np.zeros(n)
    cause_list = cause.tolist()
    t = int(np.argmax(end))
    for _ in range(n):  # a walk along one chain (at most n steps), not over the tasks
        crit[t] = 1.0
        t = cause_list[t]
        if t < 0 or crit[t]:
            break
    if len(draws):
        trace = ls.trace(draws)
        sampled, s_crit, s_wait = trace.makespans, trace.criticality, trace.wait
    else:
        sampled, s_crit, s_wait = np.zeros(0), np.zeros(n), np.zeros(n)
    return _Schedules(makespan, start, end, crit, wait, modelled, sampled, s_crit, s_wait)


def _group_reduce(ufunc, keys: np.ndarray, values: np.ndarray, size: int, fill: float) -> np.ndarray:
    out = np.full(size, fill, dtype=np.float64)
    ufunc.at(out, keys, values)
    return out


def featurize(dag: DagArrays, durations: TaskDurations, cluster: Cluster, *,
              categories: Sequence[str] | None = None, status=None, elapsed: np.ndarray | None = None,
              policy: str = "srpt-cp", input_bytes: np.ndarray | None = None, samples: int = SAMPLES,
              seed: int = 0) -> Data:
    """The graph of a workflow for a GNN.

    dag, durations: the workflow's arrays and its predicted duration distributions (mean, cv per task).
    cluster: the nodes it runs on. categories: each task's kind (default: guessed from the ids, see
    `categories_from_ids`). status: per task (TaskStatus, its value, or 0 pending / 1 ready / 2 running / 3 done;
    default: before the run, sources ready). elapsed: seconds each running task has run (default 0). policy: the
    list-scheduling policy the workflow runs under. input_bytes: each task's input size (default unknown).
    samples, seed: how many list schedules of sampled durations the features summarise (0: none; then the
    sampled features repeat the schedule of the means), drawn from `seed` (the same input gives the same graph)
    by Latin hypercube; their mean makespan is estimated with total work and the time along the critical path on
    means as control variates (half the error of the plain mean of 32 independent draws).

    Returns Data with `x` [n, len(NODE_FEATURES)], `edge_index` [2, 2E] (every dependency both ways),
    `edge_attr` [2E, 2] (one-hot: parent->child, child->parent), `u` [1, len(GLOBAL_FEATURES)], `time_scale` [1]
    (seconds per unit of the features' times: divide seconds by it, multiply predictions by it),
    `base_log` [1, 3] (log of the sampled schedules' mean, P50 and P90 makespan over the time scale: a model's
    baseline),
    `remaining` [n] (bool: tasks not done), `n_tasks`. Times of done tasks are zero; times of the others are
    from now on.
    """
    n = dag.n
    if n == 0:
        raise AnalysisInputError("featurize: the workflow has no tasks")
    if durations.n != n:
        raise AnalysisInputError(f"featurize: {durations.n} durations for {n} tasks")
    code = status_codes(status, n)
    if code is None:
        code = np.where(dag.in_degree == 0, READY, PENDING).astype(np.int64)
    el = np.zeros(n) if elapsed is None else np.asarray(elapsed, dtype=np.float64)
    if el.shape != (n,):
        raise AnalysisInputError(f"elapsed: expected one number of seconds per task ({n}), got shape {el.shape}")
    el = np.where(code == RUNNING, np.maximum(el, 0.0), 0.0)
    done = code == DONE
    running = code == RUNNING

    # what remains: done tasks take no time, running ones their expected rest
    mean = durations.mean
    eff = np.where(done, 0.0, mean)
    if running.any():
        eff[running] = remaining_mean(TaskDurations(mean[running], durations.cv[running]), el[running])
    work = eff * dag.cpus
    total_work = float(work.sum())
    total_cpus = float(cluster.total_cpus)
    a = analyse(dag, eff)
    cp = a.critical_path_length
    scale = max(cp, total_work / total_cpus, 1e-9)
    if total_work <= 0:
        scale = max(float(mean.max()), 1.0)  # nothing left to run: any positive scale

    # one list schedule of the remaining means, and `samples` of sampled durations (common: seeded)
    keep = ~done
    start, end, crit, wait, s_crit, s_wait = (np.zeros(n) for _ in range(6))
    sampled = np.zeros(0)
    makespan, modelled = 0.0, True
    if keep.any():
        whole = keep.all() and not running.any()
        sub = dag if whole else _subgraph(dag, keep, running)
        kept = TaskDurations(mean[keep], durations.cv[keep])
        draws = (_draws(kept, el[keep], samples, seed, stratified=True) if samples > 0
                 else np.zeros((0, int(keep.sum()))))
        sch = _schedule(sub, cluster, eff[keep], policy, draws)
        start[keep], end[keep], crit[keep], wait[keep] = sch.start, sch.end, sch.critical, sch.wait
        s_crit[keep], s_wait[keep] = sch.sampled_critical, sch.sampled_wait
        makespan, modelled, sampled = sch.makespan, sch.modelled, sch.sampled
    if makespan < 0 or (sampled < 0).any():
        raise AnalysisInputError("featurize: a task fits on no node of the cluster")
    sampled_mean = makespan
    if sampled.size:
        on_path = np.zeros(n, dtype=bool)
        on_path[a.critical_path] = True
        controls = np.stack([draws @ dag.cpus[keep] - float(work[keep].sum()),
                             draws[:, on_path[keep]].sum(axis=1) - float(eff[on_path & keep].sum())], axis=1)
        sampled_mean = _controlled_mean(sampled, controls)
    sampled_p50 = float(np.percentile(sampled, 50)) if sampled.size else makespan
    sampled_p90 = float(np.percentile(sampled, 90)) if sampled.size else makespan
    sampled_cv = float(sampled.std() / sampled_mean) if sampled.size and sampled_mean > 0 else 0.0

    # spread
    cv = durations.cv
    sigma = durations.sigma
    p90_ratio = np.exp(1.2815515655446004 * sigma - 0.5 * sigma ** 2)  # p90 / mean of a log-normal

    # resources
    node_cpus = max(float(cluster.max_cpus), 1e-9)
    node_mem = max(float(cluster.max_memory), 1.0)

    # inputs
    if input_bytes is None:
        log_in = np.zeros(n)
        in_vs_med = np.zeros(n)
        in_known = np.zeros(n)
    else:
        b = np.asarray(input_bytes, dtype=np.float64)
        if b.shape != (n,):
            raise AnalysisInputError(f"input_bytes: expected one size per task ({n}), got shape {b.shape}")
        known = np.isfinite(b) & (b >= 0)
        b = np.where(known, b, 0.0)
        log_in = np.log10(1.0 + b) / 10.0
        med = float(np.median(b[known])) if known.any() else 0.0
        in_vs_med = np.clip(np.log((1.0 + b) / (1.0 + med)), -10, 10) / 5.0
        in_known = known.astype(np.float64)

    # structure
    indeg = dag.in_degree.astype(np.float64)
    outdeg = dag.out_degree.astype(np.float64)
    level = a.level
    levels = int(level.max()) + 1
    width = np.bincount(level, minlength=levels).astype(np.float64)
    demand = np.bincount(level, weights=dag.cpus * keep, minlength=levels)

    # categories
    cats = list(categories) if categories is not None else categories_from_ids(dag.ids)
    if len(cats) != n:
        raise AnalysisInputError(f"categories: expected one per task ({n}), got {len(cats)}")
    _, cat = np.unique(np.asarray(cats, dtype=object).astype(str), return_inverse=True)
    k = int(cat.max()) + 1
    cat_count = np.bincount(cat, minlength=k).astype(np.float64)
    cat_work = np.bincount(cat, weights=work, minlength=k)
    cat_mean = np.bincount(cat, weights=mean, minlength=k) / cat_count
    lvl_lo = _group_reduce(np.minimum, cat, level.astype(np.float64), k, np.inf)
    lvl_hi = _group_reduce(np.maximum, cat, level.astype(np.float64), k, -np.inf)

    def rel(t: np.ndarray) -> np.ndarray:
        return t / scale

    tiny = 1e-4
    cols = {
        "mean": rel(eff),
        "log_mean": np.log(rel(eff) + tiny) / 5.0,
        "cv": cv,
        "log_p90_over_mean": np.log(p90_ratio),
        "p90": rel(eff * p90_ratio),
        "work_share_x_n": np.log(work / max(total_work, 1e-12) * n + tiny) / 5.0,
        "cpus_of_node": dag.cpus / node_cpus,
        "memory_of_node": dag.memory / node_mem,
        "gpus": (dag.gpus > 0).astype(np.float64),
        "cpus_of_cluster": dag.cpus / total_cpus,
        "log_input": log_in,
        "input_vs_median": in_vs_med,
        "input_known": in_known,
        "log_in_degree": np.log1p(indeg) / 3.0,
        "log_out_degree": np.log1p(outdeg) / 3.0,
        "is_source": (indeg == 0).astype(np.float64),
        "is_sink": (outdeg == 0).astype(np.float64),
        "depth": level / max(levels - 1, 1),
        "level_width": np.log(width[level]) / np.log(n + 1.0),
        "level_demand": np.log1p(demand[level] / total_cpus),
        "top_level": rel(a.top_level),
        "bottom_level": rel(a.bottom_level),
        "slack": rel(a.slack),
        "path_through": (a.top_level + a.bottom_level) / max(cp, 1e-9),
        "sched_start": rel(start),
        "sched_end": rel(end),
        "sched_wait": rel(wait),
        "sched_tail": rel(np.where(keep, makespan - end, 0.0)),
        "sched_critical": crit,
        "sampled_critical": s_crit,
        "sampled_critical_time": s_crit * rel(eff),
        "sampled_wait": rel(s_wait),
        "pending": (code == PENDING).astype(np.float64),
        "ready": (code == READY).astype(np.float64),
        "running": running.astype(np.float64),
        "done": done.astype(np.float64),
        "elapsed": rel(el),
        "remaining": rel(np.where(running, eff, 0.0)),
        "category_work_share": cat_work[cat] / max(total_work, 1e-12),
        "category_task_share": cat_count[cat] / n,
        "log_category_size": np.log(cat_count[cat]) / np.log(n + 1.0),
        "mean_vs_category": np.clip(np.log((rel(mean) + tiny) / (rel(cat_mean[cat]) + tiny)), -5, 5) / 2.0,
        "category_level_span": (lvl_hi - lvl_lo)[cat] / max(levels - 1, 1),
    }
    x = np.stack([cols[name] for name in NODE_FEATURES], axis=1)

    parallelism = total_work / max(cp, 1e-9)
    node_c = np.array([nd.cpus for nd in cluster.nodes])
    wsum = max(float(work.sum()), 1e-12)
    g = {
        "log_tasks": np.log10(n) / 4.0,
        "log_nodes": np.log2(len(cluster.nodes)) / 6.0,
        "log_cpus_over_parallelism": np.log(total_cpus / max(parallelism, 1e-9)) / 3.0 if total_work > 0 else 0.0,
        "critical_path": cp / scale,
        "work_over_cpus": total_work / total_cpus / scale,
        "log_schedule": np.log(max(makespan, 1e-12) / scale) if total_work > 0 else 0.0,
        "log_sampled_mean": np.log(max(sampled_mean, 1e-12) / scale) if total_work > 0 else 0.0,
        "log_sampled_p50": np.log(max(sampled_p50, 1e-12) / scale) if total_work > 0 else 0.0,
        "log_sampled_p90": np.log(max(sampled_p90, 1e-12) / scale) if total_work > 0 else 0.0,
        "sampled_cv": sampled_cv,
        "largest_task_of_node": float(dag.cpus.max()) / node_cpus,
        "levels_per_task": np.log(levels) / np.log(n + 1.0),
        "weighted_cv": float((cv * work).sum()) / wsum,
        "max_cv": float(cv[keep].max()) if keep.any() else 0.0,
        "done_share": float(done.mean()),
        "running_share": float(running.mean()),
        "log_categories": np.log(k) / np.log(n + 1.0),
        "node_cpu_spread": float(node_c.std() / node_c.mean()),
        "schedule_modelled": float(modelled),
        **{f"policy_{p}": float(policy == p) for p in SUPPORTED_POLICIES},
    }
    u = np.array([[g[name] for name in GLOBAL_FEATURES]], dtype=np.float32)

    src, dst = dag.src, dag.dst
    m = len(src)
    edge_index = np.empty((2, 2 * m), dtype=np.int64)
    edge_index[0, :m], edge_index[1, :m] = src, dst
    edge_index[0, m:], edge_index[1, m:] = dst, src
    edge_attr = np.zeros((2 * m, 2), dtype=np.float32)
    edge_attr[:m, 0] = 1.0
    edge_attr[m:, 1] = 1.0
    return Data(
        x=torch.from_numpy(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        u=torch.from_numpy(u),
        time_scale=torch.tensor([scale], dtype=torch.float64),
        base_log=torch.tensor([[g["log_sampled_mean"], g["log_sampled_p50"], g["log_sampled_p90"]]],
                              dtype=torch.float32),
        remaining=torch.from_numpy(keep),
        n_tasks=n,
    )


def featurize_workflow(wf: Workflow, dag: DagArrays, durations: TaskDurations, cluster: Cluster, **kw) -> Data:
    """`featurize` with the workflow's own categories and input sizes."""
    kw.setdefault("categories", [t.category for t in wf.tasks])
    kw.setdefault("input_bytes", np.array([np.nan if t.input_bytes is None else t.input_bytes for t in wf.tasks],
                                          dtype=np.float64))
    return featurize(dag, durations, cluster, **kw)


__all__ = ["featurize", "featurize_workflow", "categories_from_ids", "status_codes", "remaining_mean",
           "NODE_FEATURES", "GLOBAL_FEATURES", "EDGE_FEATURES", "FEATURE_VERSION",
           "PENDING", "READY", "RUNNING", "DONE"]

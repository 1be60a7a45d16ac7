"""Right-sizing: set each task's cpu and memory request from a high predicted quantile plus a margin (as
Google's Autopilot does), online as a run progresses, and replay the runs in the simulator to compare reserved
resource-seconds and under-provisioned tasks with fixed per-category-maximum requests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..model import Workflow
from ..scheduling import get_policy
from ..sim import Cluster, Job, TraceEntry, Workload, simulate
from .config import RightSizingConfig
from .features import ExecutionTable
from .history_arrays import HistoryArrays, Query
from .task_training import Episode, category_groups

MiB = 1024**2

# (histories, queries) -> (B, 3, Q) quantiles of runtime, cpu, memory
BatchPredict = Callable[[list[HistoryArrays], list[Query]], np.ndarray]


def online_episodes(table: ExecutionTable, runs: Sequence[int], max_history: int) -> list[Episode]:
    """Every task of the runs, predicted when it is submitted: its history is the category's executions in
    earlier runs of the family, then every sibling before it in the run (all assumed finished)."""
    episodes = []
    for (run, cat), rows in category_groups(table, runs).items():
        fam = table.run_family[run]
        earlier = table.select_runs([r for r in range(run) if table.run_family[r] == fam])
        prior = earlier[table.category[earlier] == cat][-max_history:]
        for j in range(rows.size):
            hist = np.concatenate([prior, rows[:j]])[-max_history:]
            same = np.concatenate([np.zeros(prior.size, bool), np.ones(j, bool)])[-max_history:]
            episodes.append(Episode(hist, same, int(rows[j])))
    return episodes


@dataclass(frozen=True)
class Requests:
    """Per-row cpu (cores) and memory (bytes) requests; NaN = keep the workflow's own request."""

    cpus: np.ndarray
    memory: np.ndarray


def predicted_requests(table: ExecutionTable, episodes: list[Episode], predict: BatchPredict,
                       quantiles: Sequence[float], cfg: RightSizingConfig, cpu_margin: float | None = None,
                       memory_margin: float | None = None, cap: Requests | None = None) -> Requests:
    """request = max(floor, q-quantile x (1 + margin)), the cpu capped at `cap` (the category's maximum
    observed so far) where given — memory is not capped: a new peak above every earlier one is common enough
    (0.8% of montage tasks) that the cap itself would under-provision; NaN where the category has no history yet (the task keeps its own request) and, for
    memory, where no execution of the category recorded memory."""
    cpu_margin = cfg.cpu_margin if cpu_margin is None else cpu_margin
    memory_margin = cfg.memory_margin if memory_margin is None else memory_margin
    cpus = np.full(len(table), np.nan)
    memory = np.full(len(table), np.nan)
    have = [e for e in episodes if e.history.size]
    if not have:
        return Requests(cpus, memory)
    hs = [HistoryArrays.from_table(table, e.history, e.same_run) for e in have]
    qs = [Query.from_table(table, e.query, table.families[table.family[e.query]]) for e in have]
    pred = predict(hs, qs)
    levels = np.asarray(quantiles)
    q_cpu = np.array([np.interp(cfg.quantile, levels, p[1]) for p in pred])
    q_mem = np.array([np.interp(cfg.quantile, levels, p[2]) for p in pred])
    rows = np.array([e.query for e in have])
    cpus[rows] = np.maximum(q_cpu * (1 + cpu_margin), cfg.min_cpus)
    memory[rows] = np.maximum(q_mem * (1 + memory_margin), cfg.min_memory_mib * MiB)
    if cap is not None:
        cpus = np.where(np.isfinite(cap.cpus), np.fmin(cpus, cap.cpus), cpus)
    return Requests(cpus, memory)


def max_requests(table: ExecutionTable, runs: Sequence[int], hindsight: bool) -> Requests:
    """The category's observed maximum: over earlier runs and the siblings already finished (online), or —
    with `hindsight` — over earlier runs and the whole current run (never under-provisions in that run)."""
    cpus = np.full(len(table), np.nan)
    memory = np.full(len(table), np.nan)
    for (run, cat), rows in category_groups(table, runs).items():
        fam = table.run_family[run]
        earlier = table.select_runs([r for r in range(run) if table.run_family[r] == fam])
        prior = earlier[table.category[earlier] == cat]
        for j, row in enumerate(rows):
            seen = np.concatenate([prior, rows if hindsight else rows[:j]])
            if seen.size == 0:
                continue
            c, m = table.cpu[seen], table.memory[seen]
            cpus[row] = np.nanmax(c) if np.isfinite(c).any() else np.nan
            memory[row] = np.nanmax(m) if np.isfinite(m).any() else np.nan
    return Requests(cpus, memory)


def _job(job_id: int, entry: TraceEntry, cpus: np.ndarray, memory: np.ndarray, used_cpus: np.ndarray,
         used_memory: np.ndarray) -> Job:
    dag = dataclasses.replace(entry.dag, cpus=cpus, memory=memory)
    return Job(job_id, entry.name, entry.family, 0.0, dag, entry.actual, entry.actual, used_cpus, used_memory)


def replay(workflows: Sequence[Workflow], table: ExecutionTable, runs: Sequence[int], requests: Requests | None,
           cfg: RightSizingConfig, name: str) -> dict:
    """Simulate each run alone with the given requests (None = the workflow's own) and sum the metrics.
    A task is under-provisioned when its request is below what it actually used (average cores, peak memory)."""
    by_name = {w.name: w for w in workflows}
    row_of = {}
    for i, (r, tid) in enumerate(zip(table.run, table.task_ids)):
        row_of[(table.runs[r], tid)] = i
    cluster = Cluster.homogeneous(cfg.cluster_nodes, cfg.node_cpus, cfg.node_memory_gib)
    totals = {"requests": name, "tasks": 0, "reserved_cpu_s": 0.0, "used_cpu_s": 0.0, "reserved_mem_gib_s": 0.0,
              "used_mem_gib_s": 0.0, "makespan_s": 0.0, "under_cpu": 0, "under_memory": 0, "memory_tasks": 0,
              "reserved_mem_gib_s_recorded": 0.0}
    for job_id, run in enumerate(table.runs[r] for r in sorted(runs)):
        wf = by_name[run]
        entry = TraceEntry.from_workflow(wf)
        # A task without a row (build_table left out its execution: ExecutionTable.dropped) replays with its own
        # request as what it used, as an unrecorded cpu or memory does.
        rows = np.array([row_of.get((run, t.id), -1) for t in wf.tasks])

        def of(a: np.ndarray) -> np.ndarray:
            return np.where(rows >= 0, a[np.maximum(rows, 0)], np.nan)

        used_cpu = np.where(np.isfinite(of(table.cpu)), of(table.cpu), entry.dag.cpus)
        recorded = np.isfinite(of(table.memory))
        used_mem = np.where(recorded, of(table.memory), entry.dag.memory)
        cpus, memory = entry.dag.cpus.copy(), entry.dag.memory.copy()
        if requests is not None:
            rc, rm = of(requests.cpus), of(requests.memory)
            cpus = np.where(np.isfinite(rc), rc, cpus)
            memory = np.where(np.isfinite(rm) & recorded, rm, memory)
        memory = np.minimum(memory, cfg.node_memory_gib * 1024**3)
        cpus = np.minimum(cpus, cfg.node_cpus)
        res = simulate(Workload((_job(job_id, entry, cpus, memory, used_cpu, used_mem),)), cluster,
                       get_policy(cfg.policy), seed=0, record=False)
        totals["tasks"] += rows.size
        totals["reserved_cpu_s"] += res.reserved_cpu_s
        totals["used_cpu_s"] += res.used_cpu_s
        totals["reserved_mem_gib_s"] += res.reserved_mem_gib_s
        totals["used_mem_gib_s"] += res.used_mem_gib_s
        totals["reserved_mem_gib_s_recorded"] += float((entry.actual * memory)[recorded].sum()) / 1024**3
        totals["makespan_s"] += res.makespan
        totals["under_cpu"] += int((cpus < used_cpu - 1e-9).sum())
        totals["under_memory"] += int(((memory < used_mem - 1e-9) & recorded).sum())
        totals["memory_tasks"] += int(recorded.sum())
    totals["under_cpu_pct"] = 100.0 * totals["under_cpu"] / max(totals["tasks"], 1)
    totals["under_memory_pct"] = 100.0 * totals["under_memory"] / max(totals["memory_tasks"], 1)
    return totals


def calibrate_margin(table: ExecutionTable, episodes: list[Episode], predict: BatchPredict,
                     quantiles: Sequence[float], cfg: RightSizingConfig, cap: Requests | None = None,
                     target_under: float = 0.005,
                     grid: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)) -> tuple[float, float]:
    """Smallest cpu and memory margins (from `grid`) whose under-provisioned share on `episodes` (validation
    runs, not the test runs) is at most `target_under`."""
    base = predicted_requests(table, episodes, predict, quantiles, cfg, 0.0, 0.0)
    rows = np.array([e.query for e in episodes if e.history.size])
    out = []
    no_cap = np.full(len(table), np.inf)
    caps = (cap.cpus, no_cap) if cap is not None else (no_cap, no_cap)
    for k, (req, used) in enumerate(((base.cpus, table.cpu), (base.memory, table.memory))):
        r, u, c = req[rows], used[rows], np.where(np.isfinite(caps[k][rows]), caps[k][rows], np.inf)
        ok = np.isfinite(r) & np.isfinite(u)
        floor = cfg.min_cpus if k == 0 else cfg.min_memory_mib * MiB
        chosen = grid[-1]
        for m in grid:
            need = np.minimum(np.maximum(r[ok] * (1 + m), floor), c[ok])  # base already holds max(q, floor)
            if ok.sum() == 0 or (need < u[ok] - 1e-9).mean() <= target_under:
                chosen = m
                break
        out.append(float(chosen))
    return out[0], out[1]


def evaluate_rightsizing(workflows: Sequence[Workflow], table: ExecutionTable, train_runs: Sequence[int],
                         test_runs: Sequence[int], methods: dict[str, BatchPredict], quantiles: Sequence[float],
                         cfg: RightSizingConfig, max_history: int, calibration_runs: Sequence[int] = ()) -> list[dict]:
    """Replay the test runs with: the traces' own requests, the per-category maximum (online and in
    hindsight), and requests right-sized from each method's predictions (margins calibrated on
    `calibration_runs` when given, else the configured ones). Reductions are against the hindsight maximum."""
    rows = [replay(workflows, table, test_runs, None, cfg, "trace requests"),
            replay(workflows, table, test_runs, max_requests(table, test_runs, hindsight=True), cfg,
                   "category max (hindsight)"),
            replay(workflows, table, test_runs, max_requests(table, test_runs, hindsight=False), cfg,
                   "category max (online)")]
    episodes = online_episodes(table, test_runs, max_history)
    calib = online_episodes(table, calibration_runs, max_history) if calibration_runs else []
    cap = max_requests(table, test_runs, hindsight=False) if cfg.cap_at_observed_max else None
    calib_cap = (max_requests(table, calibration_runs, hindsight=False)
                 if cfg.cap_at_observed_max and calibration_runs else None)
    for name, predict in methods.items():
        cpu_m, mem_m = (calibrate_margin(table, calib, predict, quantiles, cfg, calib_cap) if calib
                        else (cfg.cpu_margin, cfg.memory_margin))
        req = predicted_requests(table, episodes, predict, quantiles, cfg, cpu_m, mem_m, cap)
        label = f"right-sized: {name} p{round(cfg.quantile * 100)} +{cpu_m:.0%} cpu +{mem_m:.0%} mem"
        rows.append(replay(workflows, table, test_runs, req, cfg, label))
    ref = rows[1]
    for r in rows:
        r["cpu_reduction_pct"] = 100.0 * (1 - r["reserved_cpu_s"] / ref["reserved_cpu_s"])
        r["mem_reduction_pct"] = 100.0 * (1 - r["reserved_mem_gib_s_recorded"] / ref["reserved_mem_gib_s_recorded"]) \
            if ref["reserved_mem_gib_s_recorded"] > 0 else float("nan")
    return rows

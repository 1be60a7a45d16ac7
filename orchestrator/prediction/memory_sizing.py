"""Memory right-sizing against the published baselines, in reserved GB·h with failures counted.

Every task is sized when it is submitted, from the executions of its category that finished before it (earlier
runs of its family in time order, then its earlier siblings in trace order). A task whose allocation is below
its peak fails after running its whole runtime, is charged its reservation for that time, and is retried at
double (capped at the node's memory). Methods:
- **tovar** (Tovar et al., first allocation = the largest peak seen so far; retry at double),
- **witt** (Witt et al., a least-squares line of peak on input size plus an offset equal to the largest
  under-prediction so far),
- **input-knn** (ours): the largest peak among the k executions of the category closest in input size, times
  (1 + margin), the margin the smallest that keeps under-provisioning at or below a target on earlier runs.
A task with no execution of its category yet gets `first_gib` (the same for every method).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .features import ExecutionTable

GiB = 1024**3

# (peaks, log inputs) of the category's earlier executions, the task's log input -> first allocation (bytes)
Sizer = Callable[[np.ndarray, np.ndarray, float], float]


def tovar(peaks: np.ndarray, inputs: np.ndarray, x: float) -> float:
    return float(peaks.max())


def witt(peaks: np.ndarray, inputs: np.ndarray, x: float) -> float:
    ok = np.isfinite(inputs)
    if ok.sum() < 2 or np.ptp(inputs[ok]) == 0 or not np.isfinite(x):
        return float(peaks.max())
    size = np.expm1(inputs[ok])
    slope, intercept = np.polyfit(size, peaks[ok], 1)
    offset = max(0.0, float((peaks[ok] - (slope * size + intercept)).max()))
    return float(max(slope * np.expm1(x) + intercept, 0.0) + offset)


def input_knn(k: int = 8, margin: float = 0.0) -> Sizer:
    def size(peaks: np.ndarray, inputs: np.ndarray, x: float) -> float:
        if not np.isfinite(x) or not np.isfinite(inputs).any():
            near = peaks[-k:]
        else:
            d = np.where(np.isfinite(inputs), np.abs(inputs - x), np.inf)
            near = peaks[np.argsort(d, kind="stable")[:k]]
        return float(near.max() * (1 + margin))
    return size


@dataclass(frozen=True)
class SizingResult:
    method: str
    family: str
    tasks: int
    reserved_gbh: float
    used_gbh: float
    wastage_gbh: float
    under_first: int  # tasks whose first allocation was below their peak
    retries: int
    retry_gbh: float  # reserved by the attempts that failed
    allocations: np.ndarray | None = field(default=None, repr=False)  # per table row: the final allocation (NaN: not sized)

    def row(self) -> dict:
        return {"method": self.method, "family": self.family, "tasks": self.tasks,
                "reserved_GBh": self.reserved_gbh, "used_GBh": self.used_gbh, "wastage_GBh": self.wastage_gbh,
                "under_provisioned_pct": 100.0 * self.under_first / max(self.tasks, 1), "retries": self.retries,
                "retry_GBh": self.retry_gbh}


def _order(table: ExecutionTable, runs: Sequence[int]) -> np.ndarray:
    """Rows of `runs` in submission order: runs by time, then trace order within a run."""
    by_time = sorted(runs, key=lambda r: (table.run_time[r], r))
    return np.concatenate([np.flatnonzero(table.run == r) for r in by_time]) if by_time else np.zeros(0, int)


def replay_sizing(table: ExecutionTable, history_runs: Sequence[int], test_runs: Sequence[int], sizer: Sizer,
                  method: str, family: str, first_gib: float = 2.0, cap_gib: float = 256.0) -> SizingResult:
    """Size every task of `test_runs` (with memory recorded) in submission order; the history starts with
    `history_runs` and grows with each test task once it has run."""
    cap = cap_gib * GiB
    seen: dict[int, tuple[list[float], list[float]]] = {}
    for i in _order(table, history_runs):
        if np.isfinite(table.memory[i]):
            p, x = seen.setdefault(int(table.category[i]), ([], []))
            p.append(float(table.memory[i]))
            x.append(float(table.log_input[i]))
    reserved = used = retry_gbh = 0.0
    under = retries = tasks = 0
    allocations = np.full(len(table), np.nan)
    for i in _order(table, test_runs):
        peak = float(table.memory[i])
        if not np.isfinite(peak):
            continue
        hours = float(table.runtime[i]) / 3600.0
        p, x = seen.setdefault(int(table.category[i]), ([], []))
        alloc = sizer(np.asarray(p), np.asarray(x), float(table.log_input[i])) if p else first_gib * GiB
        alloc = min(max(alloc, 1.0), cap)
        if alloc < peak:
            under += 1
        while alloc < peak and alloc < cap:
            retry_gbh += alloc / GiB * hours
            alloc = min(alloc * 2, cap)
            retries += 1
        reserved += alloc / GiB * hours
        used += peak / GiB * hours
        allocations[i] = alloc
        tasks += 1
        p.append(peak)
        x.append(float(table.log_input[i]))
    reserved += retry_gbh
    return SizingResult(method, family, tasks, reserved, used, reserved - used, under, retries, retry_gbh,
                        allocations)


def calibrate_knn_margin(table: ExecutionTable, history_runs: Sequence[int], calib_runs: Sequence[int],
                         target_under: float, k: int = 8,
                         grid: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)) -> float:
    """The smallest margin whose share of under-provisioned tasks on `calib_runs` (sized from `history_runs`
    onward) is at most `target_under`."""
    for m in grid:
        r = replay_sizing(table, history_runs, calib_runs, input_knn(k, m), "calib", "")
        if r.tasks == 0 or r.under_first / r.tasks <= target_under:
            return m
    return grid[-1]


def evaluate_memory_sizing(table: ExecutionTable, test_fraction: float = 0.25, calib_fraction: float = 0.25,
                           target_under: float = 0.05, k: int = 8, workflows=None, replay_cfg=None) -> list[dict]:
    """Per family with memory recorded: the latest `test_fraction` of its runs are sized by each method from
    every earlier run; the input-knn margin is calibrated on the runs just before them. With `workflows` and
    `replay_cfg` (a RightSizingConfig), each method's final allocations are also replayed in the simulator (the
    runs one at a time on its cluster): the sum of their makespans and the reserved GiB-s of the recorded
    tasks, beside the traces' own requests."""
    rows = []
    for fam in table.families:
        runs = table.runs_of_family(fam)
        if not any(np.isfinite(table.memory[table.select_runs([r])]).any() for r in runs):
            continue
        n_test = max(1, int(round(test_fraction * len(runs))))
        n_cal = max(1, int(round(calib_fraction * len(runs))))
        history, test = runs[:-n_test], runs[-n_test:]
        margin = calibrate_knn_margin(table, history[:-n_cal], history[-n_cal:], target_under, k)
        sized = [replay_sizing(table, history, test, sizer, name, fam)
                 for name, sizer in (("tovar", tovar), ("witt", witt),
                                     (f"input-knn k={k} +{margin:.0%}", input_knn(k, margin)))]
        if workflows is not None and replay_cfg is not None:
            from .rightsizing import Requests, replay

            fam_workflows = [w for w in workflows if (w.family or "unknown") == fam]
            base = replay(fam_workflows, table, test, None, replay_cfg, "trace requests")
            for r in sized:
                sim = replay(fam_workflows, table, test, Requests(np.full(len(table), np.nan), r.allocations),
                             replay_cfg, r.method)
                rows.append({**r.row(), "sim_makespan_s": sim["makespan_s"],
                             "sim_reserved_mem_gib_s": sim["reserved_mem_gib_s_recorded"],
                             "trace_makespan_s": base["makespan_s"],
                             "trace_reserved_mem_gib_s": base["reserved_mem_gib_s_recorded"]})
        else:
            rows += [r.row() for r in sized]
    return rows

"""Run every policy on every cell of a benchmark plan, in one process or a pool, and collect tidy results.

Results hold only what the simulation determines (identical for any number of workers); wall-clock
measurements (simulator throughput, time per decision) are kept apart in `BenchRun.throughput`.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd

from ..errors import PolicyError
from ..scheduling import available_policies, get_policy
from ..sim import Cluster, TraceLibrary, simulate, single_workload
from .config import BenchConfig
from .scenarios import BenchPlan, Cell, build_plan, load_library

RESULT_COLUMNS = ["scenario", "load", "nodes", "policy", "seed", "metric", "value"]
RESULT_KEYS = RESULT_COLUMNS[:-1]
THROUGHPUT_COLUMNS = ["policy", "runs", "tasks", "sim_seconds", "decisions", "policy_seconds"]
# Metrics that measure this machine rather than the schedule: reported as throughput, not as results.
WALL_CLOCK_METRICS = frozenset({"decision_us", "sim_tasks_per_s"})

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BenchRun:
    """A finished benchmark: tidy results, per-policy simulator timings, and the config that produced them."""

    config: BenchConfig
    results: pd.DataFrame  # RESULT_COLUMNS, one row per (scenario, load, nodes, policy, seed, metric)
    throughput: pd.DataFrame  # THROUGHPUT_COLUMNS plus tasks_per_s and decision_us, one row per policy
    wall_seconds: float


def check_policies(names: Sequence[str]) -> list[str]:
    """The names, deduplicated, after checking each is registered; PolicyError lists the available ones."""
    available = available_policies()
    unknown = [n for n in names if n not in available]
    if unknown:
        raise PolicyError(
            f"Unknown scheduling polic{'y' if len(unknown) == 1 else 'ies'} {', '.join(repr(n) for n in unknown)}; "
            f"available: {', '.join(available)}"
        )
    return list(dict.fromkeys(names))


def metric_names(library: TraceLibrary) -> list[str]:
    """The metrics every result row can hold, found by simulating the library's smallest workflow once."""
    entry = min(library.entries, key=lambda e: (e.dag.n, e.name))
    cluster = Cluster.homogeneous(1, float(entry.dag.cpus.max()), float(entry.dag.memory.max()) / 1024**3 + 1)
    result = simulate(single_workload(entry, noise=0.0), cluster, get_policy("fifo"), record=False)
    return sorted(set(result.metrics()) - WALL_CLOCK_METRICS)


def run_cell(plan: BenchPlan, cell: Cell, policies: Sequence[str]) -> tuple[list[tuple], list[tuple]]:
    """Simulate each policy on the cell's workload: (result rows, timing rows)."""
    workload = plan.workload(cell)
    cluster = cell.cluster()
    rows, timings = [], []
    for name in policies:
        result = simulate(workload, cluster, get_policy(name), seed=cell.seed, record=False)
        for metric, value in result.metrics().items():
            if metric not in WALL_CLOCK_METRICS:
                rows.append((cell.scenario, cell.load, cell.nodes, name, cell.seed, metric, float(value)))
        timings.append((name, 1, result.num_tasks, result.wall_seconds, result.decisions, result.policy_seconds))
    return rows, timings


# Worker processes receive the plan once (inherited when forked) instead of with every cell.
_worker_plan: BenchPlan | None = None


def _init_worker(plan: BenchPlan) -> None:
    global _worker_plan
    _worker_plan = plan


def _run_in_worker(cell: Cell, policies: tuple[str, ...]) -> tuple[list[tuple], list[tuple]]:
    assert _worker_plan is not None, "worker process was not initialised with a plan"
    return run_cell(_worker_plan, cell, policies)


def _pool_context():
    # fork shares the parsed traces (and policies registered at run time) with the workers for free.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def run_plan(plan: BenchPlan, policies: Sequence[str], workers: int = 1,
             progress: Progress | None = None) -> tuple[list[tuple], list[tuple]]:
    """Run every cell of the plan; rows come back in plan order whatever the number of workers."""
    policies = tuple(policies)
    total = len(plan.cells)
    outputs: list[tuple[list[tuple], list[tuple]]] = []
    if workers <= 1 or total == 1:
        for k, cell in enumerate(plan.cells):
            outputs.append(run_cell(plan, cell, policies))
            if progress:
                progress(k + 1, total)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=_pool_context(),
                                 initializer=_init_worker, initargs=(plan,)) as pool:
            futures = [pool.submit(_run_in_worker, cell, policies) for cell in plan.cells]
            for k, future in enumerate(futures):
                outputs.append(future.result())
                if progress:
                    progress(k + 1, total)
    rows = [row for cell_rows, _ in outputs for row in cell_rows]
    timings = [t for _, cell_timings in outputs for t in cell_timings]
    return rows, timings


def results_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return frame.astype({"scenario": str, "load": float, "nodes": int, "policy": str, "seed": int,
                         "metric": str, "value": float})


def throughput_frame(timings: list[tuple], policies: Sequence[str]) -> pd.DataFrame:
    """Per policy: runs, simulated task completions, simulator seconds, tasks per second, microseconds per decision."""
    raw = pd.DataFrame(timings, columns=THROUGHPUT_COLUMNS)
    frame = raw.groupby("policy", sort=False).sum().reindex(list(policies)).reset_index()
    frame["tasks_per_s"] = frame["tasks"] / frame["sim_seconds"].where(frame["sim_seconds"] > 0)
    frame["decision_us"] = 1e6 * frame["policy_seconds"] / frame["decisions"].where(frame["decisions"] > 0)
    return frame


def run_benchmark(config: BenchConfig, library: TraceLibrary | None = None, scenarios: str = "all",
                  progress: Progress | None = None) -> BenchRun:
    """Run `config.policies` on every cell of the configured scenarios (`all`, `online` or `single`).

    `library` defaults to the workflows of `config.trace_dir` (parsed once per process).
    """
    started = time.perf_counter()
    policies = check_policies(config.policies)
    library = library if library is not None else load_library(config.trace_dir)
    plan = build_plan(config, library, scenarios)
    rows, timings = run_plan(plan, policies, config.workers, progress)
    return BenchRun(config, results_frame(rows), throughput_frame(timings, policies),
                    time.perf_counter() - started)

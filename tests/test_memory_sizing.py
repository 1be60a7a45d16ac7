"""Memory right-sizing against Tovar and Witt: failed attempts are charged and retried at double, a task is
sized only from executions that ran before it, and the methods behave as published."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.prediction.features import ExecutionTable
from orchestrator.prediction.memory_sizing import (
    GiB,
    evaluate_memory_sizing,
    input_knn,
    replay_sizing,
    tovar,
    witt,
)


def _table(peaks_gib, inputs, runs, runtime=3600.0) -> ExecutionTable:
    n = len(peaks_gib)
    run = np.asarray(runs)
    return ExecutionTable(
        run=run, family=np.zeros(n, int), category=np.zeros(n, int), log_runtime=np.full(n, np.log(runtime)),
        log_input=np.log1p(np.asarray(inputs, float)), log_output=np.full(n, np.nan), cpu=np.full(n, np.nan),
        log_memory=np.log(np.asarray(peaks_gib) * GiB), runtime=np.full(n, runtime),
        memory=np.asarray(peaks_gib, float) * GiB, runs=[f"r{i}" for i in range(run.max() + 1)],
        run_time=np.arange(run.max() + 1, dtype=float), run_family=np.zeros(run.max() + 1, int),
        families=["f"], categories=["f/c"])


def test_a_failed_attempt_is_charged_and_retried_at_double():
    # History: one run peaking at 1 GiB. Test: a task peaking at 3 GiB (1 h): tovar gives 1 GiB, fails (1 GB·h),
    # 2 GiB fails (2 GB·h), 4 GiB runs (4 GB·h): 7 GB·h reserved, 3 used.
    t = _table([1.0, 3.0], [10, 10], [0, 1])
    r = replay_sizing(t, [0], [1], tovar, "tovar", "f")
    assert (r.tasks, r.under_first, r.retries) == (1, 1, 2)
    assert r.retry_gbh == pytest.approx(3.0) and r.reserved_gbh == pytest.approx(7.0)
    assert r.wastage_gbh == pytest.approx(4.0)


def test_a_task_is_sized_only_from_what_ran_before_it():
    """Raising the last task's own peak makes it under-provisioned under every method: had a method seen that
    peak before the task ran, it would have allocated for it."""
    base = _table([1.0, 2.0, 1.5], [10, 20, 15], [0, 1, 1])
    changed = _table([1.0, 2.0, 40.0], [10, 20, 15], [0, 1, 1])
    for sizer in (tovar, witt, input_knn(2)):
        a = replay_sizing(base, [0], [1], sizer, "m", "f")
        b = replay_sizing(changed, [0], [1], sizer, "m", "f")
        assert b.under_first == a.under_first + 1 and b.retries > a.retries


def test_witt_follows_input_size_and_tovar_the_maximum():
    peaks = np.array([1.0, 2.0, 3.0]) * GiB
    inputs = np.log1p(np.array([100.0, 200.0, 300.0]))
    assert witt(peaks, inputs, float(np.log1p(150.0))) == pytest.approx(1.5 * GiB)
    assert tovar(peaks, inputs, float(np.log1p(150.0))) == 3 * GiB
    assert input_knn(1)(peaks, inputs, float(np.log1p(290.0))) == 3 * GiB


def test_on_the_bundled_montage_runs_input_knn_wastes_less_than_both(trace_library):
    from orchestrator.loaders import default_trace_dir, load_traces
    from orchestrator.prediction.features import build_table

    rows = evaluate_memory_sizing(build_table(load_traces(default_trace_dir())))
    by = {r["method"].split(" ")[0]: r for r in rows if r["family"] == "montage"}
    assert set(by) == {"tovar", "witt", "input-knn"}
    best = min(by["tovar"]["wastage_GBh"], by["witt"]["wastage_GBh"])
    assert by["input-knn"]["wastage_GBh"] <= 0.6 * best
    assert by["input-knn"]["under_provisioned_pct"] <= 5.0


def test_the_allocations_replay_in_the_simulator():
    from orchestrator.loaders import default_trace_dir, load_traces
    from orchestrator.prediction.config import load_config
    from orchestrator.prediction.features import build_table

    workflows = load_traces(default_trace_dir())
    rows = evaluate_memory_sizing(build_table(workflows), workflows=workflows,
                                  replay_cfg=load_config().rightsizing)
    by = {r["method"].split(" ")[0]: r for r in rows if r["family"] == "montage"}
    assert all(r["sim_makespan_s"] > 0 and r["trace_makespan_s"] > 0 for r in by.values())
    # The reserved memory-seconds the simulator counts follow the allocations.
    assert by["input-knn"]["sim_reserved_mem_gib_s"] < by["witt"]["sim_reserved_mem_gib_s"] \
        < by["tovar"]["sim_reserved_mem_gib_s"]

"""Benchmarks of scheduling policies on seeded simulated workloads: run every policy on the same cells,
summarise with confidence intervals, and compare two policies with paired tests.

    config = load_config(quick=True).with_overrides(policies=["fifo", "srpt-cp"])
    run = run_benchmark(config)                      # run.results: tidy DataFrame, one row per run and metric
    summary = summarise(run.results, baseline="fifo")
    ab = paired_comparison(run.results, "fifo", "srpt-cp", metric="avg_jct", scenario="online")

Names are imported on first use, so the command line starts without loading pandas, scipy and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "config": ["BenchConfig", "BenchConfigError", "OnlineScenario", "SingleScenario", "load_config"],
    "runner": ["RESULT_COLUMNS", "BenchRun", "check_policies", "run_benchmark"],
    "scenarios": ["BenchPlan", "Cell", "build_plan", "load_library"],
    "stats": ["ABResult", "ComparisonError", "mean_ci", "paired_comparison", "paired_comparisons", "single_overview",
              "summarise"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_MODULE_OF)

if TYPE_CHECKING:
    from .config import BenchConfig, BenchConfigError, OnlineScenario, SingleScenario, load_config
    from .runner import RESULT_COLUMNS, BenchRun, check_policies, run_benchmark
    from .scenarios import BenchPlan, Cell, build_plan, load_library
    from .stats import (ABResult, ComparisonError, mean_ci, paired_comparison, paired_comparisons, single_overview,
                        summarise)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator.bench' has no attribute '{name}'")
    return getattr(importlib.import_module(f".{module}", __name__), name)

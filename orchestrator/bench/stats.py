"""Statistics over benchmark results: per-cell means with t confidence intervals and ratios to the baseline and to
the lower bound (`summarise`), and the paired comparison of two policies on the same workloads (`paired_comparison`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import OrchestratorError
from .runner import RESULT_COLUMNS

CELL_KEYS = ["scenario", "load", "nodes"]  # a workload family; seeds are its repetitions
SUMMARY_KEYS = ["scenario", "load", "nodes", "policy", "metric"]
PAIR_KEYS = ["scenario", "load", "nodes", "seed"]  # one workload: both policies ran on it
# Metrics with a lower bound computed from the same workload.
LOWER_BOUNDS = {"makespan": "makespan_lb", "avg_jct": "avg_jct_lb"}
HIGHER_IS_BETTER = frozenset({"utilisation", "cpu_efficiency"})
SUMMARY_COLUMNS = SUMMARY_KEYS + ["n", "mean", "std", "ci_half", "ci_low", "ci_high",
                                  "ratio_to_baseline", "ratio_to_lb"]


class ComparisonError(OrchestratorError):
    """Two policies cannot be compared on the given results."""


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its t-distribution confidence interval (NaN half-width for a single value)."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan
    sem = float(values.std(ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sem)


def _check_results(df: pd.DataFrame) -> None:
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ComparisonError(f"Benchmark results lack the columns {missing}; expected {RESULT_COLUMNS}")


def summarise(df: pd.DataFrame, baseline: str | None = "fifo", confidence: float = 0.95) -> pd.DataFrame:
    """One row per (scenario, load, nodes, policy, metric): mean over seeds, std, t-CI, ratio of means to the
    baseline policy's in the same cell, and (for makespan and avg_jct) ratio of means to the lower bound."""
    _check_results(df)
    groups = df.groupby(SUMMARY_KEYS, dropna=False, sort=False)["value"]
    rows = []
    for key, values in groups:
        mean, half = mean_ci(values.to_numpy(), confidence)
        std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append((*key, len(values), mean, std, half, mean - half, mean + half))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:-2])

    cell_metric = CELL_KEYS + ["metric"]
    if baseline is not None and baseline in set(summary["policy"]):
        base = summary.loc[summary["policy"] == baseline, cell_metric + ["mean"]].rename(columns={"mean": "_base"})
        summary = summary.merge(base, on=cell_metric, how="left")
        summary["ratio_to_baseline"] = summary["mean"] / summary["_base"].where(summary["_base"] != 0)
        summary = summary.drop(columns="_base")
    else:
        summary["ratio_to_baseline"] = math.nan

    cell_policy = CELL_KEYS + ["policy"]
    bounds = summary.loc[summary["metric"].isin(LOWER_BOUNDS.values()), cell_policy + ["metric", "mean"]]
    bounds = bounds.assign(metric=bounds["metric"].map({v: k for k, v in LOWER_BOUNDS.items()}))
    summary = summary.merge(bounds.rename(columns={"mean": "_lb"}), on=cell_policy + ["metric"], how="left")
    summary["ratio_to_lb"] = summary["mean"] / summary["_lb"].where(summary["_lb"] > 0)
    return summary.drop(columns="_lb")[SUMMARY_COLUMNS]


@dataclass(frozen=True)
class ABResult:
    """A paired comparison of policy B against policy A on the same workloads; differences are B - A."""

    policy_a: str
    policy_b: str
    metric: str
    pairs: pd.DataFrame  # PAIR_KEYS + [a, b, diff]
    alpha: float
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    p_ttest: float
    scenario: str | None = None  # what the pairs were drawn from: "online", "single" or one exact scenario

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def relative_change(self) -> float:
        """(mean B - mean A) / mean A."""
        return self.mean_diff / self.mean_a if self.mean_a else math.nan

    @property
    def identical(self) -> bool:
        return bool((self.pairs["diff"] == 0).all())

    @property
    def significant(self) -> bool:
        """Wilcoxon's signed-rank test (no normality assumption) decides; the t-test is reported beside it."""
        return not self.identical and self.p_wilcoxon < self.alpha

    @property
    def verdict(self) -> str:
        tests = f"Wilcoxon p={self.p_wilcoxon:.3g}, paired t p={self.p_ttest:.3g}, {self.n} pairs"
        if self.identical:
            return (f"no significant difference at alpha={self.alpha:g}: {self.policy_a} and {self.policy_b} give "
                    f"identical {self.metric} on all {self.n} workloads")
        if not self.significant:
            return f"no significant difference at alpha={self.alpha:g} ({tests})"
        low, high = (self.policy_b, self.policy_a) if self.mean_diff < 0 else (self.policy_a, self.policy_b)
        better = ""
        if self.metric in HIGHER_IS_BETTER:
            better = f"; {high} is better"
        elif not self.metric.endswith("_lb"):
            better = f"; {low} is better"
        return f"{low} has significantly lower {self.metric} than {high} ({tests}){better}"


def _p_value(p: float) -> float:
    return 1.0 if p is None or not math.isfinite(p) else float(p)


def scenario_kind(scenario: str) -> str:
    """`online` or `single` (every `single:<workflow>` scenario); any other name is its own kind."""
    return "single" if scenario.startswith("single:") else scenario


def paired_comparison(df: pd.DataFrame, policy_a: str, policy_b: str, metric: str = "avg_jct",
                      alpha: float = 0.05, scenario: str | None = None) -> ABResult:
    """Compare B with A on every workload both ran on (same scenario, load, nodes and seed).

    `scenario` filters to `online`, `single` (every single-workflow scenario) or one exact scenario name; it may
    be left out only when the results hold one kind of scenario, since a test never pools an online mix with
    single workflows (use `paired_comparisons` for one test per kind).
    Zero differences are dropped by the signed-rank test; when every difference is zero both p-values are 1.
    """
    _check_results(df)
    if not 0 < alpha < 1:
        raise ComparisonError(f"alpha must be between 0 and 1, got {alpha}")
    data = df
    if scenario is not None:
        if scenario == "single":
            data = data[data["scenario"].str.startswith("single:")]
        else:
            data = data[data["scenario"] == scenario]
        if data.empty:
            raise ComparisonError(f"No results for scenario '{scenario}'; have {sorted(set(df['scenario']))}")
    metrics = sorted(set(data["metric"]))
    if metric not in metrics:
        raise ComparisonError(f"Unknown metric '{metric}'; the results have {', '.join(metrics)}")
    for name in (policy_a, policy_b):
        if name not in set(data["policy"]):
            raise ComparisonError(f"No results for policy '{name}'; have {', '.join(sorted(set(data['policy'])))}")
    if scenario is None:
        kinds = sorted({scenario_kind(s) for s in data["scenario"]})
        if len(kinds) > 1:
            raise ComparisonError(f"The results hold several kinds of scenario ({', '.join(kinds)}); one test "
                                  "must not pool them: pass scenario= one of them, or use paired_comparisons")
        scenario = kinds[0]
    data = data[data["metric"] == metric]
    a = data[data["policy"] == policy_a][PAIR_KEYS + ["value"]].rename(columns={"value": "a"})
    b = data[data["policy"] == policy_b][PAIR_KEYS + ["value"]].rename(columns={"value": "b"})
    pairs = a.merge(b, on=PAIR_KEYS, how="inner").reset_index(drop=True)  # NaN loads match NaN loads
    if pairs.empty:
        raise ComparisonError(f"'{policy_a}' and '{policy_b}' share no workload to compare on")
    pairs["diff"] = pairs["b"] - pairs["a"]
    diff = pairs["diff"].to_numpy()
    mean_diff, half = mean_ci(diff)
    if np.all(diff == 0):
        p_wilcoxon = p_ttest = 1.0
        half = 0.0
    else:
        p_wilcoxon = _p_value(stats.wilcoxon(diff, zero_method="wilcox").pvalue) if np.count_nonzero(diff) else 1.0
        p_ttest = _p_value(stats.ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 else 1.0
    return ABResult(policy_a, policy_b, metric, pairs, alpha, float(pairs["a"].mean()), float(pairs["b"].mean()),
                    mean_diff, mean_diff - half, mean_diff + half, p_wilcoxon, p_ttest, scenario)


def paired_comparisons(df: pd.DataFrame, policy_a: str, policy_b: str, metric: str = "avg_jct",
                       alpha: float = 0.05) -> list[ABResult]:
    """One paired comparison per kind of scenario in the results (online first, then single), never pooled."""
    _check_results(df)
    kinds = list(dict.fromkeys(scenario_kind(s) for s in df["scenario"]))
    kinds.sort(key=lambda k: (k != "online", k != "single", k))
    if not kinds:
        raise ComparisonError("No benchmark results to compare")
    return [paired_comparison(df, policy_a, policy_b, metric=metric, alpha=alpha, scenario=kind) for kind in kinds]


def single_overview(df: pd.DataFrame, baseline: str | None = "fifo", metric: str = "makespan_over_lb",
                    confidence: float = 0.95) -> pd.DataFrame:
    """Across the single-workflow scenarios: per (nodes, policy), the geometric mean over workflows of `metric`
    for each seed, then its mean and t-CI over seeds and the ratio of means to the baseline policy."""
    _check_results(df)
    single = df[df["scenario"].str.startswith("single:") & (df["metric"] == metric)]
    columns = ["nodes", "policy", "workflows", "n", "mean", "ci_half", "ratio_to_baseline"]
    if single.empty:
        return pd.DataFrame(columns=columns)
    per_seed = (single.assign(log=np.log(single["value"]))
                .groupby(["nodes", "policy", "seed"], sort=False)
                .agg(log=("log", "mean"), workflows=("scenario", "nunique")).reset_index())
    per_seed["geo"] = np.exp(per_seed["log"])
    rows = []
    for (nodes, policy), group in per_seed.groupby(["nodes", "policy"], sort=False):
        mean, half = mean_ci(group["geo"].to_numpy(), confidence)
        rows.append((nodes, policy, int(group["workflows"].max()), len(group), mean, half))
    overview = pd.DataFrame(rows, columns=columns[:-1])
    if baseline is not None and baseline in set(overview["policy"]):
        base = overview.loc[overview["policy"] == baseline, ["nodes", "mean"]].rename(columns={"mean": "_base"})
        overview = overview.merge(base, on="nodes", how="left")
        overview["ratio_to_baseline"] = overview["mean"] / overview["_base"]
        overview = overview.drop(columns="_base")
    else:
        overview["ratio_to_baseline"] = math.nan
    return overview.sort_values(["nodes"], kind="stable").reset_index(drop=True)[columns]

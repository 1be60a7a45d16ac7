"""PNG plots of a benchmark summary (matplotlib, Agg backend): online metrics against load and single-workflow
makespan over its lower bound against cluster size, one line per policy with 95% CI bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ONLINE_PLOT_METRICS = ("avg_jct", "p95_jct", "avg_slowdown", "avg_jct_over_lb")
# Policies often tie (fifo and job-fifo on one workflow), so each gets its own marker and dash and a small sideways
# offset: tied lines stay visible.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")


def _errorbar(ax, x, rows: pd.DataFrame, label: str, k: int) -> None:
    ax.errorbar(x, rows["mean"], yerr=rows["ci_half"].fillna(0.0), label=label, capsize=3,
                marker=MARKERS[k % len(MARKERS)], linestyle=DASHES[k % len(DASHES)], markersize=5, alpha=0.85)


def _ci_label(summary: pd.DataFrame) -> str:
    n = int(summary["n"].max()) if len(summary) else 0
    return "mean, 95% CI over seeds" if n >= 2 else "mean of 1 seed, no CI"


def _offset(k: int, count: int) -> float:
    return k - (count - 1) / 2


def plot_online(summary: pd.DataFrame, policies: Sequence[str], path: Path) -> Path | None:
    """Average and p95 JCT, slowdown and JCT over its bound against offered load."""
    online = summary[summary["scenario"] == "online"]
    if online.empty:
        return None
    metrics = [m for m in ONLINE_PLOT_METRICS if m in set(online["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, policy in enumerate(policies):
            rows = online[(online["policy"] == policy) & (online["metric"] == metric)].sort_values("load")
            if len(rows):
                _errorbar(ax, rows["load"] + 0.004 * _offset(k, len(policies)), rows, policy, k)
        ax.set_xlabel("offered load")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    nodes = int(online["nodes"].iloc[0])
    fig.suptitle(f"online workflow mixes on {nodes} nodes ({_ci_label(online)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_single(summary: pd.DataFrame, policies: Sequence[str], path: Path) -> Path | None:
    """Makespan over its lower bound against the number of nodes, one panel per workflow."""
    single = summary[summary["scenario"].str.startswith("single:") & (summary["metric"] == "makespan_over_lb")]
    if single.empty:
        return None
    scenarios = list(dict.fromkeys(single["scenario"]))
    cols = min(4, len(scenarios))
    rows_n = math.ceil(len(scenarios) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.0 * cols, 3.3 * rows_n), squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios):
        for k, policy in enumerate(policies):
            rows = single[(single["scenario"] == scenario) & (single["policy"] == policy)].sort_values("nodes")
            if len(rows):
                _errorbar(ax, rows["nodes"] * 2 ** (0.03 * _offset(k, len(policies))), rows, policy, k)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(single["nodes"].unique()), [str(n) for n in sorted(single["nodes"].unique())])
        ax.set_title(scenario.removeprefix("single:"), fontsize=8)
        ax.set_xlabel("nodes")
        ax.set_ylabel("makespan / lower bound")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scenarios):]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"single workflow: makespan over its lower bound ({_ci_label(single)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(summary: pd.DataFrame, policies: Sequence[str], out: Path) -> list[Path]:
    """Every plot the summary has data for; returns the files written."""
    written = [plot_online(summary, policies, out / "online_vs_load.png"),
               plot_single(summary, policies, out / "single_makespan_vs_nodes.png")]
    return [p for p in written if p is not None]

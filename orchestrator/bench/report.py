"""Tables of benchmark and A/B results, each built once and rendered for the terminal (rich) or as markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from rich.markup import escape
from rich.table import Table

from .runner import BenchRun
from .stats import LOWER_BOUNDS, ABResult

ONLINE_METRICS = ("avg_jct", "p95_jct", "avg_slowdown", "makespan", "utilisation")
SINGLE_METRICS = ("makespan",)
UNITS = {"avg_jct": "s", "p95_jct": "s", "makespan": "s", "makespan_lb": "s", "avg_jct_lb": "s",
         "critical_path_lb": "s", "work_lb": "s"}


@dataclass
class TextTable:
    """A titled grid of already-formatted cells; `sections` are row indices that start a new group."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    sections: set[int] = field(default_factory=set)
    caption: str = ""

    def to_rich(self) -> Table:
        # Cells hold user text (workflow and policy names): escaped so that rich shows it as written.
        table = Table(title=escape(self.title), caption=escape(self.caption) if self.caption else None,
                      title_justify="left")
        for k, name in enumerate(self.columns):
            table.add_column(escape(name), justify="left" if k == 0 else "right", no_wrap=True)
        for i, row in enumerate(self.rows):
            if i in self.sections and i > 0:
                table.add_section()
            table.add_row(*(escape(cell) for cell in row))
        return table

    def to_markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines)


def _decimals(x: float) -> int:
    x = abs(x)
    return 0 if x >= 100 else 1 if x >= 10 else 3


def format_value(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:,.{_decimals(x)}f}"


def format_mean_ci(mean: float, half: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    d = _decimals(mean)
    if half is None or not math.isfinite(half):
        return f"{mean:,.{d}f}"
    return f"{mean:,.{d}f} ± {half:,.{d}f}"


def format_ratio(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _label(metric: str) -> str:
    return f"{metric} ({UNITS[metric]})" if metric in UNITS else metric


def _cell(summary: pd.DataFrame, **where) -> pd.Series | None:
    mask = pd.Series(True, index=summary.index)
    for column, value in where.items():
        if isinstance(value, float) and math.isnan(value):
            mask &= summary[column].isna()
        else:
            mask &= summary[column] == value
    hits = summary[mask]
    return hits.iloc[0] if len(hits) else None


def _stat_cells(row: pd.Series | None, with_baseline: bool, with_lb: bool) -> list[str]:
    if row is None:
        return ["-"] * (1 + with_baseline + with_lb)
    cells = [format_mean_ci(row["mean"], row["ci_half"])]
    if with_baseline:
        cells.append(format_ratio(row["ratio_to_baseline"]))
    if with_lb:
        cells.append(format_ratio(row["ratio_to_lb"]))
    return cells


def ci_note(n: int) -> str:
    """What the numbers in a mean ± CI cell are, for `n` seeds."""
    if n < 2:
        return f"mean of {n} seed (no confidence interval: it needs 2 or more seeds)"
    return f"mean ± 95% CI (t, {n} seeds)"


def _seeds_note(summary: pd.DataFrame, baseline: str | None, with_lb: bool) -> str:
    n = int(summary["n"].max()) if len(summary) else 0
    note = ci_note(n)
    if baseline:
        note += f"; x{baseline} = ratio of means to {baseline}"
    return note + ("; xLB = ratio of means to the lower bound" if with_lb else "")


def online_tables(summary: pd.DataFrame, policies: Sequence[str], baseline: str | None,
                  metrics: Sequence[str] = ONLINE_METRICS) -> list[TextTable]:
    """One table per metric: a row per policy, a column group per offered load."""
    online = summary[summary["scenario"] == "online"]
    if online.empty:
        return []
    loads = sorted(online["load"].unique())
    nodes = int(online["nodes"].iloc[0])
    with_baseline = baseline is not None and baseline in set(online["policy"])
    tables = []
    for metric in metrics:
        with_lb = metric in LOWER_BOUNDS
        columns = ["policy"]
        for load in loads:
            columns.append(f"load {load:g}")
            if with_baseline:
                columns.append(f"x{baseline}")
            if with_lb:
                columns.append("xLB")
        note = _seeds_note(online, baseline if with_baseline else None, with_lb)
        table = TextTable(f"online, {nodes} nodes: {_label(metric)}", columns, caption=note)
        for policy in policies:
            row = [policy]
            for load in loads:
                row += _stat_cells(_cell(online, policy=policy, metric=metric, load=load), with_baseline, with_lb)
            table.rows.append(row)
        tables.append(table)
    return tables


def single_tables(summary: pd.DataFrame, policies: Sequence[str], baseline: str | None,
                  metrics: Sequence[str] = SINGLE_METRICS) -> list[TextTable]:
    """One table per metric: a row group per workflow (a row per policy), a column group per cluster size."""
    single = summary[summary["scenario"].str.startswith("single:")]
    if single.empty:
        return []
    node_counts = sorted(single["nodes"].unique())
    with_baseline = baseline is not None and baseline in set(single["policy"])
    tables = []
    for metric in metrics:
        with_lb = metric in LOWER_BOUNDS
        columns = ["workflow", "policy"]
        for n in node_counts:
            columns.append(f"{n} nodes")
            if with_baseline:
                columns.append(f"x{baseline}")
            if with_lb:
                columns.append("xLB")
        note = _seeds_note(single, baseline if with_baseline else None, with_lb)
        table = TextTable(f"single workflow: {_label(metric)}", columns, caption=note)
        for scenario in dict.fromkeys(single["scenario"]):
            table.sections.add(len(table.rows))
            for k, policy in enumerate(policies):
                row = [scenario.removeprefix("single:") if k == 0 else "", policy]
                for n in node_counts:
                    row += _stat_cells(_cell(single, scenario=scenario, policy=policy, metric=metric, nodes=n),
                                       with_baseline, with_lb)
                table.rows.append(row)
        tables.append(table)
    return tables


def overview_table(overview: pd.DataFrame, policies: Sequence[str], baseline: str | None) -> TextTable | None:
    """Makespan over its lower bound, geometric mean over the single workflows, per policy and cluster size."""
    if overview.empty:
        return None
    node_counts = sorted(overview["nodes"].unique())
    with_baseline = baseline is not None and baseline in set(overview["policy"])
    columns = ["policy"]
    for n in node_counts:
        columns.append(f"{n} nodes")
        if with_baseline:
            columns.append(f"x{baseline}")
    workflows = int(overview["workflows"].max())
    table = TextTable(f"single workflow: makespan / LB, geometric mean over {workflows} workflows", columns,
                      caption=ci_note(int(overview["n"].max()))
                              + (f"; x{baseline} = ratio of means" if with_baseline else ""))
    for policy in policies:
        row = [policy]
        for n in node_counts:
            hit = overview[(overview["policy"] == policy) & (overview["nodes"] == n)]
            if hit.empty:
                row += ["-"] * (1 + with_baseline)
                continue
            r = hit.iloc[0]
            row.append(format_mean_ci(r["mean"], r["ci_half"]))
            if with_baseline:
                row.append(format_ratio(r["ratio_to_baseline"]))
        table.rows.append(row)
    return table


def throughput_table(run: BenchRun) -> TextTable:
    """Simulated task completions per second of simulator time, per policy (each simulation runs in one process)."""
    t = run.throughput
    table = TextTable(
        "simulator throughput (single process per simulation)",
        ["policy", "runs", "tasks simulated", "sim seconds", "tasks / s", "us / decision"],
        caption=f"benchmark wall time {run.wall_seconds:.1f} s with {run.config.workers} worker(s)")
    for r in t.itertuples():
        table.rows.append([r.policy, f"{int(r.runs):,}", f"{int(r.tasks):,}", f"{r.sim_seconds:.1f}",
                           f"{r.tasks_per_s:,.0f}", f"{r.decision_us:.1f}"])
    total_tasks, total_s = t["tasks"].sum(), t["sim_seconds"].sum()
    table.sections.add(len(table.rows))
    table.rows.append(["all", f"{int(t['runs'].sum()):,}", f"{int(total_tasks):,}", f"{total_s:.1f}",
                       f"{total_tasks / total_s:,.0f}" if total_s > 0 else "-",
                       f"{1e6 * t['policy_seconds'].sum() / max(t['decisions'].sum(), 1):.1f}"])
    return table


def benchmark_tables(run: BenchRun, summary: pd.DataFrame, overview: pd.DataFrame) -> list[TextTable]:
    """Every table `orchestrator bench` prints, in order."""
    policies = list(dict.fromkeys(run.config.policies))
    baseline = run.config.baseline
    tables = online_tables(summary, policies, baseline)
    single = overview_table(overview, policies, baseline)
    if single is not None:
        tables.append(single)
    tables += single_tables(summary, policies, baseline)
    tables.append(throughput_table(run))
    return tables


def ab_table(result: ABResult) -> TextTable:
    """The paired comparison's numbers; the verdict is printed under it."""
    a, b, m = result.policy_a, result.policy_b, result.metric
    where = f", scenario {result.scenario}" if result.scenario else ""
    table = TextTable(f"A/B on {m}{where}: {b} (B) vs {a} (A), paired over {result.n} workloads", ["", "value"])
    table.rows = [
        [f"mean {m}, {a}", format_value(result.mean_a)],
        [f"mean {m}, {b}", format_value(result.mean_b)],
        ["mean difference B - A", format_value(result.mean_diff)],
        ["95% CI of the difference", f"[{format_value(result.ci_low)}, {format_value(result.ci_high)}]"],
        ["relative change (B - A) / A", f"{100 * result.relative_change:+.1f}%"
         if math.isfinite(result.relative_change) else "-"],
        ["Wilcoxon signed-rank p", f"{result.p_wilcoxon:.3g}"],
        ["paired t-test p", f"{result.p_ttest:.3g}"],
    ]
    return table

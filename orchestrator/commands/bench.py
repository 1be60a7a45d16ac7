"""`orchestrator bench` (every policy on the same seeded workloads) and `orchestrator ab` (a paired test of two)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..bench.config import BenchConfig, BenchConfigError, load_config
from ..model import with_max_tasks
from .workflow import max_tasks_option

# The benchmark's heavy imports (pandas, scipy, matplotlib) happen inside the commands, so that registering them
# does not slow down every other `orchestrator` command.

SCENARIOS = ("all", "online", "single")


def _split(text: str, option: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise BenchConfigError(f"{option} '{text}' is empty; give a comma-separated list")
    return items


def _numbers(text: str | None, option: str, kind: Callable) -> list | None:
    if text is None:
        return None
    values = []
    for item in _split(text, option):
        try:
            values.append(kind(item))
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise BenchConfigError(f"{option} '{text}': '{item}' is not {noun}") from None
    return values


def _config(config_path: Path | None, quick: bool, scenario: str, **overrides) -> BenchConfig:
    if scenario not in SCENARIOS:
        raise BenchConfigError(f"--scenario '{scenario}' is not one of {', '.join(SCENARIOS)}")
    return load_config(config_path, quick=quick).with_overrides(**overrides)


def _with_baseline(cfg: BenchConfig) -> tuple[BenchConfig, bool]:
    """The config with its baseline policy run first when the policies leave it out (the ratio columns need it)."""
    if cfg.baseline in cfg.policies:
        return cfg, False
    return cfg.with_overrides(policies=[cfg.baseline, *cfg.policies]), True


def _check_alpha(alpha: float) -> None:
    if not (0 < alpha < 1):  # also catches NaN
        raise BenchConfigError(f"--alpha {alpha:g}: the significance level must be between 0 and 1 (exclusive)")


def _output_console() -> Console:
    console = Console()
    # Piped output (a file, CI log) is laid out wide instead of wrapping the tables at 80 columns.
    return console if console.is_terminal else Console(width=200)


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def register(app: typer.Typer) -> None:
    config_option = typer.Option(None, "--config", help="Benchmark config file (default configs/bench.yaml)")
    quick_option = typer.Option(False, "--quick", help="The config's tiny 'quick' variant (seconds; for tests)")
    traces_option = typer.Option(None, "--traces", help="Folder of WfCommons files (default: the bundled traces)")
    seeds_option = typer.Option(None, "--seeds", min=1, help="Seeds (repetitions) per cell")
    loads_option = typer.Option(None, "--loads", help="Online offered loads, e.g. 0.5,0.8,0.95")
    jobs_option = typer.Option(None, "--jobs", min=1, help="Workflows per online run")
    nodes_option = typer.Option(None, "--nodes", help="Single-workflow cluster sizes in nodes, e.g. 2,4,8,16")
    workers_option = typer.Option(None, "--workers", min=1, help="Parallel processes (results do not depend on it)")

    @app.command()
    def bench(
        out: Path = typer.Option(Path("results/bench"), "--out", help="Folder for results, summary and plots"),
        policies: str | None = typer.Option(None, "--policies", help="Comma-separated policy names "
                                            "(default: every heuristic)"),
        scenario: str = typer.Option("all", "--scenario", help="all, online or single"),
        traces: Path | None = traces_option,
        seeds: int | None = seeds_option,
        loads: str | None = loads_option,
        jobs: int | None = jobs_option,
        nodes: str | None = nodes_option,
        workers: int | None = workers_option,
        quick: bool = quick_option,
        config: Path | None = config_option,
        max_tasks: int | None = max_tasks_option(),
        families: str | None = typer.Option(None, "--families", help="Online mixes drawn only from these "
                                            "families, e.g. cycles (default: every family of the traces)"),
    ):
        """Run every policy on the same seeded workloads; print mean ± 95% CI, ratios to the baseline (fifo, run
        even when --policies leaves it out) and to the lower bound; write results.csv/.parquet, summary.csv and
        PNG plots to --out."""
        from ..bench import runner
        from ..bench.outputs import prepare_output_dir, write_outputs
        from ..bench.report import benchmark_tables
        from ..bench.stats import single_overview, summarise

        with_max_tasks(max_tasks)
        cfg = _config(config, quick, scenario, traces=traces,
                      policies=_split(policies, "--policies") if policies is not None else None,
                      seeds=seeds, workers=workers, **{"online.loads": _numbers(loads, "--loads", float),
                                                       "online.jobs": jobs,
                                                       "online.families": (_split(families, "--families")
                                                                           if families is not None else None),
                                                       "single.nodes": _numbers(nodes, "--nodes", int)})
        cfg, added_baseline = _with_baseline(cfg)
        runner.check_policies(cfg.policies)
        prepare_output_dir(out)  # an unwritable --out fails now, not after the whole benchmark
        console = _output_console()
        if added_baseline:
            console.print(f"note: {escape(cfg.baseline)} is not in --policies; it is run as well, as the baseline "
                          f"of the x{escape(cfg.baseline)} ratio columns", soft_wrap=True)
        with _progress_bar("simulating") as progress:
            run = runner.run_benchmark(cfg, scenarios=scenario, progress=progress)
        summary = summarise(run.results, baseline=cfg.baseline)
        tables = benchmark_tables(run, summary, single_overview(run.results, baseline=cfg.baseline))
        for table in tables:
            console.print(table.to_rich())
            console.print()
        written = write_outputs(run, summary, tables, out)
        console.print(f"{len(run.results):,} result rows; wrote {', '.join(p.name for p in written)} to "
                      f"{escape(str(out))}", soft_wrap=True)

    @app.command()
    def ab(
        policy_a: str = typer.Argument(..., help="Policy A (the reference), e.g. fifo"),
        policy_b: str = typer.Argument(..., help="Policy B, compared with A"),
        metric: str = typer.Option("avg_jct", "--metric", help="Metric to compare (a column of results.csv)"),
        scenario: str = typer.Option("all", "--scenario", help="all, online or single"),
        alpha: float = typer.Option(0.05, "--alpha", help="Significance level, between 0 and 1 (exclusive)"),
        traces: Path | None = traces_option,
        seeds: int | None = seeds_option,
        loads: str | None = loads_option,
        jobs: int | None = jobs_option,
        nodes: str | None = nodes_option,
        workers: int | None = workers_option,
        quick: bool = quick_option,
        config: Path | None = config_option,
        max_tasks: int | None = max_tasks_option(),
    ):
        """Run two policies on the same workloads and compare them per (scenario, load, nodes, seed) with a
        Wilcoxon signed-rank test and a paired t-test: one test per kind of scenario (online, single), never
        pooled."""
        from ..bench import runner
        from ..bench.report import ab_table
        from ..bench.scenarios import load_library
        from ..bench.stats import ComparisonError, paired_comparison, paired_comparisons

        _check_alpha(alpha)
        with_max_tasks(max_tasks)
        cfg = _config(config, quick, scenario, traces=traces, policies=[policy_a, policy_b], seeds=seeds,
                      workers=workers, **{"online.loads": _numbers(loads, "--loads", float), "online.jobs": jobs,
                                          "single.nodes": _numbers(nodes, "--nodes", int)})
        runner.check_policies(cfg.policies)
        library = load_library(cfg.trace_dir)
        known = runner.metric_names(library)
        if metric not in known:  # before the runs, not after them
            raise ComparisonError(f"Unknown metric '{metric}'; the results have {', '.join(known)}")
        with _progress_bar("simulating") as progress:
            run = runner.run_benchmark(cfg, library=library, scenarios=scenario, progress=progress)
        if scenario == "all":  # one test per kind of scenario: an online mix and single workflows never pooled
            results = paired_comparisons(run.results, policy_a, policy_b, metric=metric, alpha=alpha)
        else:
            results = [paired_comparison(run.results, policy_a, policy_b, metric=metric, alpha=alpha,
                                         scenario=scenario)]
        console = _output_console()
        for k, result in enumerate(results):
            if k:
                console.print()
            console.print(ab_table(result).to_rich())
            console.print(f"[bold]{escape(result.verdict)}[/]", soft_wrap=True)

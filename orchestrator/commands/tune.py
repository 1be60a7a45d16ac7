"""`orchestrator tune heuristics`: choose weighted-fair's alpha in the simulator, on workloads of the training
families with training seeds, and write it to models/scheduler/heuristics.json."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import PolicyError
from ..scheduling.tuning import DEFAULT_ALPHAS


def _numbers(text: str, option: str) -> list[float]:
    values = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise PolicyError(f"{option} '{text}': '{item}' is not a number") from None
    if not values:
        raise PolicyError(f"{option} '{text}' is empty; give a comma-separated list of numbers")
    return values


def register(app: typer.Typer) -> None:
    tune = typer.Typer(help="Tune the parameters of heuristic scheduling policies in the simulator.",
                       no_args_is_help=True)
    app.add_typer(tune, name="tune")

    @tune.command("heuristics")
    def heuristics(
        traces: Path | None = typer.Option(None, "--traces", help="Folder of WfCommons files (default: the bundled "
                                           "traces); only the training families are used"),
        seeds: int = typer.Option(6, "--seeds", min=1, help="Workloads per load (seeds 1000, 1001, ...)"),
        jobs: int = typer.Option(40, "--jobs", min=1, help="Workflows per workload"),
        loads: str = typer.Option("0.8,0.95", "--loads", help="Offered cpu loads, comma-separated"),
        alphas: str = typer.Option(",".join(f"{a:g}" for a in DEFAULT_ALPHAS), "--alphas",
                                   help="Values of alpha to try"),
        nodes: int = typer.Option(4, "--nodes", min=1, help="Nodes of the simulated cluster"),
        cpus_per_node: float = typer.Option(16, "--cpus-per-node", min=1),
        memory_gib_per_node: float = typer.Option(64, "--memory-gib-per-node", min=1),
        workers: int = typer.Option(2, "--workers", min=1, help="Parallel processes (results do not depend on it)"),
        out: Path | None = typer.Option(None, "--out", help="Where to write the tuned values (default "
                                        "models/scheduler/heuristics.json, or $ORCHESTRATOR_HEURISTICS_FILE)"),
    ) -> None:
        """Simulate weighted-fair at each alpha on the same Poisson workloads (the training families only, seeds
        from 1000: never a benchmark workload), print the mean average JCT per alpha and load, and write the alpha
        with the lowest mean over the loads, with this table and the command, to --out."""
        from ..resources import traces_dir
        from ..scheduling.tuning import FIRST_TRAINING_SEED, heuristics_file, tune_weighted_fair, write_tuned
        from ..sim import Cluster, TraceLibrary
        from .bench import _output_console, _progress_bar

        load_values, alpha_values = _numbers(loads, "--loads"), _numbers(alphas, "--alphas")
        path = out if out is not None else heuristics_file()
        library = TraceLibrary.from_dir(traces if traces is not None else traces_dir())
        cluster = Cluster.homogeneous(nodes, cpus_per_node, memory_gib_per_node)
        seed_values = range(FIRST_TRAINING_SEED, FIRST_TRAINING_SEED + seeds)
        with _progress_bar("simulating") as progress:
            result = tune_weighted_fair(library, alphas=alpha_values, loads=load_values, seeds=seed_values,
                                        jobs=jobs, cluster=cluster, workers=workers, progress=progress)
        command = ("orchestrator tune heuristics"
                   + (f" --traces {traces}" if traces is not None else "")
                   + f" --seeds {seeds} --jobs {jobs} --loads {loads} --alphas={alphas} --nodes {nodes}"
                   + f" --cpus-per-node {cpus_per_node:g} --memory-gib-per-node {memory_gib_per_node:g}")
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        written = write_tuned(result.to_file(command, date), path)

        console = _output_console()
        console.print(f"weighted-fair on {len(result.seeds)} Poisson workload(s) per load of {result.jobs} workflows "
                      f"from {', '.join(result.families)} (seeds {result.seeds[0]}-{result.seeds[-1]}), "
                      f"{result.cluster}:", soft_wrap=True)
        table = Table(title="mean avg JCT (s)")
        table.add_column("alpha", justify="right")
        for load in result.loads:
            table.add_column(f"load {load:g}", justify="right")
        table.add_column("mean", justify="right")
        best = result.best_alpha
        for row in result.table():
            mark = " (best)" if row["alpha"] == best else ""
            table.add_row(f"{row['alpha']:g}{mark}", *[f"{row[f'load {load:g}']:,.1f}" for load in result.loads],
                          f"{row['mean']:,.1f}", style="bold" if mark else None)
        console.print(table)
        console.print(f"best alpha {best:g}; wrote {escape(str(written))}", soft_wrap=True)

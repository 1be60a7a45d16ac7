"""`orchestrator bench-core`: how fast DAG analysis and the simulator are on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    console = Console()

    @app.command(name="bench-core")
    def bench_core(
        traces: Path = typer.Option(None, "--traces", help="Folder of WfCommons files (default: bundled)"),
        policies: str = typer.Option("fifo,job-fifo,srpt-cp,heft,tetris", "--policies"),
        repeats: int = typer.Option(3, "--repeats"),
        out: Path = typer.Option(Path("results/core"), "--out"),
    ):
        """Time DAG analysis (1k-50k tasks) and simulator throughput (completions per CPU-second, one core)."""
        import pandas as pd

        from ..loaders import default_trace_dir
        from ..perf import rows, time_dag_analysis, time_simulator
        from ..sim import TraceLibrary

        out.mkdir(parents=True, exist_ok=True)
        dag_rows = rows(time_dag_analysis(repeats=repeats))
        table = Table(title="DAG analysis (levels, top/bottom levels, critical path, slack)")
        for col in ("tasks", "edges", "levels", "build_arrays_ms", "analyse_ms", "analyse_warm_ms"):
            table.add_column(col, justify="right")
        for r in dag_rows:
            table.add_row(*[f"{v:.1f}" if isinstance(v, float) else str(v) for v in r.values()])
        console.print(table)
        library = TraceLibrary.from_dir(traces or default_trace_dir())
        sim_rows = rows(time_simulator([p.strip() for p in policies.split(",") if p.strip()], library, repeats))
        table = Table(title="Simulator throughput (best of %d, CPU time of one process)" % repeats)
        for col in ("policy", "scenario", "tasks", "seconds", "completions_per_s"):
            table.add_column(col, justify="right")
        for r in sim_rows:
            table.add_row(r["policy"], r["scenario"], str(r["tasks"]), f"{r['seconds']:.3f}",
                          f"{r['completions_per_s']:,.0f}")
        console.print(table)
        pd.DataFrame(dag_rows).to_csv(out / "dag_analysis.csv", index=False)
        pd.DataFrame(sim_rows).to_csv(out / "sim_throughput.csv", index=False)
        (out / "core_bench.json").write_text(json.dumps({"dag": dag_rows, "sim": sim_rows}, indent=2))
        console.print(f"results written to {out}/")

"""`orchestrator validate` and `orchestrator analyse`: check and describe a workflow file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..dag import analyse, dag_arrays
from ..loaders import load_workflow


def register(app: typer.Typer) -> None:
    console = Console()

    @app.command()
    def validate(path: Path = typer.Argument(..., help="Workflow file: YAML, JSON or WfCommons JSON (.gz ok)")):
        """Validate a workflow file and print its size; exit 2 with the problem named if it is invalid."""
        wf = load_workflow(path)
        console.print(f"[green]ok[/] {wf.name}: {len(wf.tasks)} tasks")

    @app.command(name="analyse")
    def analyse_cmd(path: Path = typer.Argument(..., help="Workflow file")):
        """Print levels, critical path, work and parallelism of a workflow (durations from the file)."""
        wf = load_workflow(path)
        dag = dag_arrays(wf)
        a = analyse(dag)
        table = Table(title=f"{wf.name}")
        table.add_column("property")
        table.add_column("value", justify="right")
        table.add_row("tasks", str(dag.n))
        table.add_row("edges", str(dag.src.size))
        table.add_row("levels", str(a.num_levels))
        table.add_row("max width (per level)", str(int(a.width_per_level().max())))
        table.add_row("critical path (s)", f"{a.critical_path_length:.1f}")
        table.add_row("critical path tasks", str(len(a.critical_path)))
        table.add_row("total work (cpu-s)", f"{a.total_work:.1f}")
        table.add_row("parallelism (work / critical path)",
                      f"{a.total_work / a.critical_path_length:.1f}" if a.critical_path_length else "-")
        console.print(table)

"""`orchestrator validate` and `orchestrator analyse`: check and describe a workflow file.

`validate` refuses what `orchestrator run` refuses before anything starts (`load_checked_workflow`): a file that
does not load as a valid workflow, or a `policy:` that names no scheduling policy.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..dag import analyse, dag_arrays
from ..errors import PolicyError
from ..loaders import load_workflow
from ..model import DEFAULT_LIMITS, MAX_TASKS_ENV, Workflow, with_max_tasks
from ..scheduling import check_policy

MAX_TASKS_HELP = (f"Largest workflow accepted, in tasks (default {DEFAULT_LIMITS.max_tasks:,}, "
                  f"or ${MAX_TASKS_ENV} when set)")


def max_tasks_option():
    return typer.Option(None, "--max-tasks", min=1, help=MAX_TASKS_HELP)


def check_workflow_policy(wf: Workflow, source: str | Path) -> None:
    """Refuse a workflow whose `policy:` names no scheduling policy: PolicyError naming the file, the workflow and
    the policies available (or why the plugin policies could not be loaded). Nothing is constructed."""
    if wf.policy:  # empty: the deployment's default, as for `run`
        try:
            check_policy(wf.policy)
        except PolicyError as exc:
            raise type(exc)(f"{source}: workflow '{wf.name}' asks for policy '{wf.policy}': {exc}") from None


def load_checked_workflow(path: str | Path) -> Workflow:
    """Load a workflow file and check its policy: everything `orchestrator run` refuses before it starts."""
    wf = load_workflow(path)
    check_workflow_policy(wf, path)
    return wf


def register(app: typer.Typer) -> None:
    console = Console()

    @app.command()
    def validate(path: Path = typer.Argument(..., help="Workflow file: YAML, JSON or WfCommons JSON (.gz ok)"),
                 max_tasks: int | None = max_tasks_option()):
        """Validate a workflow file and print its size; exit 2 with the problem named if it is invalid."""
        with_max_tasks(max_tasks)
        wf = load_checked_workflow(path)
        console.print(f"[green]ok[/] {escape(wf.name)}: {len(wf.tasks)} tasks", soft_wrap=True)

    @app.command(name="analyse")
    def analyse_cmd(path: Path = typer.Argument(..., help="Workflow file"),
                    max_tasks: int | None = max_tasks_option()):
        """Print levels, critical path, work and parallelism of a workflow (durations from the file)."""
        with_max_tasks(max_tasks)
        wf = load_workflow(path)
        dag = dag_arrays(wf)
        a = analyse(dag)
        table = Table(title=escape(wf.name))
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

"""`orchestrator conformance`: check that a scheduling policy decides alike in the simulator and in the runtime's
state machine, on workloads drawn from real traces (any registered policy, a learned one as well)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import OrchestratorError


def register(app: typer.Typer) -> None:
    @app.command()
    def conformance(
        policy: list[str] = typer.Option(None, "--policy", help="Policy to check (repeat); default: every one"),
        traces: Path = typer.Option(None, help="Folder of WfCommons files (default: the bundled traces)"),
        max_tasks: int = typer.Option(200, help="Only workflows with at most this many tasks"),
        jobs: int = typer.Option(8, help="Workflows per workload"),
        seeds: int = typer.Option(3, help="Workloads per policy (seeds 1..N), each also run with failures"),
        failure_p: float = typer.Option(0.05, help="Per-attempt failure probability of the failing runs"),
        out: Path = typer.Option(Path("results/conformance.json"), help="Where to write the results (JSON)"),
    ) -> None:
        """Run each policy through the simulator and the runtime's state machine (no Ray), feeding both the same
        events, and compare every decision (task, node, order), retry and promotion. Exit code 1 if any differ."""
        from ..resources import traces_dir
        from ..scheduling import available_policies, check_policy
        from ..sim import Cluster, TraceLibrary, poisson_workload
        from ..sim.cluster import GiB, NodeSpec
        from ..sim.conformance import ConformanceError, check_conformance
        from ..sim.workload import FailureModel

        console = Console()
        names = policy or available_policies()
        for name in names:
            check_policy(name)
        if not 0.0 <= failure_p <= 1.0:
            raise OrchestratorError(f"--failure-p {failure_p} must be in [0, 1]")
        if jobs < 1 or seeds < 1:
            raise OrchestratorError("--jobs and --seeds must be at least 1")
        library = TraceLibrary.from_dir(traces or traces_dir(), max_tasks=max_tasks)
        workflows = [e.workflow.model_copy(update={"tasks": [t.model_copy(update={"retries": 2})
                                                             for t in e.workflow.tasks]})
                     for e in library.entries]
        library = TraceLibrary.from_workflows(workflows)
        cluster = Cluster((NodeSpec("a", 8, 32 * GiB), NodeSpec("b", 8, 32 * GiB), NodeSpec("c", 4, 16 * GiB)))
        table = Table("policy", "workloads", "rounds", "decisions", "ahead", "failed attempts", "retries",
                      "failed jobs", "result")
        results, disagreements = [], 0
        for name in names:
            totals = {"workloads": 0, "rounds": 0, "decisions": 0, "ahead_decisions": 0, "failed_attempts": 0,
                      "retries": 0, "failed_jobs": 0}
            error = None
            for seed in range(1, seeds + 1):
                for failures in (None, FailureModel(probability=failure_p)):
                    workload = poisson_workload(library, cluster, load=0.9, num_jobs=jobs, seed=seed,
                                                failures=failures)
                    try:
                        report = check_conformance(name, workload, cluster, seed)
                    except ConformanceError as exc:
                        error = f"seed {seed}{' with failures' if failures else ''}: {exc}"
                        break
                    totals["workloads"] += 1
                    for key in ("rounds", "decisions", "ahead_decisions", "failed_attempts", "retries",
                                "failed_jobs"):
                        totals[key] += getattr(report, key)
                if error:
                    break
            disagreements += error is not None
            results.append({"policy": name, **totals, "agree": error is None, "difference": error})
            table.add_row(escape(name), *(str(totals[k]) for k in ("workloads", "rounds", "decisions",
                                                                      "ahead_decisions", "failed_attempts",
                                                                      "retries", "failed_jobs")),
                          "[green]same decisions[/]" if error is None else f"[red]{escape(error)}[/]")
        console.print(table)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"traces": str(traces or traces_dir()), "max_tasks": max_tasks, "jobs": jobs,
                                   "seeds": seeds, "failure_p": failure_p, "results": results}, indent=2))
        console.print(f"written to {out}")
        if disagreements:
            raise typer.Exit(1)

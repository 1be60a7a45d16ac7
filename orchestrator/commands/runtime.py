"""`orchestrator run | status | list | cancel | logs | resume`: run workflows on Ray and inspect their state."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import OrchestratorError, PolicyError

# Full tables when piped. Names, ids, errors and task output are user text: always printed literally (escaped when
# inside markup, or as Text; no :emoji: codes), so a task raising "closing tag [/x]" cannot break a command.
console = Console(width=None if sys.stdout.isatty() else 200, emoji=False)

ADDRESS = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address (default: a local Ray)")
DATA_DIR = typer.Option(None, "--data-dir", help="Folder of the embedded store (default .orchestrator or "
                                                  "$ORCHESTRATOR_DATA_DIR)")
DB_URL = typer.Option(None, "--db-url", envvar="ORCHESTRATOR_DB_URL",
                      help="Database URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in --data-dir)")


def _config(data_dir: Path | None, db_url: str | None, policy: str | None = None):
    from ..runtime.config import RuntimeConfig

    kwargs = {}
    if data_dir is not None:
        kwargs["data_dir"] = str(data_dir.resolve())
    if db_url:
        kwargs["db_url"] = db_url
    if policy:
        kwargs["default_policy"] = policy
    return RuntimeConfig(**kwargs)


def _e(value) -> str:
    """User or task text, escaped for a rich markup string."""
    return escape(str(value))


def _check_policies(policy: str | None, workflows, paths) -> None:
    """Unknown policies (--policy, or a workflow file's `policy:` where no --policy overrides it) are reported
    before Ray starts."""
    from ..scheduling import check_policy

    if policy:
        check_policy(policy)
        return
    for wf, path in zip(workflows, paths):
        if wf.policy:
            try:
                check_policy(wf.policy)
            except PolicyError as exc:
                raise PolicyError(f"{path}: workflow '{wf.name}' asks for policy '{wf.policy}': {exc}") from None


def _record_rejection(data_dir: Path | None, db_url: str | None, exc: Exception, path: Path) -> None:
    """Record a refused workflow file in the store, when the store can be opened (else only the error is shown)."""
    try:
        store = _open(data_dir, db_url)
        try:
            store.record_rejection(f"{type(exc).__name__}: {exc}", name=path.name, source=str(path))
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - e.g. the database is unreachable: the error itself is what matters
        pass


def _existing_cluster(address: str | None) -> bool:
    """True when `run` will use a Ray cluster that outlives it: an address (--address / RAY_ADDRESS) other than
    'local', or a Ray this process is already connected to."""
    if address and address.strip() not in ("", "local"):
        return True
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def register(app: typer.Typer) -> None:
    register_bench(app)

    @app.command()
    def run(
        paths: list[Path] = typer.Argument(..., help="Workflow files: YAML, JSON, or WfCommons JSON (replayed)"),
        policy: str = typer.Option(None, "--policy", "-p", help="Scheduling policy (default: the workflow's, "
                                                                  "else srpt-cp)"),
        time_scale: float = typer.Option(None, "--time-scale",
                                         help="For replayed traces: each task sleeps its recorded runtime x this"),
        address: str = ADDRESS,
        data_dir: Path = DATA_DIR,
        db_url: str = DB_URL,
        num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the local Ray started on demand"),
        detach: bool = typer.Option(False, "--detach", help="Submit and return without waiting"),
        timeout: float = typer.Option(None, "--timeout", help="Give up waiting after this many seconds"),
    ):
        """Run workflows on Ray with a live progress bar; exit 1 if any fails. A file refused before it becomes a
        run (unreadable, invalid, cyclic, too large, unknown policy) is recorded as a `workflow.rejected` event
        (`orchestrator list --rejected`)."""
        from ..loaders import load_workflow

        if time_scale is not None and time_scale <= 0:
            raise OrchestratorError(f"--time-scale must be > 0, got {time_scale}")
        workflows = []
        for path in paths:  # every file validated before anything starts
            try:
                workflows.append(load_workflow(path))
                _check_policies(policy, workflows[-1:], [path])
            except OrchestratorError as exc:
                _record_rejection(data_dir, db_url, exc, path)
                raise
        if detach and not _existing_cluster(address):
            raise OrchestratorError(
                "--detach needs an existing Ray cluster (--address HOST:PORT or RAY_ADDRESS): the local Ray started "
                "on demand ends with this command, and a detached run would be left unfinished (start one with "
                "`ray start --head`, or run without --detach)")
        config = _config(data_dir, db_url, policy)
        final = _submit_and_follow(workflows, config, address, num_cpus, policy, time_scale, detach, timeout)
        if final and any(p["status"] != "succeeded" for p in final.values()):
            raise typer.Exit(1)

    @app.command()
    def demo(data_dir: Path = DATA_DIR, num_cpus: int = typer.Option(None, "--num-cpus")):
        """The main job of `make run`: run the example ETL workflow and replay a real Montage trace on a local
        Ray, with durable state in SQLite, then show what was recorded."""
        from .. import resources
        from ..loaders import default_trace_dir, load_workflow

        root = resources.examples_dir().parent
        # The example's task functions live in the `examples` package (checkout or installed): make it importable.
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        etl = load_workflow(resources.file("examples", "etl.yaml"))
        trace = load_workflow(default_trace_dir() / "wfcommons/montage/montage-chameleon-2mass-01d-001.json.gz")
        config = _config(data_dir, None)
        console.print("[bold]1.[/] the example ETL workflow (Python and shell tasks, results passed between them)")
        final = _submit_and_follow([etl], config, None, num_cpus, None, None, False, 300)
        console.print(f"[bold]2.[/] a real Montage run ({len(trace.tasks)} tasks) replayed at 1/50 of its recorded "
                      "task runtimes")
        final.update(_submit_and_follow([trace], config, None, num_cpus, "srpt-cp", 0.02, False, 600))
        store = _open(data_dir, None)
        table = Table(title=Text(f"Recorded in {config.db_url or config.data_dir + '/state.db'}"))
        for col in ("run", "status", "tasks", "events", "wall (s)"):
            table.add_column(col)
        for rid, p in final.items():
            rec = store.get_workflow(rid)
            wall = (rec.finished_at or 0) - (rec.started_at or rec.created_at)
            table.add_row(Text(rid), p["status"], str(p["total"]), str(len(store.events(rid, limit=100_000))),
                          f"{wall:.2f}")
        console.print(table)
        etl_run = next(iter(final))
        console.print(f"next: orchestrator status {etl_run} --data-dir {config.data_dir} | orchestrator logs "
                      f"{etl_run} --task report --data-dir {config.data_dir} | orchestrator bench", markup=False)
        if any(p["status"] != "succeeded" for p in final.values()):
            raise typer.Exit(1)

    @app.command()
    def status(run_id: str = typer.Argument(..., help="Run id"), data_dir: Path = DATA_DIR, db_url: str = DB_URL):
        """Show a run's status and each task's state (read from the store)."""
        store = _open(data_dir, db_url)
        rec = store.get_workflow(run_id)
        console.print(f"[bold]{_e(rec.name)}[/] run [cyan]{_e(rec.run_id)}[/] policy={_e(rec.policy)} status=[bold]"
                      f"{rec.status.value}[/] created={_when(rec.created_at)} finished={_when(rec.finished_at)}",
                      highlight=False)
        if rec.error:
            console.print(Text(rec.error, style="red"))
        counts = store.task_counts(run_id)
        console.print("tasks: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), markup=False,
                      highlight=False)
        table = Table()
        for col in ("task", "status", "attempt", "node", "started", "finished", "error"):
            table.add_column(col)
        tasks = store.get_tasks(run_id)
        for t in tasks[:200]:
            table.add_row(Text(t.task_id), t.status.value, str(t.attempt), Text(t.node or "-"), _when(t.started_at),
                          _when(t.finished_at), Text(_last_line(t.error)[:80]))
        console.print(table)
        if len(tasks) > 200:
            console.print(f"... {len(tasks) - 200} more tasks")

    @app.command(name="list")
    def list_runs(status_filter: str = typer.Option(None, "--status", help="Only runs with this status"),
                  limit: int = typer.Option(50, "--limit"),
                  rejected: bool = typer.Option(False, "--rejected",
                                                help="Workflows refused before they became runs, newest first"),
                  data_dir: Path = DATA_DIR, db_url: str = DB_URL):
        """List workflow runs, newest first."""
        from ..states import WorkflowStatus

        store = _open(data_dir, db_url)
        if rejected:
            table = Table()
            for col in ("event", "when", "workflow", "source", "error"):
                table.add_column(col)
            for e in store.rejections(limit):
                p = e.payload
                table.add_row(str(e.id), _when(e.created_at), Text(p.get("name") or "-"), Text(p.get("source") or "-"),
                              Text(p.get("error") or ""))
            console.print(table)
            return
        try:
            wanted = WorkflowStatus(status_filter) if status_filter else None
        except ValueError:
            raise OrchestratorError(f"Unknown status '{status_filter}'; use one of "
                                    f"{', '.join(s.value for s in WorkflowStatus)}") from None
        table = Table()
        for col in ("run", "workflow", "policy", "status", "created", "finished"):
            table.add_column(col)
        for r in store.list_workflows(wanted, limit=limit):
            table.add_row(Text(r.run_id), Text(r.name), Text(r.policy or ""), r.status.value, _when(r.created_at),
                          _when(r.finished_at))
        console.print(table)

    @app.command()
    def cancel(run_id: str = typer.Argument(...), address: str = ADDRESS, data_dir: Path = DATA_DIR,
               db_url: str = DB_URL):
        """Cancel a run: running tasks are stopped, pending ones never start.

        Through the orchestrator actor when its Ray cluster is given (--address, RAY_ADDRESS) and reachable;
        otherwise as a cancel request in the store, which the orchestrator running the run carries out within a
        second (a local Ray started on demand by another command cannot be joined from here, and starting a new
        one would start a second orchestrator on the same store)."""
        from ..runtime.client import call, connect_ray, find_cluster, get_orchestrator

        store = _open(data_dir, db_url)
        rec = store.get_workflow(run_id)  # unknown run -> clear error
        if rec.status.terminal:
            console.print(f"run {run_id} already {rec.status.value}", markup=False, highlight=False)
            return
        cluster = find_cluster(address)
        handle = None
        if cluster is not None:
            try:
                connect_ray(cluster)
                handle = get_orchestrator(_config(data_dir, db_url), create=False)
            except OrchestratorError as exc:  # unreachable, or no orchestrator there: ask through the store
                console.print(f"(not through {cluster}: {exc})", markup=False, highlight=False)
                handle = None
        if handle is not None:
            call(handle.resume.remote(run_id))
            ok = call(handle.cancel.remote(run_id))
            console.print(f"run {run_id}: {'cancelled' if ok else 'not active'}", markup=False, highlight=False)
            return
        store.request_cancel(run_id)
        console.print(f"run {run_id}: cancel requested; the orchestrator running it stops it within a second (if "
                      "none runs it now, the next one to resume it does)", markup=False, highlight=False)

    @app.command()
    def stop(address: str = ADDRESS):
        """Stop the orchestrator of a Ray cluster (--address, RAY_ADDRESS) cleanly: it writes what it holds, its
        event sinks drain, it gives its lease on the store back; runs not finished stay in the store and the next
        orchestrator (`orchestrator resume`) carries them on. Running tasks are stopped with it."""
        import ray

        from ..runtime.client import call, connect_ray, find_cluster
        from ..runtime.config import ACTOR_NAME, NAMESPACE

        cluster = find_cluster(address)
        if cluster is None:
            raise OrchestratorError("No Ray cluster to stop an orchestrator on: give its address (--address or "
                                    "RAY_ADDRESS); an orchestrator on a local Ray started by another command stops "
                                    "with that command")
        connect_ray(cluster)
        try:
            handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        except ValueError:
            console.print(f"no orchestrator runs on {cluster}", markup=False, highlight=False)
            return
        info = call(handle.ping.remote())
        call(handle.shutdown.remote(), timeout=60)
        ray.kill(handle)
        console.print(f"stopped the orchestrator on {cluster} (store {info.get('db')}; {info.get('active_runs', 0)} "
                      "unfinished run(s) stay in the store for `orchestrator resume`)", markup=False, highlight=False)

    @app.command()
    def logs(run_id: str = typer.Argument(...), task: str = typer.Option(None, "--task", "-t",
                                                                         help="Show this task's output"),
             as_json: bool = typer.Option(False, "--json", help="JSON lines"), data_dir: Path = DATA_DIR,
             db_url: str = DB_URL):
        """Show a run's events, or one task's captured stdout/stderr per attempt."""
        store = _open(data_dir, db_url)
        store.get_workflow(run_id)
        if task:
            execs = store.executions(run_id, task)
            if not execs:
                console.print(Text(f"task '{task}' of run {run_id} has no recorded attempt"))
            for e in execs:
                if as_json:
                    sys.stdout.write(json.dumps({"run_id": run_id, "task_id": task, "attempt": e.attempt,
                                                 "status": e.status, "stdout": e.stdout, "stderr": e.stderr,
                                                 "error": e.error}) + "\n")
                    continue
                console.rule(Text(f"{task} attempt {e.attempt}: {e.status} on {e.node} ({(e.duration or 0):.3f} s)"))
                for header, text, style in (("stdout", e.stdout, "bold"), ("stderr", e.stderr, "bold"),
                                            ("error", e.error, "red")):
                    if text:
                        console.print(Text(header, style=style))
                        console.print(Text(text), highlight=False)
            return
        for ev in store.events(run_id, limit=100_000):
            if as_json:
                sys.stdout.write(json.dumps({"id": ev.id, "ts": ev.created_at, "type": ev.type, "run_id": ev.run_id,
                                             "task_id": ev.task_id, **{k: v for k, v in ev.payload.items()
                                                                       if k not in ("run_id", "task_id")}}) + "\n")
            else:
                extra = {k: v for k, v in ev.payload.items() if k not in ("run_id", "task_id") and v is not None}
                console.print(f"{_when(ev.created_at)} {ev.type:<20} {ev.task_id or '':<30} "
                              f"{json.dumps(extra)[:120]}", markup=False, highlight=False)

    @app.command()
    def resume(run_id: str = typer.Argument(None, help="One run (default: every unfinished run)"),
               address: str = ADDRESS, data_dir: Path = DATA_DIR, db_url: str = DB_URL,
               wait: bool = typer.Option(True, "--wait/--no-wait")):
        """Start the orchestrator if needed and resume unfinished runs from the store."""
        from ..runtime.client import call, connect_ray, get_orchestrator, wait_for

        config = _config(data_dir, db_url)
        connect_ray(address)
        handle = get_orchestrator(config)
        resumed = call(handle.resume.remote(run_id))
        store = _open(data_dir, db_url)
        active = [run_id] if run_id else store.unfinished_workflows()
        console.print(_resume_summary(handle, run_id, resumed, active), markup=False, highlight=False)
        if wait and active:
            final = wait_for(handle, active)
            for rid, p in final.items():
                console.print(f"run {rid}: {p['status']}", markup=False, highlight=False)
            if any(p["status"] != "succeeded" for p in final.values()):
                raise typer.Exit(1)


def _submit_and_follow(workflows, config, address, num_cpus, policy, time_scale, detach, timeout) -> dict:
    """Submit workflows to the orchestrator (starting Ray and the actor if needed) and show a progress bar each."""
    from ..runtime.client import (
        call,
        check_store,
        connect_ray,
        get_orchestrator,
        refuse_other_store,
        wait_for,
    )

    if _existing_cluster(address):
        # An orchestrator already running there on another store than the one asked for is refused before the
        # asked-for store is even opened: nothing is recorded anywhere.
        connect_ray(address, num_cpus=num_cpus)
        refuse_other_store(config)
    check_store(config)  # a bad URL or an unreachable database fails here, clearly
    connect_ray(address, num_cpus=num_cpus)
    handle = get_orchestrator(config)
    # An error in the actor (a policy it does not know, a task too large for every node) comes back as its message.
    run_ids = call(handle.submit_many.remote(list(workflows), policy, time_scale))
    for wf, rid in zip(workflows, run_ids):
        console.print(f"submitted [bold]{_e(wf.name)}[/] as run [cyan]{_e(rid)}[/] ({len(wf.tasks)} tasks)",
                      highlight=False)
    if detach:
        return {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console) as progress:
        bars = {rid: progress.add_task(_e(rid), total=len(wf.tasks), detail="")
                for wf, rid in zip(workflows, run_ids)}

        def update(p: dict) -> None:
            c = p["counts"]
            done = sum(c.get(k, 0) for k in ("succeeded", "failed", "skipped", "cancelled"))
            detail = " ".join(f"{k}={v}" for k, v in sorted(c.items()) if k != "pending" and v)
            progress.update(bars[p["run_id"]], completed=done, detail=_e(f"{p['status']} {detail}"))

        final = wait_for(handle, run_ids, on_progress=update, timeout=timeout)
    for rid in run_ids:
        p = final[rid]
        colour = "green" if p["status"] == "succeeded" else "red"
        console.print(f"run [cyan]{_e(rid)}[/]: [{colour}]{_e(p['status'])}[/]", highlight=False)
        if p["status"] != "succeeded":
            _print_failures(config, rid)
    return final


def _open(data_dir, db_url):
    from ..runtime.client import open_store

    return open_store(db_url, data_dir)


def _print_failures(config, run_id: str) -> None:
    from ..runtime.client import open_store

    store = open_store(config.db_url, config.data_dir)
    rec = store.get_workflow(run_id)
    if rec.error:
        console.print(Text("  " + rec.error, style="red"), soft_wrap=True)
    for t in store.get_tasks(run_id):
        if t.status.value in ("failed",):
            console.print(f"  task [bold]{_e(t.task_id)}[/] failed after {t.attempt} attempt(s): "
                          f"{_e(_last_line(t.error))}", highlight=False, soft_wrap=True)
    console.print(f"  details: orchestrator status {run_id}; orchestrator logs {run_id} --task TASK", markup=False,
                  highlight=False)


def _last_line(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""


def _resume_summary(handle, run_id: str | None, resumed: list[str], active: list[str]) -> str:
    """What `resume` did, truthfully: an orchestrator started by this command resumed every unfinished run by itself
    as it started (so its resume call finds nothing left to resume)."""
    from ..runtime.client import resumed_at_start

    at_start = [r for r in (resumed_at_start(handle) or []) if r not in resumed and (not run_id or r == run_id)]
    msg = f"resumed {len(resumed) + len(at_start)} run(s)"
    if at_start:
        msg += f" ({len(at_start)} by the orchestrator as it started)"
    msg += f"; {len(active)} unfinished"
    running = [r for r in active if r not in resumed and r not in at_start]
    if running:
        msg += f" ({len(running)} already running in the orchestrator)"
    return msg


def register_bench(app: typer.Typer) -> None:
    @app.command(name="bench-runtime")
    def bench_runtime(
        what: str = typer.Option("overhead,many,latency,replay", "--what",
                                 help="Comma list: overhead, many (200 small workflows at once), latency, replay"),
        tasks: int = typer.Option(1000, "--tasks", help="Tasks in the overhead DAG"),
        task_ms: float = typer.Option(10.0, "--task-ms", help="Duration of each overhead task (ms)"),
        slots: int = typer.Option(8, "--slots", help="CPUs of the local Ray cluster"),
        repeats: int = typer.Option(5, "--repeats", help="Overhead runs of each kind (best and median reported)"),
        trace: Path = typer.Option(None, "--trace", help="WfCommons file to replay (default: a bundled montage run)"),
        time_scale: float = typer.Option(0.25, "--time-scale"),
        policy: str = typer.Option("srpt-cp", "--policy"),
        latency_policies: str = typer.Option(None, "--latency-policies",
                                             help="Comma list of policies for the latency benchmark (default: every "
                                                  "heuristic, and learned)"),
        db_url: str = DB_URL,
        out: Path = typer.Option(Path("results/runtime"), "--out"),
    ):
        """Measure orchestration overhead vs raw Ray, decision latency, and trace replay vs the simulator."""
        import ray

        from ..loaders import default_trace_dir
        from ..runtime import benchmark as rb

        wanted = {w.strip() for w in what.split(",") if w.strip()}
        unknown = wanted - {"overhead", "many", "latency", "replay"}
        if unknown:
            raise OrchestratorError(f"Unknown benchmark(s) {sorted(unknown)}; use overhead, many, latency, replay")
        out.mkdir(parents=True, exist_ok=True)
        results: dict[str, list[dict]] = {}
        if "latency" in wanted:
            from ..scheduling import HEURISTICS, check_policy

            names = ([p.strip() for p in latency_policies.split(",") if p.strip()] if latency_policies
                     else [*HEURISTICS, "learned"])
            for name in names:
                check_policy(name)
            rows = rb.as_rows(rb.measure_decision_latency(names))
            results["latency"] = rows
            _table("Scheduling-decision latency (1,000+ ready tasks, in-actor code path)", rows,
                   ["policy", "ready_tasks", "decisions", "p50_us", "p99_us", "mean_us"])
        if wanted & {"overhead", "many", "replay"}:
            # A fresh local cluster of exactly `slots` cpus, even if another Ray runs on this machine.
            ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False,
                     namespace="orchestrator-bench")
        if "overhead" in wanted:
            r = rb.measure_overhead(tasks, task_ms / 1000.0, slots, repeats, db_url=db_url)
            results["overhead"] = rb.as_rows([r])
            _table(f"Overhead: {tasks}-task DAG of {task_ms:g} ms tasks on {slots} slots (best and median of {repeats})",
                   results["overhead"], ["ideal_s", "raw_ray_s", "orchestrated_s", "ratio", "raw_median_s",
                                         "orchestrated_median_s", "ratio_of_medians", "events_recorded",
                                         "events_expected", "executions_recorded", "store"])
        if "many" in wanted:
            r = rb.measure_many_runs(runs=200, tasks_per_run=max(1, tasks // 200), task_seconds=task_ms / 1000.0,
                                     slots=slots, repeats=max(1, min(repeats, 3)), db_url=db_url)
            results["many"] = rb.as_rows([r])
            _table(f"Many workflows at once: {r.runs} chains of {r.tasks_per_run} tasks of {task_ms:g} ms on {slots} "
                   "slots (medians)", results["many"],
                   ["ideal_s", "raw_ray_median_s", "submit_many_median_s", "submit_each_median_s", "ratio_submit_many",
                    "ratio_submit_each", "events_recorded", "events_expected", "store"])
        if "replay" in wanted:
            trace = trace or default_trace_dir() / "wfcommons/montage/montage-chameleon-2mass-01d-001.json.gz"
            r = rb.measure_replay(trace, time_scale, policy, db_url=db_url)
            results["replay"] = rb.as_rows([r])
            _table("Trace replay on Ray vs the simulator", results["replay"],
                   ["trace", "tasks", "policy", "time_scale", "slots", "ray_makespan_s", "simulated_makespan_s",
                    "error", "dispatch_latency_ms_p50", "dispatch_latency_ms_p95"])
        (out / "runtime_bench.json").write_text(json.dumps(results, indent=2))
        import pandas as pd

        for name, rows in results.items():
            pd.DataFrame(rows).to_csv(out / f"{name}.csv", index=False)
        console.print(f"results written to {out}/")


def _table(title: str, rows: list[dict], cols: list[str]) -> None:
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[Text(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])) for c in cols])
    console.print(table)

"""`orchestrator analyze` (completion time, bottlenecks and parallel plan of a workflow on a cluster, before or
while it runs) and `orchestrator optimize` (changes measured in the simulator; `--apply` writes the changed workflow
and records the before/after figures in the store)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import InvalidError, OrchestratorError
from ..sim.cluster import GiB, Cluster, NodeSpec

console = Console(width=None if sys.stdout.isatty() else 200, emoji=False)

SPARK = "▁▂▃▄▅▆▇█"


class ClusterSpecError(InvalidError):
    """A --cluster / --nodes description that does not describe a cluster."""


# ------------------------------------------------------------------------------------------------ the cluster

def parse_cluster(spec: str | None, nodes: int | None, node_cpus: float | None, node_memory: float | None,
                  node_types: Path | None = None) -> Cluster | None:
    """The cluster the options describe, or None (none given):

    - `--cluster 4xm5.xlarge,2xr5.2xlarge`: counts of node types from configs/node_types.yaml (`--node-types`);
    - `--cluster 4x8:32`: 4 nodes of 8 cpus and 32 GiB (`x8:32:1` adds a gpu);
    - `--cluster nodes.yaml`: a file with `nodes: [{cpus, memory_gib, gpus, count, name}]`;
    - `--nodes N [--node-cpus C] [--node-memory GiB]`: N alike nodes (4 cpus and 16 GiB unless given).
    """
    homogeneous = nodes is not None or node_cpus is not None or node_memory is not None
    if spec and homogeneous:
        raise ClusterSpecError("give either --cluster or --nodes/--node-cpus/--node-memory, not both")
    if homogeneous:
        if nodes is not None and nodes < 1:
            raise ClusterSpecError(f"--nodes {nodes}: a cluster needs at least one node")
        cpus = 4.0 if node_cpus is None else node_cpus
        memory = 16.0 if node_memory is None else node_memory
        if not (cpus > 0 and memory > 0 and math.isfinite(cpus) and math.isfinite(memory)):
            raise ClusterSpecError(f"--node-cpus {cpus:g} --node-memory {memory:g}: both must be > 0")
        return Cluster.homogeneous(nodes or 1, cpus=cpus, memory_gib=memory)
    if not spec:
        return None
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        return _cluster_file(path)
    out: list[NodeSpec] = []
    types = None
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = re.match(r"^(\d+)\s*[x*]\s*(\S.*)$", part)
        count, kind = (int(match.group(1)), match.group(2)) if match else (1, part)
        if count < 1 or count > 100_000:
            raise ClusterSpecError(f"--cluster '{part}': the node count must be between 1 and 100000")
        if ":" in kind:
            fields = kind.split(":")
            try:
                cpus, mem, *rest = (float(f) for f in fields)
                gpus = rest[0] if rest else 0.0
            except ValueError:
                raise ClusterSpecError(f"--cluster '{part}': give COUNTxCPUS:MEMORY_GIB[:GPUS], e.g. 4x8:32") from None
            if len(fields) > 3 or not (cpus > 0 and mem > 0 and gpus >= 0):
                raise ClusterSpecError(f"--cluster '{part}': give COUNTxCPUS:MEMORY_GIB[:GPUS] with cpus and "
                                       "memory > 0, e.g. 4x8:32")
            name, kind_name = f"{cpus:g}cpu-{mem:g}gib", "custom"
        else:
            if types is None:
                from ..prediction.node_types import load_node_types

                types = {t.name: t for t in load_node_types(node_types)}
            t = types.get(kind)
            if t is None:
                raise ClusterSpecError(f"--cluster '{part}': unknown node type '{kind}'; known: "
                                       f"{', '.join(sorted(types))} (or give COUNTxCPUS:MEMORY_GIB, e.g. 4x8:32)")
            cpus, mem, gpus, name, kind_name = t.cpus, t.memory_gib, t.gpus, t.name, t.name
        out.extend(NodeSpec(f"{name}-{len(out) + i}", float(cpus), float(mem) * GiB, float(gpus), kind_name)
                   for i in range(count))
    if not out:
        raise ClusterSpecError(f"--cluster '{spec}' describes no node")
    return Cluster(tuple(out))


def _cluster_file(path: Path) -> Cluster:
    if not path.is_file():
        raise ClusterSpecError(f"--cluster {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ClusterSpecError(f"{path}: not a YAML/JSON cluster file ({exc})") from None
    items = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ClusterSpecError(f"{path}: give `nodes:` as a list of {{cpus, memory_gib, gpus, count}}")
    out: list[NodeSpec] = []
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise ClusterSpecError(f"{path}: node #{k + 1} must be a mapping")
        try:
            cpus = float(item["cpus"])
            mem = float(item.get("memory_gib", item.get("memory", 0)))
            gpus = float(item.get("gpus", 0))
            count = int(item.get("count", 1))
        except (KeyError, TypeError, ValueError):
            raise ClusterSpecError(f"{path}: node #{k + 1} needs numbers cpus and memory_gib "
                                   "(optional gpus, count)") from None
        if not (cpus > 0 and mem > 0 and gpus >= 0 and 1 <= count <= 100_000):
            raise ClusterSpecError(f"{path}: node #{k + 1} has cpus={cpus:g}, memory_gib={mem:g}, count={count}: "
                                   "cpus and memory must be > 0, count 1-100000")
        name = str(item.get("name", f"node{k}"))
        out.extend(NodeSpec(f"{name}-{i}" if count > 1 else name, cpus, mem * GiB, gpus) for i in range(count))
    return Cluster(tuple(out))


def _cluster_options():
    return dict(
        cluster=typer.Option(None, "--cluster", help="Nodes: 4xm5.xlarge,2xr5.2xlarge (types from "
                                                      "configs/node_types.yaml), 4x8:32 (cpus:GiB), or a YAML file "
                                                      "with `nodes:`. Default: the tight cluster (see output)"),
        nodes=typer.Option(None, "--nodes", help="N alike nodes (with --node-cpus, --node-memory)"),
        node_cpus=typer.Option(None, "--node-cpus", help="Cpus per node with --nodes (default 4)"),
        node_memory=typer.Option(None, "--node-memory", help="GiB per node with --nodes (default 16)"),
    )


def _history(path: Path | None):
    if path is None:
        return None
    from ..loaders import load_traces
    from ..optimization.durations import DurationHistory

    if not path.exists():
        raise InvalidError(f"--history {path}: no such file or folder")
    return DurationHistory.from_workflows(load_traces(path) if path.is_dir() else [_load(path)])


def _load(path: Path):
    from ..loaders import load_workflow

    return load_workflow(path)


def _cluster_line(report_cluster: str, source: str) -> str:
    if source == "default":
        return (f"{report_cluster} - no cluster given: the tight cluster (4-cpu nodes running half the workflow's "
                "average parallelism, as the optimizer's ground truth); give --cluster or --nodes")
    if source == "store":
        return f"{report_cluster} - the nodes the store sampled during the run"
    return report_cluster


def _s(x: float | None) -> str:
    from ..optimization.analysis import seconds_text

    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else seconds_text(x)


def _spark(rows: list[list[float]], width: int = 60) -> str:
    if not rows:
        return ""
    values = [r[1] for r in rows]
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step):max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    top = max(values) or 1
    return "".join(SPARK[min(int(v / top * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] for v in values)


# ------------------------------------------------------------------------------------------------ printing

def print_report(report) -> None:
    from ..optimization.analysis import seconds_text

    live = f", {report.tasks_left} left" if report.live else ""
    console.print(Text.assemble(("analysis of ", ""), (report.workflow, "bold"),
                                f": {report.tasks} tasks{live}, policy {report.policy}, method {report.method}"))
    console.print(Text("cluster: " + _cluster_line(report.cluster, report.cluster_source)), soft_wrap=True)
    if report.live:
        lv = report.live
        console.print(Text(f"live: {lv['done']} done, {lv['running']} running, {lv['pending']} pending; "
                           "times are the remaining time from now"))
    m = report.makespan
    t = Table(title="Completion time" + (" (remaining)" if report.live else ""), title_justify="left")
    for col in ("expected", "P50", "P90", "± (std. error)", "critical path (unlimited nodes, mean durations)",
                "unlimited nodes: mean / P90"):
        t.add_column(col, justify="right")
    t.add_row(_s(m.mean), _s(m.p50), _s(m.p90), _s(m.stderr), _s(m.critical_path),
              f"{_s(m.unlimited_mean)} / {_s(m.unlimited_p90)}")
    console.print(t)
    for title, rows in (("Bottleneck tasks: expected makespan saved if each ran 30% faster", report.task_bottlenecks),
                        ("Bottleneck categories (every task of the category 30% faster)",
                         report.category_bottlenecks)):
        if not rows:
            continue
        t = Table(title=title, title_justify="left")
        for col, j in (("task" if rows[0].kind == "task" else "category", "left"), ("gain", "right"),
                       ("%", "right"), ("±", "right"), ("why", "left")):
            t.add_column(col, justify=j)
        for b in rows:
            t.add_row(Text(b.name if b.kind == "task" else f"{b.name} ({b.tasks})"), _s(b.gain), f"{b.gain_pct:.1f}",
                      _s(b.stderr) if b.measured else "est.", Text("; ".join(b.reasons)))
        console.print(t)
    if report.saturation:
        console.print(Text("resources: " + report.saturation), soft_wrap=True)
    p = report.plan
    console.print(Text.assemble(("Parallel plan", "bold"),
                                f": {p.stages} stages, widths {_widths(p.width_per_stage)}; peak {p.peak_width} "
                                f"tasks at once on this cluster, average parallelism {p.average_parallelism:.1f}"),
                  soft_wrap=True)
    if p.width_over_time:
        console.print(Text(f"tasks running over time (mean durations, {seconds_text(p.mean_run_makespan)}): "
                           f"{_spark(p.width_over_time)}"), soft_wrap=True)
    if p.nodes_curve:
        t = Table(title=f"Expected makespan by node count (the same {p.curve_samples} draws for each)",
                  title_justify="left")
        t.add_column("nodes", justify="right")
        t.add_column("expected", justify="right")
        t.add_column("P90", justify="right")
        for pt in p.nodes_curve:
            mark = " (given)" if pt.nodes == report.nodes else ""
            t.add_row(f"{pt.nodes}{mark}", _s(pt.mean), _s(pt.p90))
        console.print(t)
    console.print(Text("nodes: " + p.enough_note), soft_wrap=True)
    if p.deadline_note:
        console.print(Text("deadline: " + p.deadline_note), soft_wrap=True)
    for note in report.notes:
        console.print(Text("note: " + note), soft_wrap=True)
    console.print(Text(f"method: {report.method_note}", style="dim"), soft_wrap=True)
    console.print(Text(f"analysed in {report.seconds * 1000:.0f} ms (kernel load/compile "
                       f"{report.compile_seconds:.2f} s, not counted)", style="dim"))


def _widths(widths: list[int], show: int = 12) -> str:
    text = ", ".join(str(w) for w in widths[:show])
    return text + (f", ... ({len(widths)} stages)" if len(widths) > show else "")


def print_recommendations(recs) -> None:
    console.print(Text.assemble(("optimize ", ""), (recs.workflow, "bold"),
                                f": expected {_s(recs.mean)}, P90 {_s(recs.p90)} on {recs.cluster}, policy "
                                f"{recs.policy} ({recs.samples} samples, common random numbers)"), soft_wrap=True)
    if not recs.offered:
        console.print(Text("no change measured clearly better than the workflow as it is "
                           f"({len(recs.rejected)} candidates tried)"))
        return
    t = Table(title="Recommendations, each measured in the simulator", title_justify="left")
    for col, j in (("#", "right"), ("kind", "left"), ("change", "left"), ("expected", "right"), ("gain", "right"),
                   ("%", "right"), ("P90", "right")):
        t.add_column(col, justify=j)
    for k, r in enumerate(recs.offered, 1):
        t.add_row(str(k), r.kind, Text(r.description), f"{_s(r.mean_before)} -> {_s(r.mean_after)}",
                  f"{_s(r.gain)} ± {_s(r.stderr)}", f"{r.gain_pct:.1f}", f"{_s(r.p90_before)} -> {_s(r.p90_after)}")
    console.print(t)
    if recs.rejected:
        console.print(Text(f"{len(recs.rejected)} other candidate(s) measured and not offered: no clear gain",
                           style="dim"))


# ------------------------------------------------------------------------------------------------ commands

def _open_store(db_url: str | None, data_dir: Path | None):
    from ..runtime.client import open_store

    return open_store(db_url, data_dir)


def optimized_path(path: Path) -> Path:
    """Where `optimize --apply` writes by default: beside the input, `NAME.optimized.yaml`."""
    stem = re.sub(r"(\.(json|ya?ml))?(\.gz)?$", "", path.name, flags=re.IGNORECASE) or path.name
    return path.with_name(f"{stem}.optimized.yaml")


def write_workflow(wf, out: Path) -> None:
    data = wf.model_dump(mode="json", exclude_defaults=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def register(app: typer.Typer) -> None:
    opts = _cluster_options()

    @app.command("analyze")
    def analyze_cmd(
        path: Path = typer.Argument(None, help="Workflow file (YAML, JSON or WfCommons); or --run"),
        run: str = typer.Option(None, "--run", help="Analyse a run recorded in the store, from now"),
        cluster: str = opts["cluster"], nodes: int = opts["nodes"], node_cpus: float = opts["node_cpus"],
        node_memory: float = opts["node_memory"],
        policy: str = typer.Option(None, "--policy", help="fifo, job-fifo, srpt-cp or heft (default: the "
                                                          "workflow's, else srpt-cp)"),
        samples: int = typer.Option(2000, "--samples", min=1, help="Most Monte Carlo samples (fewer when the time "
                                                                   "budget is short)"),
        budget: float = typer.Option(None, "--budget", help="Seconds to aim at (default 0.17; 0: no budget, all "
                                                            "--samples)"),
        method: str = typer.Option("mc", "--method", help="mc (Monte Carlo) or gnn (the trained model)"),
        deadline: float = typer.Option(None, "--deadline", help="Seconds: the node count whose P90 meets it"),
        history: Path = typer.Option(None, "--history", help="Folder (or file) of earlier runs: runtimes of the "
                                                             "categories without a declared duration"),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json", help="The report as JSON on stdout"),
        per_task: bool = typer.Option(False, "--per-task", help="With --json: every task's gain, criticality, wait"),
        db_url: str = typer.Option(None, "--db-url", envvar="ORCHESTRATOR_DB_URL", help="Store URL (with --run)"),
        data_dir: Path = typer.Option(None, "--data-dir", help="Folder of the embedded store (with --run)"),
        node_types: Path = typer.Option(None, "--node-types", help="Node types for --cluster (default "
                                                                   "configs/node_types.yaml)"),
    ):
        """Completion time as a distribution, bottlenecks with their reasons, and the parallel plan of a workflow
        on a cluster; with --run, of a running workflow from now (read from the store)."""
        from ..optimization.analysis import DEFAULT_BUDGET_S, analyze, live_run

        if (path is None) == (run is None):
            raise InvalidError("give a workflow file or --run RUN_ID (one of them)")
        hist = _history(history)
        chosen = parse_cluster(cluster, nodes, node_cpus, node_memory, node_types)
        status = elapsed = None
        source = None
        if run is not None:
            store = _open_store(db_url, data_dir)
            try:
                live = live_run(store, run)
            finally:
                store.close()
            wf = live.workflow
            status, elapsed = live.status, live.elapsed
            hist = live.history_with(hist)
            if chosen is None and live.cluster is not None:
                chosen, source = live.cluster, "store"
        else:
            wf = _load(path)
        report = analyze(wf, chosen, history=hist, policy=policy, samples=samples, method=method, deadline=deadline,
                         status=status, elapsed=elapsed, seed=seed,
                         budget=DEFAULT_BUDGET_S if budget is None else (budget or None))
        if source:
            report.cluster_source = source
        if as_json:
            sys.stdout.write(json.dumps(report.to_dict(per_task=per_task)) + "\n")
        else:
            print_report(report)

    @app.command("optimize")
    def optimize_cmd(
        path: Path = typer.Argument(..., help="Workflow file (YAML, JSON or WfCommons)"),
        cluster: str = opts["cluster"], nodes: int = opts["nodes"], node_cpus: float = opts["node_cpus"],
        node_memory: float = opts["node_memory"],
        policy: str = typer.Option(None, "--policy", help="fifo, job-fifo, srpt-cp or heft"),
        samples: int = typer.Option(400, "--samples", min=2, help="Draws each candidate is measured on"),
        history: Path = typer.Option(None, "--history", help="Folder (or file) of earlier runs"),
        task_overhead: float = typer.Option(0.0, "--task-overhead", min=0.0,
                                            help="Seconds the runtime adds to every task (makes fusing pay)"),
        apply: bool = typer.Option(False, "--apply", help="Write the changed workflow and record the change"),
        pick: int = typer.Option(1, "--pick", min=1, help="With --apply: which recommendation (1 = the best)"),
        out: Path = typer.Option(None, "--out", help="With --apply: where to write (default NAME.optimized.yaml "
                                                     "beside the input)"),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json", help="The recommendations as JSON on stdout"),
        db_url: str = typer.Option(None, "--db-url", envvar="ORCHESTRATOR_DB_URL", help="Store URL for --apply"),
        data_dir: Path = typer.Option(None, "--data-dir", help="Folder of the embedded store"),
        node_types: Path = typer.Option(None, "--node-types", help="Node types for --cluster"),
    ):
        """Changes that make the workflow finish sooner, each measured in the simulator (a change that does not
        clearly help is never offered); --apply writes the changed workflow and records before/after figures."""
        from ..optimization.analysis import _jsonable, analyze, describe_cluster
        from ..optimization.recommend import recommend, verify

        wf = _load(path)
        hist = _history(history)
        chosen = parse_cluster(cluster, nodes, node_cpus, node_memory, node_types)
        report = analyze(wf, chosen, history=hist, policy=policy, samples=1000, seed=seed, budget=1.0)
        recs = recommend(wf, chosen, history=hist, policy=policy, samples=samples, seed=seed, report=report,
                         task_overhead=task_overhead)
        result = _jsonable(recs.to_dict())
        if not as_json:
            if chosen is None:
                console.print(Text("cluster: " + _cluster_line(report.cluster, "default")), soft_wrap=True)
            print_recommendations(recs)
        if apply:
            if not recs.offered:
                raise OrchestratorError(f"nothing to apply: no change to '{wf.name}' measured clearly better "
                                        f"({len(recs.rejected)} candidates tried)")
            if pick > len(recs.offered):
                raise InvalidError(f"--pick {pick}: there are {len(recs.offered)} recommendation(s)")
            rec = recs.offered[pick - 1]
            changed = rec.apply(wf)
            target = out or optimized_path(path)
            write_workflow(changed, target)
            checked = verify(rec, wf, chosen, history=hist, policy=policy, samples=samples, seed=seed + 1,
                             task_overhead=task_overhead)
            store = _open_store(db_url, data_dir)
            try:
                params = _jsonable({**rec.to_dict(), "source": str(path), "written": str(target), "seed": seed,
                                    "verified": checked.to_dict()})
                params.pop("description", None)
                oid = store.record_optimization(rec.kind, rec.description, params=params, predicted_gain=rec.gain,
                                                workflow=wf.name)
                store.verify_optimization(oid, checked.gain)
                where = store.url
            finally:
                store.close()
            result["applied"] = _jsonable({"id": oid, "kind": rec.kind, "written": str(target),
                                           "predicted_gain": rec.gain, "verified_gain": checked.gain,
                                           "verified_stderr": checked.stderr, "store": where})
            if not as_json:
                console.print(Text(f"applied #{pick} ({rec.kind}): wrote {target}; recorded optimization {oid} in "
                                   f"{where}: predicted gain {_s(rec.gain)}, re-measured on fresh draws "
                                   f"{_s(checked.gain)} ± {_s(checked.stderr)}"), soft_wrap=True)
                if rec.kind in ("add-nodes", "more-memory"):
                    after = describe_cluster(rec.cluster_after)
                    console.print(Text(f"this change is to the cluster: run on {after}; the workflow written is "
                                       "unchanged but for its metadata"), soft_wrap=True)
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")

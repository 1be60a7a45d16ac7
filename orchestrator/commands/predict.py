"""`orchestrator eval predictor|forecaster` (held-out evaluation beside baselines, results to --out) and
`orchestrator predict tasks|capacity|cost` (use the trained models)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 150)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(title: str, rows: list[dict], columns: list[tuple[str, str]], digits: int = 3) -> Table:
    t = Table(title=title, title_justify="left")
    for key, header in columns:
        t.add_column(header, justify="left" if key in ("eval", "method", "family", "series", "requests") else "right")
    for r in rows:
        t.add_row(*(_fmt(r.get(k), digits) for k, _ in columns))
    return t


def _write(out: Path, name: str, rows: list[dict]) -> Path:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def register(app: typer.Typer) -> None:
    evaluate = typer.Typer(help="Evaluate learned models on held-out data, beside their baselines.",
                           no_args_is_help=True)
    predict = typer.Typer(help="Predict task resources, plan capacity, choose the cheapest cluster.",
                          no_args_is_help=True)
    app.add_typer(evaluate, name="eval")
    app.add_typer(predict, name="predict")

    @evaluate.command("predictor")
    def eval_predictor(
        traces: Path = typer.Option(None, help="Folder of WfCommons traces (default: the bundled data/traces)"),
        out: Path = typer.Option(Path("results/prediction"), help="Folder for the CSV/JSON results"),
        config: Path = typer.Option(None, help="Prediction config (default configs/prediction.yaml)"),
        lofo: bool = typer.Option(True, help="Also hold out each family entirely (trains one model per family)"),
        rightsizing: bool = typer.Option(True, help="Also replay right-sized requests in the simulator"),
        epochs: int = typer.Option(None, help="Override task_model.epochs"),
        write_selection_: bool = typer.Option(
            False, "--write-selection",
            help="Make the winners the runtime's choice: write them to models/predictor/selection.json "
                 "(default: only to --out/selection.json, and say what would change)"),
    ):
        """Train on the earlier runs (and per held-out family), score the LSTM and the gradient-boosted model
        beside category mean, median of the last 32, last value and log-log regression with calibrated bands,
        replay right-sized requests, and measure prediction latency."""
        import torch

        from ..loaders import default_trace_dir, load_traces
        from ..prediction.config import load_config
        from ..prediction.features import build_table
        from ..prediction.predictor import LSTM, write_selection
        from ..prediction.rightsizing import evaluate_rightsizing
        from ..prediction.task_evaluation import evaluate_task_predictors, time_split
        from ..prediction.task_training import split_validation_runs

        torch.set_num_threads(1)
        start = time.perf_counter()
        cfg = load_config(config, {"task_model.epochs": epochs} if epochs else None)
        workflows = load_traces(traces or default_trace_dir())
        table = build_table(workflows)
        say = lambda m: console.print(f"[dim]{time.perf_counter() - start:6.1f}s[/] {m}")  # noqa: E731
        ev = evaluate_task_predictors(table, cfg, lofo=lofo, progress=say)
        frac = f"{cfg.evaluation.history_fraction:.0%}"
        cols = [("eval", "evaluation"), ("method", "method"), ("tasks", "tasks"),
                ("runtime_accuracy", "runtime 1-WAPE"), ("cpu_accuracy", "cpu 1-WAPE"),
                ("memory_accuracy", "memory 1-WAPE*"), ("runtime_coverage", "runtime p10-p90 cover"),
                ("runtime_coverage_raw", "uncalibrated"), ("runtime_width", "width/p50"),
                ("cpu_coverage", "cpu cover"), ("memory_coverage", "memory cover"),
                ("runtime_pinball", "runtime pinball")]
        main_rows = [r for r in ev.rows if r["family"] == "ALL" and not r["eval"].startswith("online")]
        console.print(_table(f"Task prediction on held-out data (history = earlier runs + first {frac} of the "
                             "category in the run; LOFO: first 20% only). Bands calibrated on the latest "
                             "training runs; 'selected' = the method chosen per target and family there", main_rows,
                             cols))
        fam_rows = [r for r in ev.rows if r["eval"].startswith("time-split") and r["family"] != "ALL"]
        console.print(_table("Time split, per family", fam_rows,
                             [("family", "family")] + cols[1:11]))
        online = [r for r in ev.rows if r["eval"].startswith("online")]
        console.print(_table("Online: same queries (last 40% of each category), more of the run finished",
                             online, cols[:5] + [("runtime_coverage", "runtime p10-p90 cover")]))
        console.print("* memory is recorded only in montage traces; memory accuracy is measured on montage only")
        rs_rows: list[dict] = []
        if rightsizing:
            say("right-sizing replay")
            train_runs, test_runs = time_split(table, cfg.evaluation.test_fraction)
            methods = ev.methods
            chosen = {LSTM, *ev.selection.values()} | {m for c in ev.family_selection.values() for m in c.values()}
            _, val_runs = split_validation_runs(table, train_runs, cfg.task_model.validation_fraction)
            rs_rows = evaluate_rightsizing(workflows, table, train_runs, test_runs,
                                           {m: methods[m] for m in methods if m in chosen},
                                           cfg.task_model.quantiles, cfg.rightsizing, cfg.task_model.max_history,
                                           val_runs if cfg.rightsizing.calibrate else ())
            console.print(_table(
                "Right-sizing replay on the held-out runs (reductions vs per-category max in hindsight; cpu capped "
                "at the online max; memory on montage, the only family with recorded peaks)", rs_rows,
                [("requests", "requests"), ("reserved_cpu_s", "reserved cpu-s"), ("cpu_reduction_pct", "cpu -%"),
                 ("under_cpu_pct", "cpu under %"), ("reserved_mem_gib_s_recorded", "reserved GiB-s"),
                 ("mem_reduction_pct", "mem -%"), ("under_memory_pct", "mem under %"),
                 ("makespan_s", "sum makespan s")], digits=1))
            from ..prediction.memory_sizing import evaluate_memory_sizing

            ms_rows = evaluate_memory_sizing(table, cfg.evaluation.test_fraction, workflows=workflows,
                                             replay_cfg=cfg.rightsizing)
            console.print(_table(
                "Memory right-sizing against Tovar and Witt on the latest runs, sized in submission order from "
                "earlier executions; a failed attempt is charged its reservation and retried at double", ms_rows,
                [("family", "family"), ("method", "method"), ("tasks", "tasks"), ("reserved_GBh", "reserved GB·h"),
                 ("wastage_GBh", "wasted GB·h"), ("under_provisioned_pct", "under %"), ("retries", "retries"),
                 ("retry_GBh", "retry GB·h"), ("sim_reserved_mem_gib_s", "simulated GiB-s"),
                 ("sim_makespan_s", "simulated makespan s"), ("trace_makespan_s", "trace requests: makespan s")],
                digits=4))
            rs_rows += [{"requests": r["method"], **r} for r in ms_rows]
        lat = ev.latency
        console.print(f"latency of Predictor.predict (one task, {lat['history_size']} history steps, 1 thread, "
                      f"{lat['trials']} calls): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
        console.print(f"selection (best 1-WAPE on the calibration runs): {ev.selection}; per family: "
                      f"{ev.family_selection or 'none'}"
                      + ("" if ev.family_selection else
                         f" (the calibration runs' own winners per family, row 'per-family', are not shipped: "
                         f"{ev.info.get('family_choice') or 'none'}; evaluation.family_selection ships them)"))
        scales = {m: b.unseen_scale for m, b in ev.bands.items() if b.unseen_scale}
        if scales:
            console.print("band widening for a family never trained on (median over held-out families; runtime, "
                          "cpu, memory): " + "; ".join(f"{m} " + "/".join(_fmt(s.get(str(k)), 2) for k in range(3))
                                                       for m, s in scales.items()))
        paths = [_write(out, "predictor_eval", ev.rows)]
        if rs_rows:
            paths.append(_write(out, "rightsizing", rs_rows))
        summary = {"rows": ev.rows, "selection": ev.selection, "family_selection": ev.family_selection,
                   "latency": ev.latency, "rightsizing": rs_rows,
                   "training": ev.info, "config": cfg.model_dump(), "seconds": time.perf_counter() - start,
                   "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / "predictor_eval.json").write_text(json.dumps(summary, indent=2, default=str))
        paths.append(out / "predictor_eval.json")
        best_rows = {t: next((r for r in ev.rows if r["eval"] == f"time-split@{frac}" and r["family"] == "ALL"
                              and r["method"] == m), {}) for t, m in ev.selection.items()}
        evidence = {t: r.get(f"{t}_accuracy") for t, r in best_rows.items()}
        runtime_selection = cfg.models_path("predictor") / "selection.json"
        winners = ", ".join(f"{t} {m}" for t, m in ev.selection.items())
        used = set(ev.selection.values()) | {m for c in ev.family_selection.values() for m in c.values()}
        bands = {m: b for m, b in ev.bands.items() if m in used}
        if write_selection_:
            paths.append(write_selection(runtime_selection.parent, ev.selection, evidence, ev.family_selection, bands))
            console.print(f"[green]selection written[/] to {runtime_selection} (the runtime now uses: {winners})")
        else:
            paths.append(write_selection(out, ev.selection, evidence, ev.family_selection, bands))
            try:
                current = json.loads(runtime_selection.read_text()).get("selection")
            except (OSError, ValueError):
                current = None
            console.print(f"selection NOT written to {runtime_selection} (pass --write-selection to make the runtime "
                          f"use it); it would be: {winners}"
                          + (f" (runtime uses now: {', '.join(f'{t} {m}' for t, m in current.items())})"
                             if current else " (no selection there now)")
                          + f"; saved to {out / 'selection.json'}")
        console.print("wrote " + ", ".join(str(p) for p in paths) + f" in {time.perf_counter() - start:.0f}s")

    @evaluate.command("forecaster")
    def eval_forecaster(
        files: list[Path] = typer.Argument(
            None, metavar="SERIES.csv", show_default=False, exists=True, dir_okay=False,
            help="CSV series (timestamp,value), as many as you like (a shell glob works); "
                 "default data/series/*.csv"),
        series: list[Path] = typer.Option(
            None, "--series", metavar="SERIES.csv", exists=True, dir_okay=False, show_default=False,
            help="A CSV series; repeat the flag, or list the files after it (--series a.csv b.csv)"),
        out: Path = typer.Option(Path("results/prediction"), help="Folder for the CSV/JSON results"),
        config: Path = typer.Option(None, help="Prediction config (default configs/prediction.yaml)"),
        held_out_series: bool = typer.Option(True, help="Also train without each series and score it"),
        epochs: int = typer.Option(None, help="Override forecaster.epochs"),
    ):
        """Train on the earlier part of each series, forecast the next hour at every point of the later part,
        and compare with naive and seasonal-naive: 1 - WAPE and MASE.

        Series: as arguments (orchestrator eval forecaster data/series/*.csv) and/or with --series (repeatable)."""
        import torch

        from .. import resources
        from ..prediction.config import load_config
        from ..prediction.forecast_evaluation import evaluate_forecaster
        from ..prediction.series import load_series

        torch.set_num_threads(1)
        start = time.perf_counter()
        cfg = load_config(config, {"forecaster.epochs": epochs} if epochs else None)
        fc = cfg.forecaster
        given = list(dict.fromkeys([*(series or []), *(files or [])]))
        paths = given or sorted(resources.series_dir().glob("*.csv"))
        names = [Path(p).stem for p in paths]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise typer.BadParameter(f"two series are named '{dup}' (series are named by file name): "
                                     + ", ".join(str(p) for p in paths if Path(p).stem == dup),
                                     param_hint="SERIES")
        data = {Path(p).stem: load_series(p, fc.step_minutes, fc.max_gap_steps) for p in paths}
        say = lambda m: console.print(f"[dim]{time.perf_counter() - start:6.1f}s[/] {m}")  # noqa: E731
        rows, _, info = evaluate_forecaster(data, fc, held_out_series, progress=say)
        console.print(_table(
            f"Demand forecast, next {fc.horizon} steps ({fc.horizon * fc.step_minutes} min), every origin of the "
            f"last {1 - fc.train_fraction:.0%} of each series", rows,
            [("eval", "evaluation"), ("series", "series"), ("method", "method"), ("forecasts", "forecasts"),
             ("accuracy", "1-WAPE"), ("mase", "MASE"), ("coverage", "p10-p90 cover")]))
        from ..prediction.forecast_evaluation import wins

        win_rows = [w for label in ("later-part", "held-out-series") for model in ("lstm", "online-best")
                    for w in wins(rows, label, model)]
        console.print(_table(
            "The LSTM, and the online choice among it, exponential smoothing and the last hour's mean, against each "
            "other method, per series: series where its MASE is lower, and the median MASEs", win_rows,
            [("eval", "evaluation"), ("model", "model"), ("baseline", "against"), ("series", "series"),
             ("wins", "better on"), ("median_mase_model", "median MASE model"),
             ("median_mase_baseline", "median MASE other")]))
        written = [_write(out, "forecaster_eval", rows)]
        (out / "forecaster_eval.json").write_text(json.dumps(
            {"rows": rows, "training": info, "config": fc.model_dump(), "seconds": time.perf_counter() - start},
            indent=2, default=str))
        written.append(out / "forecaster_eval.json")
        console.print("wrote " + ", ".join(str(p) for p in written) + f" in {time.perf_counter() - start:.0f}s")

    @predict.command("tasks")
    def predict_tasks(
        workflow: Path = typer.Argument(..., help="Workflow file (YAML, JSON or WfCommons)"),
        history: Path = typer.Option(None, help="Folder of earlier runs (WfCommons) to use as history (default: the "
                                                "bundled traces of the workflow's family, else all bundled traces)"),
        no_history: bool = typer.Option(False, "--no-history",
                                        help="Use no history: every task gets its family's prior"),
        version: str = typer.Option("latest", help="Predictor version under models/predictor"),
        limit: int = typer.Option(20, help="Rows to print"),
        out: Path = typer.Option(None, help="Write every task's prediction to this CSV"),
    ):
        """Predict runtime, cpu and memory quantiles for every task of a workflow before it runs, from earlier
        runs of its categories. The history holds only runs executed before this one (WfCommons `executedAt`):
        the run itself and every run executed at or after it are left out; a run without executedAt uses every
        other run, and says so. Executions recorded with runtime 0 (a recording failure) are left out."""
        from datetime import datetime, timezone

        import pandas as pd

        from ..loaders import default_trace_dir, load_trace_files, load_workflow
        from ..prediction.features import Execution, History, executed_at, not_observed
        from ..prediction.predictor import Predictor

        if no_history and history:
            raise typer.BadParameter("give either --history DIR or --no-history", param_hint="--no-history")
        wf = load_workflow(workflow)
        predictor = Predictor.load(version)
        hist = History()
        runs_of: dict[str, int] = {}  # category -> runs of the history that executed it
        notes: list[str] = []
        if no_history:
            label, what = "none (--no-history): every task gets the per-family prior", ""
        else:
            loaded = load_trace_files(history or default_trace_dir())
            if history:
                runs, what = loaded, f"--history {history}"
            else:
                same = [(p, w) for p, w in loaded if wf.family and w.family == wf.family]
                runs = same or loaded
                what = f"{wf.family} (bundled traces)" if same else "all families (bundled traces)"
            own = workflow.resolve()
            itself = [w.name for p, w in runs if w.name == wf.name or p.resolve() == own]
            runs = [(p, w) for p, w in runs if w.name not in itself]
            when = executed_at(wf) if wf.metadata.get("executed_at") else 0.0
            dates = {w.name: executed_at(w) for _, w in runs}
            if when > 0:
                later = [w.name for _, w in runs if dates[w.name] >= when]
                runs = [(p, w) for p, w in runs if dates[w.name] < when]
                undated = [w.name for _, w in runs if dates[w.name] == 0.0]
                running = [w.name for _, w in runs if dates[w.name] > 0 and w.metadata.get("recorded_makespan")
                           and dates[w.name] + float(w.metadata["recorded_makespan"]) > when]
                stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                label = f"{len(runs)} runs of {what} executed before this run ({stamp})"
                left = ([f"{', '.join(itself)} (the run predicted)"] if itself else []) + (
                    [f"{len(later)} run{'s' if len(later) != 1 else ''} executed at or after it "
                     f"({', '.join(later)})"] if later else [])
                if left:
                    label += "; left out: " + "; ".join(left)
                if undated:
                    notes.append(f"{len(undated)} history run(s) have no executedAt and are kept: "
                                 f"{', '.join(undated)}")
                if running:
                    notes.append(f"{len(running)} history run(s) started before this run but were still running "
                                 f"when it started (executedAt + makespan): {', '.join(running)}")
            else:
                label = f"{len(runs)} runs of {what}" + (f", without {', '.join(itself)} (the run predicted)"
                                                         if itself else "")
                notes.append(f"{workflow.name} records no executedAt, so it is unknown which runs came before it: "
                             "the history holds every other run, including any executed after it")
            failed: dict[str, int] = {}
            for _, past in sorted(runs, key=lambda pw: dates[pw[1].name]):  # oldest first: the latest weigh most
                seen = set()
                for t in past.tasks:
                    if t.observed is None:
                        continue
                    reason = not_observed(t)
                    if reason is not None:
                        failed[reason] = failed.get(reason, 0) + 1
                        continue
                    hist.add(Execution.from_task(t))
                    seen.add(t.category)
                for cat in seen:
                    runs_of[cat] = runs_of.get(cat, 0) + 1
            notes += [f"left out {n} executions of the history: {reason}" for reason, n in failed.items()]
        categories = sorted({t.category for t in wf.tasks})
        known = [c for c in categories if hist.of(c)]
        console.print(f"history: {label}" + ("" if no_history else
                      f"; {sum(len(hist.of(c)) for c in categories)} executions of the {len(categories)} predicted "
                      f"categories ({len(known)} of them with history; at most {hist.max_per_category} kept per "
                      "category, the latest)"))
        for note in notes:
            console.print(f"[yellow]note[/]: {note}")

        def source(p) -> str:
            used = list(dict.fromkeys(p.methods.values()))
            if set(used) <= {"prior", "none"}:
                return "prior (--no-history)" if no_history else "prior (no execution of this category)"
            return (f"history: {runs_of.get(p.category, 0)} runs of {what}, {p.history_size} executions; "
                    + "/".join(used))

        rows = []
        for t in wf.tasks:
            p = predictor.predict(t, hist, wf.family)
            rows.append({"task": t.id, **p.as_row(), "source": source(p)})
        frame = pd.DataFrame(rows)
        if out:
            frame.to_csv(out, index=False)
        # printed: runtime p10/p50/p90 and the cpu and memory medians (every quantile is in --out)
        cols = [c for c in ("task", "category", "runtime_p10", "runtime_p50", "runtime_p90", "cpu_p50", "memory_p50",
                            "source") if c in frame.columns]
        t = Table(title=f"{wf.name}: predictions (predictor {predictor.version}, selection {predictor.selection}; "
                        "runtime s, cpu cores, memory bytes)", title_justify="left")
        for c in cols:
            t.add_column(c, justify="left" if c in ("task", "category", "source") else "right",
                         overflow="fold" if c == "source" else "ellipsis", no_wrap=c != "source")
        for r in rows[:limit]:
            t.add_row(*(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols))
        console.print(t)
        if len(rows) > limit:
            console.print(f"[dim]{len(rows) - limit} more rows (--limit N, or --out FILE.csv for all)[/]")

    @predict.command("capacity")
    def predict_capacity(
        series: Path = typer.Argument(..., help="CSV usage series (timestamp,value)"),
        version: str = typer.Option("latest", help="Forecaster version under models/forecaster"),
        target_utilisation: float = typer.Option(None, help="Objective: keep utilisation below this"),
        p95_wait: float = typer.Option(None, help="Objective: p95 queueing delay (s) instead of utilisation"),
        cores_per_unit: float = typer.Option(None, help="Series units -> cores"),
        node_types: Path = typer.Option(None, help="Node types with prices (default configs/node_types.yaml)"),
        out: Path = typer.Option(None, help="Write the Ray autoscaler hint as YAML here"),
    ):
        """Forecast the next hour with whichever of the LSTM, exponential smoothing and the last hour's mean erred
        least over the series' last day (online-best), plan nodes per step; print the Ray autoscaler hint."""
        from ..prediction.capacity import plan_capacity
        from ..prediction.config import load_config
        from ..prediction.forecaster import Forecaster
        from ..prediction.node_types import load_node_types
        from ..prediction.series import load_series

        cfg = load_config()
        forecaster, _ = Forecaster.load(cfg.models_path("forecaster"), version)
        s = load_series(series, forecaster.cfg.step_minutes, forecaster.cfg.max_gap_steps)
        update = {k: v for k, v in (("target_utilisation", target_utilisation), ("p95_wait_seconds", p95_wait),
                                    ("cores_per_unit", cores_per_unit)) if v is not None}
        forecast = forecaster.forecast_best(s)
        if forecast.backtest:
            errors = ", ".join(f"{m} {e:.4g}" for m, e in forecast.backtest.items())
            console.print(f"forecast: {forecast.method} (least mean absolute error over the last day of forecasts "
                          f"already observed: {errors}); p10/p90 from its own errors")
        else:
            console.print(f"[yellow]forecast: {forecast.method}[/]: {forecast.note}")
        plan = plan_capacity(forecast, load_node_types(node_types), cfg.capacity.model_copy(update=update))
        t = Table(title=f"Capacity plan: {plan.node_type.name}, {plan.objective}, cost ${plan.cost:.2f} over the hour, "
                        f"forecast {plan.forecast_method}")
        for c in ("start", "demand cores", "needed cores", "nodes"):
            t.add_column(c, justify="right")
        for st in plan.steps:
            t.add_row(str(st.start), f"{st.demand_cores:.2f}", f"{st.needed_cores:.2f}", str(st.nodes))
        console.print(t)
        console.print(plan.to_yaml())
        if out:
            out.write_text(plan.to_yaml())

    @predict.command("cost")
    def predict_cost(
        workflow: Path = typer.Argument(..., help="Workflow file (durations from the file)"),
        deadline: float = typer.Option(..., help="Deadline in seconds"),
        policy: str = typer.Option(None, help="Scheduling policy for the simulation (srpt-cp, heft, ...)"),
        max_nodes: int = typer.Option(None, help="Largest cluster size tried per node type"),
        node_types: Path = typer.Option(None, help="Node types with prices (default configs/node_types.yaml)"),
    ):
        """Cheapest homogeneous cluster (type x count) that finishes the workflow by the deadline, in simulation."""
        from ..loaders import load_workflow
        from ..prediction.config import load_config
        from ..prediction.cost import cheapest_cluster
        from ..prediction.node_types import load_node_types

        cfg = load_config().cost
        plan = cheapest_cluster(load_workflow(workflow), load_node_types(node_types), deadline,
                                policy or cfg.policy, max_nodes or cfg.max_nodes, cfg.min_billed_seconds)
        t = Table(title=f"Cluster options (deadline {deadline:g} s, policy {plan.policy})")
        for c in ("node type", "nodes", "makespan s", "cost $", "meets deadline"):
            t.add_column(c, justify="right")
        for o in sorted(plan.options, key=lambda o: o.cost):
            t.add_row(o.node_type, str(o.nodes), _fmt(o.makespan, 1), _fmt(o.cost, 4), "yes" if o.meets_deadline else "no")
        console.print(t)
        if plan.best is None:
            console.print("[red]no tested cluster meets the deadline[/]; raise --max-nodes or the deadline")
            raise typer.Exit(1)
        b = plan.best
        console.print(f"[green]cheapest[/]: {b.nodes} x {b.node_type}, makespan {b.makespan:.1f} s, ${b.cost:.4f}")

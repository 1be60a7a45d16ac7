"""`orchestrator eval optimizer`: the optimization engine against Monte Carlo ground truth, beside its baselines,
on any folder of WfCommons files (results to --out as CSV, JSON and a Markdown report)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)

_COLUMNS = [("method", "method"), ("workflows", "wfs"), ("mean_ape", "makespan MAPE"),
            ("mean_ape_median", "median APE"), ("mean_ape_max", "max APE"), ("p90_ape", "P90 APE"),
            ("spearman", "Spearman"), ("precision_at_5", "prec@5"), ("seconds_median", "seconds (median)")]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.3g}"
    return str(v)


def _table(title: str, rows: list[dict], lead: list[tuple[str, str]] = ()) -> Table:
    cols = [*lead, *_COLUMNS]
    t = Table(title=title, title_justify="left")
    for key, header in cols:
        t.add_column(header, justify="left" if key in ("method", "shape", "family", "size") else "right")
    for r in rows:
        t.add_row(*(_fmt(r.get(k)) for k, _ in cols))
    return t


def _markdown(rows: list[dict], lead: list[tuple[str, str]] = ()) -> str:
    cols = [*lead, *_COLUMNS]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    evaluate = next((g.typer_instance for g in app.registered_groups if g.name == "eval"), None)
    if evaluate is None:
        evaluate = typer.Typer(help="Evaluate learned models on held-out data, beside their baselines.",
                               no_args_is_help=True)
        app.add_typer(evaluate, name="eval")

    @evaluate.command("optimizer")
    def eval_optimizer(
        traces: Path = typer.Option(None, help="Folder of WfCommons files (default: the bundled data/traces)"),
        out: Path = typer.Option(Path("results/optimizer"), help="Folder for the results (and the cached truth)"),
        per_family: int = typer.Option(6, help="Workflows per family, spread over sizes"),
        min_tasks: int = typer.Option(10, help="Smallest workflow scored"),
        max_tasks: int = typer.Option(1000, help="Largest workflow scored"),
        unseen: str = typer.Option("blast,bwa,seismology,soykb,srasearch",
                                   help="Synthetic families no model trained on (wfcommons recipes); '' for none"),
        unseen_sizes: str = typer.Option("30,100,300,1000", help="Sizes of the unseen families' instances"),
        samples: int = typer.Option(10_000, help="Monte Carlo samples of the ground truth makespan"),
        gain_samples: int = typer.Option(2_000, help="Samples of the ground-truth gains (common random numbers)"),
        lofo: bool = typer.Option(True, help="Score bundled families with a model trained without them"),
        epochs: int = typer.Option(None, help="Epochs of each leave-one-family-out model (default: the config's)"),
        policy: str = typer.Option("srpt-cp", help="The policy the workflows run under"),
        seed: int = typer.Option(0),
        learned: bool = typer.Option(True, help="Score the learned model (off: the baselines only)"),
        served: bool = typer.Option(True, help="Score `analyze` as served (its time budget)"),
        recommendations_max_tasks: int = typer.Option(200, help="Check the top recommendation against every "
                                                      "single change on workflows up to this size (0: skip)"),
    ):
        """Ground truth from 10,000 Monte Carlo samples per workflow on a tight cluster; the learned model on
        families it never trained on, beside critical path and slack on means, one list schedule on means, and
        Monte Carlo with 1,000 samples and with the learned model's time budget."""
        from ..optimization.evaluation import EvalConfig, run_evaluation

        start = time.perf_counter()
        say = lambda m: console.print(f"[dim]{time.perf_counter() - start:7.1f}s[/] {m}")  # noqa: E731
        cfg = EvalConfig(
            traces=traces, out=out, policy=policy, min_tasks=min_tasks, max_tasks=max_tasks, per_family=per_family,
            unseen=tuple(f for f in unseen.split(",") if f.strip()),
            unseen_sizes=tuple(int(s) for s in unseen_sizes.split(",") if s.strip()),
            gt_samples=samples, gain_samples=gain_samples, lofo=lofo, lofo_epochs=epochs, seed=seed, served=served,
            recommendations_max_tasks=recommendations_max_tasks)
        res = run_evaluation(cfg, progress=say, learned=None if learned else (lambda family: None))
        write_results(res, out)
        console.print(_table("All workflows (families the learned model never trained on)", res.summary))
        console.print(_table("By DAG shape", res.by_shape, [("shape", "shape")]))
        console.print(_table("By size (tasks)", res.by_size, [("size", "size")]))
        console.print(_table("By family", res.by_family, [("family", "family")]))
        if res.recommendations:
            t = Table(title="Top recommendation / best single change (re-measured on fresh draws)",
                      title_justify="left")
            for h in ("workflow", "tasks", "offered", "worse offered", "all kinds", "workflow changes only"):
                t.add_column(h, justify="left" if h == "workflow" else "right")
            for r in res.recommendations:
                t.add_row(r["workflow"], str(r["tasks"]), str(r["offered"]), str(r["worse_offered"]),
                          f"{r['all_ratio']:.2f} ({r['all_top_kind']} vs {r['all_best_kind']})",
                          f"{r['workflow_only_ratio']:.2f} ({r['workflow_only_top_kind']} vs "
                          f"{r['workflow_only_best_kind']})")
            console.print(t)
        console.print(f"results in {out}/ ({time.perf_counter() - start:.0f}s)")


def write_results(res, out: Path) -> list[Path]:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("rows", res.rows), ("summary", res.summary), ("by_shape", res.by_shape),
                       ("by_size", res.by_size), ("by_family", res.by_family),
                       ("recommendations", res.recommendations)):
        p = out / f"optimizer_eval_{name}.csv"
        pd.DataFrame(rows).to_csv(p, index=False)
        paths.append(p)
    p = out / "optimizer_eval.json"
    p.write_text(json.dumps({"meta": res.meta, "summary": res.summary, "by_shape": res.by_shape,
                             "by_size": res.by_size, "by_family": res.by_family,
                             "recommendations": res.recommendations}, indent=2, default=str))
    paths.append(p)
    md = ["# Optimizer evaluation", "", "## All workflows", "", _markdown(res.summary), "", "## By DAG shape", "",
          _markdown(res.by_shape, [("shape", "shape")]), "", "## By size", "",
          _markdown(res.by_size, [("size", "size")]), "", "## By family", "",
          _markdown(res.by_family, [("family", "family")]), ""]
    p = out / "optimizer_eval.md"
    p.write_text("\n".join(md))
    paths.append(p)
    return paths

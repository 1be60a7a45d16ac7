"""`orchestrator bench-api`: a load benchmark of the HTTP API against an API this command starts on a local Ray
(see `orchestrator.bench.api`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 200, emoji=False)
err_console = Console(stderr=True, emoji=False)


def _num(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _qrow(label: str, q: dict) -> list[str]:
    return [label, _num(q.get("n")), *(_num(q.get(k)) for k in ("p50", "p90", "p99", "max"))]


def _qtable(title: str, rows: list[list[str]]) -> Table:
    console.print(f"[bold]{escape(title)}[/]", soft_wrap=True)
    table = Table()
    for col in ("ms", "n", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col == "ms" else "right")
    for r in rows:
        table.add_row(*r)
    return table


def _counts(d: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items()) or "none"


def _cpu_line(cpu: dict | None, label: str = "") -> str | None:
    if not cpu:
        return None
    top = ", ".join(f"{escape(k)} {v:.2f}" for k, v in list(cpu.get("top_processes_cores", {}).items())[:5])
    return (f"  cpu{label}: machine busy {cpu['machine_busy_cores']:.2f} cores, this benchmark "
            f"{cpu['bench_cores']:.2f} ({top}), other programs {cpu['other_programs_cores']:.2f} (peak "
            f"{cpu['other_programs_peak_cores']:.2f}), load avg {cpu['load_avg_1m']}")


def print_part(res) -> None:
    _print_part(res)
    s = res.summary
    lines = [_cpu_line(s.get("cpu"))]
    lines += [_cpu_line(m.get("cpu"), f" ({m['mode']})") for m in s.get("modes", [])]
    lines += [_cpu_line(b.get("cpu"), f" ({b['backend']})") for b in s.get("backends", [])]
    for line in lines:
        if line:
            console.print(line, soft_wrap=True)


def _print_part(res) -> None:
    s = res.summary
    if res.name == "decisions":
        console.print(_qtable(
            f"decisions: {s['endpoint']} ({s['workflow']}, {s['tasks']} tasks, {s['policy']}), open loop "
            f"{s['target_rps']:g}/s for {s['requests']} requests: achieved {s['achieved_rps']} rps, "
            f"errors {_counts(s['errors'])}",
            [_qrow("client latency", s["latency_ms"]), _qrow("scheduler service (latency_ms)", s["service_ms"]),
             _qrow("auth (Server-Timing)", s["auth_ms"]),
             _qrow("rest: latency - service - auth - ratelimit", s["other_server_and_transport_ms"]),
             _qrow("client send lag", s["send_lag_ms"])]))
    elif res.name == "overhead":
        console.print(_qtable(
            f"overhead: Server-Timing of {s['ok']} x {s['endpoint']} at {s['target_rps']:g}/s "
            f"(Redis: {s['redis']}; X-RateLimit-Scope {_counts(s['scopes'])}; errors {_counts(s['errors'])})",
            [_qrow("auth", s["auth_ms"]), _qrow("ratelimit", s["ratelimit_ms"]),
             _qrow("auth + ratelimit", s["sum_ms"]), _qrow("client latency", s["latency_ms"])]))
    elif res.name == "analysis":
        rec = s["recommend_row"]
        console.print(_qtable(
            f"analysis: {s['endpoint']} ({s['workflow']}, {s['tasks']} tasks), {s['requests']} sequential "
            f"requests after {s['warmup']} warm-ups, recommend=false; errors {_counts(s['errors'])}",
            [_qrow("analysis_ms", s["analysis_ms"]), _qrow("server_ms", s["server_ms"]),
             _qrow("client latency", s["latency_ms"])]))
        console.print(f"  recommend=true (one request): status {rec.get('status')}, analysis_ms "
                      f"{_num(rec.get('analysis_ms'))}, recommend_ms {_num(rec.get('recommend_ms'))}, server_ms "
                      f"{_num(rec.get('server_ms'))}, client {_num(rec.get('latency_ms'))} ms, "
                      f"{rec.get('offered')} recommendation(s) offered"
                      + (f", error {escape(str(rec['error']))}" if rec.get("error") else ""))
    elif res.name == "ratelimit":
        console.print(f"[bold]ratelimit: {escape(s['endpoint'])} hammered by {s['modes'][0]['clients']} concurrent "
                      f"clients for {s['modes'][0]['duration_s']:g} s, limit {s['modes'][0]['limit_rps']:g}/s burst "
                      f"{s['modes'][0]['limit_burst']} for one key; expected = burst + rate x elapsed[/]",
                      soft_wrap=True)
        table = Table()
        for col in ("mode", "replicas", "clients", "elapsed s", "requests", "200", "429", "other",
                    "expected (1 bucket)", "allowed/expected", "expected per-replica", "scope"):
            table.add_column(col, justify="left" if col in ("mode", "scope", "other") else "right")
        for m in s["modes"]:
            table.add_row(m["mode"], f"{m['replicas']} ({_num(m['replicas_running'])} running)", str(m["clients"]),
                          _num(m["elapsed_s"]), str(m["requests"]), str(m["allowed"]), str(m["rejected_429"]),
                          _counts(m["other"]), _num(m["expected_one_bucket"], 1),
                          _num(m["ratio_vs_one_bucket"], 3), _num(m["expected_if_per_replica"], 1),
                          _counts({k or "-": v for k, v in m["scopes"].items()}))
        console.print(table)
        if s.get("note"):
            console.print(f"  {s['note']}")
    elif res.name == "submit":
        console.print(f"[bold]submit: {s['backends'][0]['submitted']} concurrent {escape(s['endpoint'])} (2-task "
                      "workflows), checked in the store, then every run to a terminal state[/]", soft_wrap=True)
        table = Table()
        for col in ("store", "statuses", "201", "in store", "new runs", "orphans", "dup ids", "submit s",
                    "latency p50/p99/max ms", "all terminal", "final", "terminal after s"):
            table.add_column(col, justify="left" if col in ("store", "statuses", "final") else "right")
        for b in s["backends"]:
            q = b["submit_latency_ms"]
            table.add_row(b["backend"], _counts(b["statuses"]), str(b["created_201"]),
                          str(b["created_201"] - len(b["missing_in_store"])), str(b["store_new_runs"]),
                          str(len(b["orphan_runs"])), str(b["duplicate_run_ids"]), _num(b["submit_s"]),
                          f"{_num(q['p50'], 0)}/{_num(q['p99'], 0)}/{_num(q['max'], 0)}", str(b["all_terminal"]),
                          _counts(b["final_statuses"]), _num(b["time_to_all_terminal_s"]))
        console.print(table)
        if s.get("note"):
            console.print(f"  {s['note']}")


def print_summary(summary: dict) -> None:
    m = summary["machine"]
    console.print(f"[bold]bench-api on {m.get('cpu_count')} cpu(s), "
                  f"{escape(str(m.get('cpu_model') or m.get('processor') or '?'))}, {escape(str(m.get('platform')))}, "
                  f"Python {m.get('python')}, Ray {m.get('ray', '?')}; {summary['wall_s']:.0f} s[/]", soft_wrap=True)
    table = Table()
    for col in ("metric", "value", "goal", "met"):
        table.add_column(col)
    for h in summary["headline"]:
        v = h["value"]
        value = _counts(v) if isinstance(v, dict) else _num(v, 3)
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[h["met"]]
        table.add_row(escape(h["metric"]), escape(value), escape(str(h["goal"])), met)
    for part, error in summary["failures"].items():
        table.add_row(f"{part}: FAILED", escape(error[:150]), "", "[red]no[/]")
    console.print(table)
    for note in summary.get("notes") or []:
        console.print(f"note: {escape(note)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("bench-api")
    def bench_api(
        out: Path = typer.Option(Path("results/bench-api"), "--out", help="Output folder (JSON + CSV per part, "
                                                                          "summary.json, the API's data folder)"),
        what: str = typer.Option("all", "--what", help="all, or a comma-separated list of: decisions, overhead, "
                                                       "analysis, submit, ratelimit"),
        db_url: str = typer.Option(None, "--db-url", help="A PostgreSQL server (postgresql+psycopg://user@host/db): "
                                                          "submit also runs there, on a fresh database it creates "
                                                          "and drops"),
        redis_url: str = typer.Option(None, "--redis-url", help="Redis for the shared rate limit (overhead with "
                                                                "Redis; ratelimit with and without it)"),
        duration: float = typer.Option(20.0, "--duration", min=1.0, help="Seconds of the decisions and "
                                                                        "ratelimit parts"),
        rate: float = typer.Option(50.0, "--rate", min=1.0, help="Requests/s of the open-loop parts"),
        num_cpus: int = typer.Option(2, "--num-cpus", min=1, help="CPUs of the local Ray"),
        policy: str = typer.Option("srpt-cp", "--policy", help="Policy of the decisions part (learned: answered "
                                                               "by the scheduler model deployment)"),
    ):
        """Benchmark the HTTP API on a local Ray: decision latency under steady load, auth + rate-limit overhead,
        workflow analysis time, the rate limit across replicas, and concurrent submissions against the store."""
        from ..bench.api import BenchApiOptions, parse_parts, run_bench
        from ..bench.outputs import prepare_output_dir

        opts = BenchApiOptions(out=prepare_output_dir(out), parts=parse_parts(what), db_url=db_url,
                               redis_url=redis_url, duration=duration, rate=rate, num_cpus=num_cpus,
                               policy=policy)
        summary = run_bench(opts, log=lambda msg: err_console.print(escape(msg), soft_wrap=True),
                            on_part=print_part)
        print_summary(summary)
        console.print(f"results in {escape(str(out))}/ (summary.json, <part>.json, <part>.csv)")
        if summary["failures"]:
            raise typer.Exit(1)

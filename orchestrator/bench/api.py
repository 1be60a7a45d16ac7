"""`orchestrator bench-api`: a load benchmark of the HTTP API (serve/), run against an API this process starts on a
local Ray: scheduling decisions at a steady open-loop rate, the cost of authentication and rate limiting, the
analysis of a ~1000-task workflow, the rate limit held across gateway replicas (with and without Redis), and 200
concurrent workflow submissions checked against the store (SQLite, and PostgreSQL with --db-url).

Each part writes `<part>.json` (its summary and rows) and `<part>.csv` (its rows) under the output folder, and the
run writes `summary.json` (the machine, each part's headline numbers and goals). The numbers are those of a client
on the same machine as the API: on a small machine the client's own CPU use is part of what is measured.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import platform
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidError, OrchestratorError

PARTS = ("decisions", "overhead", "analysis", "submit", "ratelimit")
APP_NAME = "orchestrator-bench"
V1 = "/api/v1"
HIGH_RATE = 1e6  # a rate limit that never binds (parts other than `ratelimit`)
HIGH_BURST = 1_000_000


@dataclass
class BenchApiOptions:
    out: Path
    parts: tuple[str, ...] = PARTS
    db_url: str | None = None  # a PostgreSQL server: `submit` also runs there, on a fresh database
    redis_url: str | None = None
    duration: float = 20.0
    rate: float = 50.0  # requests/s of the open-loop parts
    overhead_requests: int = 1000
    analysis_requests: int = 20
    analysis_warmup: int = 2
    limit_rps: float = 20.0
    limit_burst: int = 20
    replicas: int = 4
    clients: int = 16
    submit_count: int = 200
    submit_timeout_s: float = 300.0
    num_cpus: int = 2
    host: str = "127.0.0.1"
    decision_trace_tasks: int = 58
    policy: str = "srpt-cp"  # of the decisions part ("learned": answered by the model deployment)
    analysis_trace_tasks: int = 1000


def parse_parts(text: str) -> tuple[str, ...]:
    """`all`, or a comma-separated list of parts, in the order they run."""
    items = [s.strip().lower() for s in text.split(",") if s.strip()]
    if not items:
        raise InvalidError("--what is empty; give all or some of " + ", ".join(PARTS))
    if "all" in items:
        return PARTS
    unknown = [s for s in items if s not in PARTS]
    if unknown:
        raise InvalidError(f"--what: unknown part(s) {', '.join(unknown)}; choose all or any of {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in items)


# ---- small pure helpers ---------------------------------------------------------------------------------------

def quantiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, mean, p50, p90, p99 and max of `values` (None when empty)."""
    import numpy as np

    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if vals.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(vals, [50, 90, 99])
    return {"n": int(vals.size), "mean": float(vals.mean()), "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(vals.max())}


def parse_server_timing(header: str | None) -> dict[str, float]:
    """`auth;dur=0.12, ratelimit;dur=0.30` -> {"auth": 0.12, "ratelimit": 0.30} (ms); metrics without dur are left
    out."""
    out: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "dur" and name:
                try:
                    out[name] = float(value.strip().strip('"'))
                except ValueError:
                    pass
    return out


def expected_allowed(rate: float, burst: int, elapsed: float, buckets: int = 1) -> float:
    """What a token bucket (full at the start) lets through in `elapsed` seconds of saturation: `buckets` of them,
    each `burst + rate x elapsed`."""
    return buckets * (burst + rate * max(0.0, elapsed))


def pick_trace(workflows, target: int, family: str | None = None, lo: int | None = None, hi: int | None = None):
    """The workflow whose task count is closest to `target` (of `family` when one exists, within [lo, hi])."""
    pool = [w for w in workflows if (lo is None or len(w.tasks) >= lo) and (hi is None or len(w.tasks) <= hi)]
    if family:
        pool = [w for w in pool if w.family == family] or pool
    if not pool:
        raise InvalidError(f"No bundled trace has between {lo} and {hi} tasks")
    return min(pool, key=lambda w: (abs(len(w.tasks) - target), w.name))


def status_counts(rows: Sequence[dict], key: str = "status") -> dict[str, int]:
    return dict(sorted(Counter(str(r[key]) for r in rows).items()))


def errors_of(rows: Sequence[dict], ok: set[str]) -> dict[str, int]:
    return {k: v for k, v in status_counts(rows).items() if k not in ok}


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def machine() -> dict[str, Any]:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or None, "python": platform.python_version()}
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


class CpuSampler:
    """CPU use while a part runs, every `interval` s: this process with its children (the local Ray it started:
    proxy, replicas, orchestrator) by process name, and the rest of the machine (other programs), in cores."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._stop = None
        self._thread = None
        self.result: dict[str, Any] = {}

    def __enter__(self) -> "CpuSampler":
        import threading

        try:
            import psutil  # noqa: F401 - a dependency of Ray
        except ImportError:
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        def tree() -> dict[int, tuple[str, float]]:
            out = {}
            for p in [me, *me.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    if p.pid == me.pid:
                        name = "bench client (this process)"
                    else:
                        cmd = p.cmdline()
                        # Ray's title names the method running: "ray::ServeReplica:app:Deployment.method"
                        name = cmd[0].split(".")[0] if cmd and cmd[0].startswith("ray::") else p.name()
                    out[p.pid] = (name, t.user + t.system)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            return out

        first_sys, first_tree, t0 = psutil.cpu_times(), tree(), time.monotonic()
        peak_other = 0.0
        last_sys, last_tree, last_t = first_sys, first_tree, t0
        while not self._stop.wait(self.interval):
            now_sys, now_tree, now = psutil.cpu_times(), tree(), time.monotonic()
            dt = max(1e-6, now - last_t)
            busy = _busy(now_sys) - _busy(last_sys)
            mine = sum(v for pid, (_, v) in now_tree.items()) - sum(
                last_tree[pid][1] for pid in now_tree if pid in last_tree)
            peak_other = max(peak_other, (busy - mine) / dt)
            last_sys, last_tree, last_t = now_sys, now_tree, now
        dt = max(1e-6, last_t - t0)
        by_name: dict[str, float] = {}
        for pid, (name, v) in last_tree.items():
            by_name[name] = by_name.get(name, 0.0) + v - first_tree.get(pid, (name, 0.0))[1]
        busy = (_busy(last_sys) - _busy(first_sys)) / dt
        mine = sum(by_name.values()) / dt
        self.result = {"seconds": round(dt, 1), "machine_busy_cores": round(busy, 2), "bench_cores": round(mine, 2),
                       "other_programs_cores": round(max(0.0, busy - mine), 2),
                       "other_programs_peak_cores": round(peak_other, 2),
                       "load_avg_1m": round(os.getloadavg()[0], 2),
                       "top_processes_cores": {k: round(v / dt, 2) for k, v in
                                               sorted(by_name.items(), key=lambda kv: -kv[1])[:8] if v / dt >= 0.01}}


def _busy(t) -> float:
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def write_part(out: Path, name: str, summary: dict, rows: list[dict]) -> list[Path]:
    """`<name>.json` (summary and rows) and `<name>.csv` (rows)."""
    jpath, cpath = out / f"{name}.json", out / f"{name}.csv"
    jpath.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str) + "\n")
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    with cpath.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ["empty"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    return [jpath, cpath]


# ---- the API under test -----------------------------------------------------------------------------------------

class ApiHarness:
    """One local Ray and Serve for the whole benchmark; the API application redeployed when a part needs other
    settings (rate limit, Redis, replicas, store). The orchestrator actor is replaced when the store changes."""

    def __init__(self, data_dir: Path, host: str, num_cpus: int, log: Callable[[str], None] = print):
        self.data_dir = data_dir.resolve()
        self.host, self.num_cpus, self.log = host, num_cpus, log
        self.port = free_port(host)
        self.url: str | None = None
        self.current: tuple | None = None
        self.notes: list[str] = []
        self.store_url: str | None = None
        self.sqlite_url = f"sqlite:///{self.data_dir / 'state.db'}"

    def start(self, *, db_url: str | None = None, redis_url: str | None = None, rps: float = HIGH_RATE,
              burst: int = HIGH_BURST, replicas: int | None = None) -> str:
        from ray import serve

        from ..commands.serve import start_api

        db_url = db_url or self.sqlite_url
        wanted = (db_url, redis_url or "", rps, burst, replicas)
        if wanted == self.current:
            return self.url
        t0 = time.perf_counter()
        if self.current is not None:
            serve.delete(APP_NAME)  # no replica of the previous settings may answer
        if self.store_url is not None and self.store_url != db_url:
            stop_orchestrator()
        # "" (not None): None would let REDIS_URL from the environment fill it in
        settings = {"data_dir": str(self.data_dir), "db_url": db_url, "redis_url": redis_url or "",
                    "rate_limit": {"requests_per_second": rps, "burst": burst}}
        self.url = start_api(self.host, self.port, dict(settings), replicas=replicas, num_cpus=self.num_cpus,
                             app_name=APP_NAME)
        self.current, self.store_url = wanted, db_url
        self._wait_ready()
        self.log(f"API up at {self.url} (rate limit {rps:g}/s burst {burst}, "
                 f"{'Redis' if redis_url else 'no Redis'}, {replicas or 1} gateway replica(s), "
                 f"store {'PostgreSQL' if db_url.startswith('postgres') else 'SQLite'}) "
                 f"in {time.perf_counter() - t0:.1f} s")
        return self.url

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            self.log(f"note: {text}")

    def _wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=10)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise OrchestratorError(f"The API at {self.url} was not ready within {timeout:g} s: {last}")

    def store(self):
        from ..store import Store

        return Store.open(self.store_url, data_dir=self.data_dir)

    def key(self, role: str = "operator", prefix: str = "bench") -> str:
        store = self.store()
        try:
            return store.create_api_key(f"{prefix}-{uuid.uuid4().hex[:8]}", role)
        finally:
            store.close()

    def gateway_replicas(self) -> int | None:
        """Gateway replicas Serve reports running."""
        try:
            from ray import serve

            app = serve.status().applications[APP_NAME]
            dep = app.deployments["ApiGateway"]
            return int(dep.replica_states.get("RUNNING", 0))
        except Exception:  # noqa: BLE001 - informational
            return None

    def close(self) -> None:
        t0 = time.perf_counter()
        stop_orchestrator()
        try:
            from ray import serve

            serve.shutdown()
        except Exception:  # noqa: BLE001
            pass
        self.log(f"API stopped in {time.perf_counter() - t0:.1f} s")


def stop_orchestrator(timeout: float = 60.0) -> None:
    """Stop the orchestrator actor (it flushes and gives its lease back) and wait until its name is free."""
    import ray

    from ..runtime.client import ACTOR_NAME, NAMESPACE

    if not ray.is_initialized():
        return
    try:
        handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return
    try:
        ray.get(handle.shutdown.remote(), timeout=timeout)
    except Exception:  # noqa: BLE001 - killed below anyway
        pass
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)


class PostgresDatabase:
    """A fresh database on the server of `server_url` (created on enter, dropped on exit)."""

    def __init__(self, server_url: str):
        import sqlalchemy as sa

        from ..store.database import parse_url

        parsed = parse_url(server_url)
        if parsed.get_backend_name() != "postgresql":
            raise InvalidError(f"--db-url {server_url}: give a PostgreSQL server URL "
                               "(postgresql+psycopg://user@host:port/db); the benchmark creates a fresh database there")
        self.admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
        self.name = f"orch_bench_{uuid.uuid4().hex[:12]}"
        self.url = parsed.set(database=self.name).render_as_string(hide_password=False)

    def __enter__(self) -> str:
        import sqlalchemy as sa

        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self.url

    def __exit__(self, *exc) -> None:
        import sqlalchemy as sa

        try:
            with self.admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": self.name})
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        finally:
            self.admin.dispose()


# ---- load generation --------------------------------------------------------------------------------------------

def _client(url: str, connections: int, timeout: float = 60.0):
    import httpx

    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout),
                             limits=httpx.Limits(max_connections=connections,
                                                 max_keepalive_connections=connections))


async def open_loop(send: Callable[[int], Awaitable[dict]], rate: float, count: int) -> tuple[list[dict], float]:
    """`count` calls of `send(i)` started on a fixed schedule of `rate` per second whatever the answers' delays
    (open loop: a slow answer does not delay the next request, so queueing shows in the latencies). Each row: i,
    scheduled_s, send_lag_ms (how late the client started it), latency_ms, and what `send` returned. Returns the
    rows and the wall time from the first scheduled start to the last answer."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    rows: list[dict] = []

    async def one(i: int, target: float) -> None:
        start = loop.time()
        p0 = time.perf_counter()
        try:
            extra = await send(i)
        except Exception as exc:  # noqa: BLE001 - a transport error is a result
            extra = {"status": type(exc).__name__}
        rows.append({"i": i, "scheduled_s": round(target - t0, 6), "send_lag_ms": (start - target) * 1e3,
                     "latency_ms": (time.perf_counter() - p0) * 1e3, **extra})

    tasks = []
    for i in range(count):
        target = t0 + i / rate
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, target)))
    await asyncio.gather(*tasks)
    wall = loop.time() - t0
    rows.sort(key=lambda r: r["i"])
    return rows, wall


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- the parts ----------------------------------------------------------------------------------------------------

@dataclass
class PartResult:
    name: str
    summary: dict
    rows: list[dict] = field(default_factory=list)
    headline: list[tuple[str, Any, str, bool | None]] = field(default_factory=list)  # metric, value, goal, met


def _ms(v) -> float | None:
    return None if v is None else round(float(v), 3)


def _q(values) -> dict:
    return {k: (_ms(v) if k not in ("n",) else v) for k, v in quantiles(values).items()}


async def _decisions(url: str, key: str, workflow: dict, opts: BenchApiOptions) -> PartResult:
    body = json.dumps({"workflow": workflow, "policy": opts.policy}).encode()
    headers = {**_auth(key), "content-type": "application/json"}
    count = max(1, int(round(opts.rate * opts.duration)))
    async with _client(url, 512) as client:
        for _ in range(5):  # warm-up: connections, first imports in the replicas
            await client.post(f"{V1}/scheduling/decisions", content=body, headers=headers)

        async def send(i: int) -> dict:
            r = await client.post(f"{V1}/scheduling/decisions", content=body, headers=headers)
            out: dict[str, Any] = {"status": r.status_code}
            if r.status_code == 201:
                data = r.json()
                out["service_ms"] = data.get("latency_ms")
                out.update({f"{k}_ms": v for k, v in parse_server_timing(r.headers.get("server-timing")).items()})
            else:
                out["error"] = r.text[:300]
            return out

        with CpuSampler() as cpu:
            rows, wall = await open_loop(send, opts.rate, count)
    ok = [r for r in rows if r["status"] == 201]
    lat = _q([r["latency_ms"] for r in ok])
    summary = {"endpoint": "POST /api/v1/scheduling/decisions", "policy": opts.policy, "samples": "default (4)",
               "workflow": workflow["name"], "tasks": len(workflow["tasks"]), "body_bytes": len(body),
               "target_rps": opts.rate, "requests": count, "wall_s": round(wall, 3),
               "achieved_rps": round(count / wall, 2) if wall > 0 else None,
               "ok": len(ok), "errors": errors_of(rows, {"201"}), "latency_ms": lat,
               "service_ms": _q([r.get("service_ms") for r in ok]),
               "send_lag_ms": _q([r["send_lag_ms"] for r in rows]),
               "auth_ms": _q([r.get("auth_ms") for r in ok]),
               "other_server_and_transport_ms": _q([r["latency_ms"] - (r.get("service_ms") or 0)
                                                    - (r.get("auth_ms") or 0) - (r.get("ratelimit_ms") or 0)
                                                    for r in ok]),
               "cpu": cpu.result, "goal": "p99 client latency < 50 ms"}
    met = lat["p99"] is not None and lat["p99"] < 50 and not summary["errors"]
    return PartResult("decisions", summary, rows, [
        ("decisions: achieved rps", summary["achieved_rps"], f"{opts.rate:g}", None),
        ("decisions: p99 latency (ms)", lat["p99"], "< 50", met)])


async def _overhead(url: str, key: str, opts: BenchApiOptions, redis: bool) -> PartResult:
    headers = _auth(key)
    count = opts.overhead_requests
    async with _client(url, 256) as client:
        for _ in range(10):
            await client.get(f"{V1}/workflows", params={"limit": 1}, headers=headers)

        async def send(i: int) -> dict:
            r = await client.get(f"{V1}/workflows", params={"limit": 1}, headers=headers)
            timing = parse_server_timing(r.headers.get("server-timing"))
            out = {"status": r.status_code, "scope": r.headers.get("x-ratelimit-scope"),
                   "auth_ms": timing.get("auth"), "ratelimit_ms": timing.get("ratelimit")}
            if out["auth_ms"] is not None and out["ratelimit_ms"] is not None:
                out["sum_ms"] = out["auth_ms"] + out["ratelimit_ms"]
            return out

        with CpuSampler() as cpu:
            rows, wall = await open_loop(send, opts.rate, count)
    ok = [r for r in rows if r["status"] == 200]
    summary = {"endpoint": "GET /api/v1/workflows?limit=1", "target_rps": opts.rate, "requests": count,
               "wall_s": round(wall, 3), "redis": redis, "scopes": status_counts(ok, "scope") if ok else {},
               "ok": len(ok), "errors": errors_of(rows, {"200"}),
               "with_server_timing": sum(1 for r in ok if r.get("sum_ms") is not None),
               "auth_ms": _q([r.get("auth_ms") for r in ok]), "ratelimit_ms": _q([r.get("ratelimit_ms") for r in ok]),
               "sum_ms": _q([r.get("sum_ms") for r in ok]), "latency_ms": _q([r["latency_ms"] for r in ok]),
               "cpu": cpu.result, "goal": "p99 of auth + rate limit < 5 ms"}
    p99 = summary["sum_ms"]["p99"]
    scope = ",".join(summary["scopes"]) or "?"
    return PartResult("overhead", summary, rows, [
        (f"overhead: p99 auth+ratelimit (ms), scope {scope}", p99, "< 5",
         p99 is not None and p99 < 5 and not summary["errors"])])


async def _analysis(url: str, key: str, workflow: dict, opts: BenchApiOptions) -> PartResult:
    headers = {**_auth(key), "content-type": "application/json"}
    rows: list[dict] = []
    async with _client(url, 4, timeout=600) as client:
        async def one(recommend: bool, phase: str, i: int) -> None:
            body = json.dumps({"workflow": workflow, "recommend": recommend}).encode()
            t0 = time.perf_counter()
            r = await client.post(f"{V1}/optimization/analyze", content=body, headers=headers)
            row: dict[str, Any] = {"phase": phase, "i": i, "recommend": recommend, "status": r.status_code,
                                   "latency_ms": (time.perf_counter() - t0) * 1e3}
            if r.status_code == 200:
                data = r.json()
                row.update({"analysis_ms": data.get("analysis_ms"), "server_ms": data.get("server_ms"),
                            "recommend_ms": data.get("recommend_ms"),
                            "offered": len(((data.get("recommendations") or {}).get("recommendations")) or [])})
            else:
                row["error"] = r.text[:300]
            rows.append(row)

        for i in range(opts.analysis_warmup):
            await one(False, "warmup", i)
        with CpuSampler() as cpu:
            for i in range(opts.analysis_requests):
                await one(False, "measured", i)
        await one(True, "recommend", 0)
    measured = [r for r in rows if r["phase"] == "measured" and r["status"] == 200]
    rec = next((r for r in rows if r["phase"] == "recommend"), {})
    summary = {"endpoint": "POST /api/v1/optimization/analyze", "workflow": workflow["name"],
               "tasks": len(workflow["tasks"]), "requests": opts.analysis_requests, "warmup": opts.analysis_warmup,
               "ok": len(measured), "errors": errors_of([r for r in rows if r["phase"] == "measured"], {"200"}),
               "analysis_ms": _q([r["analysis_ms"] for r in measured]),
               "server_ms": _q([r["server_ms"] for r in measured]),
               "latency_ms": _q([r["latency_ms"] for r in measured]),
               "recommend_row": {k: rec.get(k) for k in ("status", "analysis_ms", "recommend_ms", "server_ms",
                                                         "latency_ms", "offered", "error") if k in rec},
               "cpu": cpu.result, "goal": "server-side (server_ms) p99 < 200 ms with recommend=false"}
    p99 = summary["server_ms"]["p99"]
    return PartResult("analysis", summary, rows, [
        ("analysis: p99 analysis_ms", summary["analysis_ms"]["p99"], "", None),
        ("analysis: p99 server_ms", p99, "< 200", p99 is not None and p99 < 200 and not summary["errors"]),
        ("analysis: recommend=true recommend_ms", _ms(rec.get("recommend_ms")), "", None)])


async def _hammer(url: str, key: str, clients: int, duration: float) -> dict:
    """`clients` closed-loop clients sending GET /api/v1/workflows?limit=1 for `duration` s."""
    loop = asyncio.get_running_loop()
    headers = _auth(key)
    sends: list[tuple[float, float, str, str | None]] = []  # (sent, answered, status, scope)
    async with _client(url, clients) as client:
        t0 = loop.time()
        end = t0 + duration

        async def worker() -> None:
            while loop.time() < end:
                sent = loop.time()
                try:
                    r = await client.get(f"{V1}/workflows", params={"limit": 1}, headers=headers)
                    status, scope = str(r.status_code), r.headers.get("x-ratelimit-scope")
                except Exception as exc:  # noqa: BLE001
                    status, scope = type(exc).__name__, None
                sends.append((sent - t0, loop.time() - t0, status, scope))

        await asyncio.gather(*(worker() for _ in range(clients)))
    sends.sort()
    return {"sends": sends}


async def _ratelimit_mode(harness: ApiHarness, opts: BenchApiOptions, redis_url: str | None) -> tuple[dict, list]:
    mode = "redis" if redis_url else "per-replica"
    url = await asyncio.to_thread(harness.start, redis_url=redis_url, rps=opts.limit_rps, burst=opts.limit_burst,
                                  replicas=opts.replicas)
    running = harness.gateway_replicas()
    key = harness.key("viewer", f"bench-rl-{mode}")
    preexisting = None
    if redis_url:
        preexisting = await _clear_bucket(redis_url, harness, key)
    with CpuSampler() as cpu:
        result = await _hammer(url, key, opts.clients, opts.duration)
    sends = result["sends"]
    statuses = Counter(s[2] for s in sends)
    allowed = statuses.get("200", 0)
    elapsed = (sends[-1][0] - sends[0][0]) if sends else 0.0
    expected = expected_allowed(opts.limit_rps, opts.limit_burst, elapsed)
    buckets = opts.replicas if not redis_url else 1
    summary = {"mode": mode, "replicas": opts.replicas, "replicas_running": running, "clients": opts.clients,
               "limit_rps": opts.limit_rps, "limit_burst": opts.limit_burst, "duration_s": opts.duration,
               "elapsed_s": round(elapsed, 3), "requests": len(sends), "attempted_rps": round(len(sends) / elapsed, 1)
               if elapsed else None, "statuses": dict(sorted(statuses.items())), "allowed": allowed,
               "rejected_429": statuses.get("429", 0), "expected_one_bucket": round(expected, 1),
               "ratio_vs_one_bucket": round(allowed / expected, 4) if expected else None,
               "expected_if_per_replica": round(expected_allowed(opts.limit_rps, opts.limit_burst, elapsed,
                                                                 opts.replicas), 1),
               "scopes": dict(Counter(s[3] for s in sends if s[2] == "200" or s[2] == "429")),
               "other": {k: v for k, v in statuses.items() if k not in ("200", "429")},
               "redis_bucket_preexisted": preexisting, "buckets_assumed": buckets,
               # no response header names the replica; without Redis, allowed ~ replicas x one bucket shows that
               # every replica answered
               "distinct_replicas_answered": "not observable", "cpu": cpu.result}
    per_second: dict[int, Counter] = {}
    for sent, _, status, _ in sends:
        per_second.setdefault(int(sent), Counter())[status] += 1
    rows = [{"mode": mode, "second": s, "ok_200": c.get("200", 0), "rejected_429": c.get("429", 0),
             "other": sum(v for k, v in c.items() if k not in ("200", "429"))} for s, c in sorted(per_second.items())]
    return summary, rows


async def _clear_bucket(redis_url: str, harness: ApiHarness, key: str) -> bool | None:
    """Whether the key's Redis bucket already existed (a bucket shared with another deployment that has a key of the
    same id); it is deleted so that the measurement starts from a full bucket."""
    try:
        import redis.asyncio as aioredis

        from serve.app import rate_limit_prefix

        store = harness.store()
        try:
            name = f"{rate_limit_prefix(store)}{store.verify_api_key(key).id}"
        finally:
            store.close()
        r = aioredis.Redis.from_url(redis_url)
        try:
            existed = bool(await r.exists(name))
            await r.delete(name)
        finally:
            await r.aclose()
        return existed
    except Exception:  # noqa: BLE001 - informational
        return None


async def _ratelimit(harness: ApiHarness, opts: BenchApiOptions) -> PartResult:
    summaries, rows = [], []
    modes = ([opts.redis_url] if opts.redis_url else []) + [None]
    for redis_url in modes:
        s, r = await _ratelimit_mode(harness, opts, redis_url)
        summaries.append(s)
        rows += r
    headline = []
    for s in summaries:
        ratio = s["ratio_vs_one_bucket"]
        if s["mode"] == "redis":
            headline.append(("ratelimit (Redis, 4 replicas): allowed/expected", ratio, "0.9 .. 1.1",
                             ratio is not None and 0.9 <= ratio <= 1.1 and not s["other"]))
        else:
            headline.append((f"ratelimit (no Redis, {s['replicas']} replicas): allowed/expected", ratio,
                             f"~{s['replicas']} (per-replica buckets)", None))
    summary = {"endpoint": "GET /api/v1/workflows?limit=1", "modes": summaries,
               "note": None if opts.redis_url else "no --redis-url: only the per-replica (no Redis) mode was run",
               "goal": "with Redis: allowed within 10% of burst + rate x elapsed"}
    return PartResult("ratelimit", summary, rows, headline)


def _tiny_workflow(tag: str, i: int) -> dict:
    return {"name": f"bench-submit-{tag}-{i}",
            "tasks": [{"id": "a", "entrypoint": "orchestrator.runtime.builtins:sleep", "args": [0.01]},
                      {"id": "b", "entrypoint": "orchestrator.runtime.builtins:add", "args": [1, 2],
                       "depends_on": ["a"]}]}


async def _submit_once(harness: ApiHarness, opts: BenchApiOptions, backend: str,
                       db_url: str | None) -> tuple[dict, list]:
    from ..errors import NotFoundError

    url = await asyncio.to_thread(harness.start, db_url=db_url, redis_url=opts.redis_url)
    key = harness.key("operator", "bench-submit")
    tag = uuid.uuid4().hex[:6]
    store = harness.store()
    try:
        before = {r.run_id for r in store.list_workflows(limit=10**7)}
        n = opts.submit_count
        bodies = [json.dumps(_tiny_workflow(tag, i)).encode() for i in range(n)]
        headers = {**_auth(key), "content-type": "application/json"}
        rows: list[dict] = []
        cpu = CpuSampler().__enter__()
        async with _client(url, n + 8, timeout=120) as client:
            t0 = time.perf_counter()

            async def post(i: int) -> None:
                p0 = time.perf_counter()
                try:
                    r = await client.post(f"{V1}/workflows", content=bodies[i], headers=headers)
                    row = {"status": r.status_code}
                    if r.status_code == 201:
                        row["run_id"] = r.json().get("run_id")
                    else:
                        row["error"] = r.text[:300]
                except Exception as exc:  # noqa: BLE001
                    row = {"status": type(exc).__name__, "error": str(exc)[:300]}
                rows.append({"backend": backend, "i": i, "latency_ms": (time.perf_counter() - p0) * 1e3, **row})

            await asyncio.gather(*(post(i) for i in range(n)))
            submit_s = time.perf_counter() - t0
        rows.sort(key=lambda r: r["i"])
        created = [r["run_id"] for r in rows if r["status"] == 201]
        missing = []
        for rid in created:
            try:
                store.get_workflow(rid)
            except NotFoundError:
                missing.append(rid)
        after = [r for r in store.list_workflows(limit=10**7) if r.run_id not in before]
        ours = set(created)
        orphans = [r.run_id for r in after if r.run_id not in ours]  # recorded, but the client got no 201
        names = Counter(r.name for r in after)
        duplicate_names = {k: v for k, v in names.items() if v > 1}
        # every run to a terminal state
        deadline = time.perf_counter() + opts.submit_timeout_s
        final: dict[str, str] = {}
        while True:
            recs = {r.run_id: r for r in store.list_workflows(limit=10**7) if r.run_id in ours}
            final = {rid: recs[rid].status.value for rid in ours if rid in recs}
            if all(recs[rid].status.terminal for rid in recs) or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.25)
        terminal_s = time.perf_counter() - t0
        cpu.__exit__(None, None, None)
        all_terminal = all(s in ("succeeded", "failed", "cancelled") for s in final.values()) and len(final) == len(ours)
        for r in rows:
            if r.get("run_id"):
                r["final_status"] = final.get(r["run_id"])
    finally:
        store.close()
    codes = Counter(r["status"] for r in rows)
    klass = Counter("201" if c == 201 else ("4xx" if isinstance(c, int) and 400 <= c < 500 else
                                            "5xx" if isinstance(c, int) and c >= 500 else str(c)) for c in codes.elements())
    summary = {"backend": backend, "submitted": n, "statuses": {str(k): v for k, v in sorted(codes.items(), key=str)},
               "classes": dict(klass), "created_201": len(created), "duplicate_run_ids": len(created) - len(ours),
               "missing_in_store": missing, "store_new_runs": len(after),
               "store_count_matches": len(after) == len(created), "orphan_runs": orphans,
               "duplicate_names": duplicate_names, "submit_s": round(submit_s, 3),
               "submit_latency_ms": _q([r["latency_ms"] for r in rows]),
               "all_terminal": all_terminal, "time_to_all_terminal_s": round(terminal_s, 3),
               "final_statuses": dict(Counter(final.values())), "timeout_s": opts.submit_timeout_s,
               "cpu": cpu.result}
    summary["ok"] = (len(created) == n and not missing and summary["store_count_matches"] and not orphans
                     and not duplicate_names and summary["duplicate_run_ids"] == 0 and all_terminal
                     and set(final.values()) == {"succeeded"})
    return summary, rows


async def _submit(harness: ApiHarness, opts: BenchApiOptions) -> PartResult:
    summaries, rows = [], []
    s, r = await _submit_once(harness, opts, "sqlite", None)
    summaries.append(s)
    rows += r
    if opts.db_url:
        pg = PostgresDatabase(opts.db_url)
        db_url = await asyncio.to_thread(pg.__enter__)
        try:
            s, r = await _submit_once(harness, opts, "postgresql", db_url)
            summaries.append(s)
            rows += r
        finally:
            # nothing may hold a connection to the database when it is dropped
            await asyncio.to_thread(_leave_store, harness)
            await asyncio.to_thread(pg.__exit__, None, None, None)
    headline = [(f"submit ({s['backend']}): {s['created_201']}/{s['submitted']} 201, all succeeded in "
                 f"{s['time_to_all_terminal_s']:.1f} s", s["classes"], "all 201, none lost", s["ok"])
                for s in summaries]
    summary = {"endpoint": "POST /api/v1/workflows", "backends": summaries,
               "note": None if opts.db_url else "no --db-url: PostgreSQL not run"}
    return PartResult("submit", summary, rows, headline)


def _leave_store(harness: ApiHarness) -> None:
    from ray import serve

    serve.delete(APP_NAME)
    stop_orchestrator()
    harness.current = None
    harness.store_url = None


# ---- the run ------------------------------------------------------------------------------------------------------

def run_bench(opts: BenchApiOptions, log: Callable[[str], None] = print,
              on_part: Callable[[PartResult], None] | None = None) -> dict:
    """Run the chosen parts; returns the summary (also written to `<out>/summary.json`)."""
    if opts.db_url:
        PostgresDatabase(opts.db_url).admin.dispose()  # a bad URL is refused before Ray starts
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / f"data-{time.strftime('%Y%m%d-%H%M%S')}"
    data_dir.mkdir(parents=True, exist_ok=True)
    import ray

    from ..runtime.client import connect_ray

    ours = not ray.is_initialized()  # a Ray this run starts is stopped at its end
    # In the main thread: Ray's processes die with the thread that started them (PR_SET_PDEATHSIG), and the parts
    # start the API from worker threads.
    connect_ray(None, num_cpus=opts.num_cpus)
    harness = ApiHarness(data_dir, opts.host, opts.num_cpus, log)
    started = time.time()
    results: dict[str, PartResult] = {}
    failures: dict[str, str] = {}
    try:
        results, failures = asyncio.run(_run_parts(harness, opts, log, on_part, out))
    finally:
        harness.close()
        if ours:
            ray.shutdown()
    summary = {"machine": machine(), "started_at": started, "wall_s": round(time.time() - started, 1),
               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()
                           if k != "db_url"} | {"db_url": bool(opts.db_url)},
               "data_dir": str(data_dir),
               "parts": {name: r.summary for name, r in results.items()},
               "headline": [{"metric": m, "value": v, "goal": g, "met": ok} for r in results.values()
                            for m, v, g, ok in r.headline],
               "failures": failures, "notes": harness.notes}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


async def _run_parts(harness: ApiHarness, opts: BenchApiOptions, log, on_part, out: Path):
    from ..loaders import default_trace_dir, load_traces

    results: dict[str, PartResult] = {}
    failures: dict[str, str] = {}
    workflows = None
    if {"decisions", "analysis"} & set(opts.parts):
        workflows = await asyncio.to_thread(load_traces, default_trace_dir())
    for part in opts.parts:
        log(f"part {part} ...")
        t0 = time.perf_counter()
        try:
            if part == "decisions":
                wf = pick_trace(workflows, opts.decision_trace_tasks, family="montage")
                url = await asyncio.to_thread(harness.start, redis_url=opts.redis_url)
                res = await _decisions(url, harness.key("operator", "bench-decide"),
                                       wf.model_dump(mode="json", exclude_none=True), opts)
            elif part == "overhead":
                url = await asyncio.to_thread(harness.start, redis_url=opts.redis_url)
                res = await _overhead(url, harness.key("viewer", "bench-overhead"), opts, bool(opts.redis_url))
            elif part == "analysis":
                wf = pick_trace(workflows, opts.analysis_trace_tasks, lo=900, hi=1200)
                url = await asyncio.to_thread(harness.start, redis_url=opts.redis_url)
                res = await _analysis(url, harness.key("viewer", "bench-analyze"),
                                      wf.model_dump(mode="json", exclude_none=True), opts)
            elif part == "submit":
                res = await _submit(harness, opts)
            elif part == "ratelimit":
                res = await _ratelimit(harness, opts)
            else:  # pragma: no cover - parse_parts refuses it
                raise InvalidError(part)
        except Exception as exc:  # noqa: BLE001 - one part failing does not lose the others
            failures[part] = f"{type(exc).__name__}: {exc}"
            log(f"part {part} failed: {failures[part]}")
            continue
        res.summary["part_wall_s"] = round(time.perf_counter() - t0, 1)
        write_part(out, part, res.summary, res.rows)
        results[part] = res
        if on_part is not None:
            on_part(res)
    return results, failures

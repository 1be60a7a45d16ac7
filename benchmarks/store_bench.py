"""Time the state store's hot paths on SQLite and PostgreSQL: creating a 10,000-task workflow run and
applying batches of 1,000 status changes. Prints one table; run `python benchmarks/store_bench.py`."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from orchestrator.model import Resources, TaskSpec, Workflow
from orchestrator.states import TaskStatus
from orchestrator.store import Store, TaskChange

POSTGRES_URL = os.environ.get("ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def make_workflow(n: int) -> Workflow:
    """A layered DAG: each task depends on up to two tasks of the previous layer of 100."""
    tasks = []
    for i in range(n):
        deps = [f"t{j}" for j in (i - 100, i - 99) if j >= 0 and j // 100 == i // 100 - 1]
        tasks.append(TaskSpec(id=f"t{i}", category=f"c{i % 7}", depends_on=deps,
                              resources=Resources(cpus=1, memory=2**30)))
    return Workflow(name="bench", tasks=tasks)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'state.db'}"


@contextmanager
def postgres_url() -> Iterator[str]:
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"orch_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench(url: str, wf: Workflow, batch: int, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in (
        "open + migrate", f"create_workflow ({len(wf.tasks)} tasks)",
        f"apply {batch} pending->ready (read)", f"apply {batch} ready->running (expected)",
        f"apply {batch} running->succeeded (expected)", f"get_tasks ({len(wf.tasks)})", "task_counts",
        "events (1000)")}
    keys = list(times)
    opened: list[Store] = []
    times[keys[0]].append(timed(lambda: opened.append(Store.open(url))))
    store = opened[0]
    try:
        for _ in range(runs):
            run_ids: list[str] = []
            times[keys[1]].append(timed(lambda: run_ids.append(store.create_workflow(wf, "fifo"))))
            run_id = run_ids[0]
            ids = [t.id for t in wf.tasks]
            for start in range(0, len(ids), batch):
                chunk = ids[start:start + batch]
                steps = (
                    (keys[2], [TaskChange(run_id, t, TaskStatus.READY) for t in chunk]),
                    (keys[3], [TaskChange(run_id, t, TaskStatus.RUNNING, attempt=1, node="node-1",
                                          expected=TaskStatus.READY) for t in chunk]),
                    (keys[4], [TaskChange(run_id, t, TaskStatus.SUCCEEDED, result_ref=f"result://{run_id}/{t}",
                                          expected=TaskStatus.RUNNING) for t in chunk]),
                )
                for key, changes in steps:
                    times[key].append(timed(lambda changes=changes: store.apply(changes)))
            times[keys[5]].append(timed(lambda: store.get_tasks(run_id)))
            times[keys[6]].append(timed(lambda: store.task_counts(run_id)))
            times[keys[7]].append(timed(lambda: store.events(run_id=run_id, limit=1000)))
    finally:
        store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3, help="workflow runs per backend")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    wf = make_workflow(args.tasks)
    results = {}
    for backend in args.backends.split(","):
        with (sqlite_url() if backend == "sqlite" else postgres_url()) as url:
            results[backend] = bench(url, wf, args.batch, args.runs)

    backends = list(results)
    header = f"{'operation':<44}" + "".join(f"{b + ' min':>16}{b + ' median':>18}{b + ' p95':>16}"
                                            for b in backends)
    print(header)
    print("-" * len(header))
    for key in results[backends[0]]:
        line = f"{key:<44}"
        for b in backends:
            samples = sorted(results[b][key])
            p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))]
            line += f"{samples[0]:>13.1f} ms{statistics.median(samples):>15.1f} ms{p95:>13.1f} ms"
        print(line)
    print(f"\n{args.runs} run(s) per backend; each apply row is {args.runs * args.tasks // args.batch} batches; "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

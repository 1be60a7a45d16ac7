"""`Store`: the durable state of workflow runs in SQLite or PostgreSQL, with an event outbox written in the
same transaction as every state change it describes.

Every status change goes through `apply()`, which checks it against the one transition table in
`orchestrator.states`; a batch is all-or-nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine

from ..errors import (
    InvalidTransitionError,
    LeaseLostError,
    StoreConflictError,
    StoreError,
    StoreNotFoundError,
    StoreUnavailableError,
)
from ..model import Workflow
from ..states import TERMINAL_TASK_STATUSES, TaskStatus, WorkflowStatus, task_transition, workflow_transition
from . import results as result_codec
from .database import (
    OUTBOX_LOCK_KEY,
    WalCheckpointer,
    create_engine,
    json_dumps,
    mask_url,
    parse_url,
    upgrade_to_head,
)
from .records import (
    ApiKeyRecord,
    Change,
    DecisionRecord,
    EventRecord,
    ExecutionRecord,
    MetricRecord,
    OptimizationRecord,
    PredictionActual,
    PredictionRecord,
    RunNote,
    SystemSample,
    TaskChange,
    TaskRecord,
    WorkflowRecord,
)
from .schema import (
    ApiKeyRow,
    DecisionRow,
    EventDeliveryRow,
    EventRow,
    OrchestratorLeaseRow,
    PerformanceMetricRow,
    ResourcePredictionRow,
    ResultRow,
    SystemStateSampleRow,
    TaskDependencyRow,
    TaskExecutionRow,
    TaskRow,
    WorkflowOptimizationRow,
    WorkflowRow,
)

DATA_DIR_ENV = "ORCHESTRATOR_DATA_DIR"
DEFAULT_DATA_DIR = ".orchestrator"
TEXT_LIMIT = 64 * 1024  # bytes kept of captured stdout/stderr/error text (the tail)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# SQLite binds at most 999 parameters per statement before 3.32, 32766 since.
_SQLITE_IN_CHUNK = 8000 if sqlite3.sqlite_version_info >= (3, 32) else 900
_API_KEY_TOUCH_INTERVAL = 60.0  # seconds between last_used_at updates of one key

W = WorkflowRow.__table__
T = TaskRow.__table__
D = TaskDependencyRow.__table__
E = EventRow.__table__
X = TaskExecutionRow.__table__
R = ResultRow.__table__
K = ApiKeyRow.__table__
L = OrchestratorLeaseRow.__table__
_LEASE = "orchestrator"  # the one lease of a store

_WORKFLOW_COLUMNS = (W.c.run_id, W.c.name, W.c.family, W.c.policy, W.c.status, W.c.error, W.c.created_at,
                     W.c.started_at, W.c.finished_at, W.c.updated_at)
_TASK_COLUMNS = tuple(T.c[f.name] for f in fields(TaskRecord))
_UNFINISHED = (WorkflowStatus.PENDING.value, WorkflowStatus.RUNNING.value)
_STATUS_TEXT = {s: s.value for s in TaskStatus}  # plain lookups: Enum.value is slow in a 1,000-change loop
_STATUS_BY_TEXT = {s.value: s for s in TaskStatus}

# One statement for every task a batch moves (executemany on the net change per task, in key order). A NULL
# value keeps the stored one; the status guard makes the update a no-op unless the stored status is the one
# the move was checked against.
_TASK_UPDATE_SQL = (
    "UPDATE tasks SET status = ?, attempt = COALESCE(?, attempt), node = COALESCE(?, node), "
    "error = CASE WHEN ? THEN NULL ELSE COALESCE(?, error) END, result_ref = COALESCE(?, result_ref), "
    "ready_at = COALESCE(?, ready_at), started_at = COALESCE(?, started_at), "
    "finished_at = COALESCE(?, finished_at), next_attempt_at = COALESCE(?, next_attempt_at) "
    "WHERE run_id = ? AND task_id = ? AND status = ?"
)
# The same on PostgreSQL as one statement over arrays (one round trip instead of one per task).
_TASK_UPDATE_PG = (
    "UPDATE tasks AS t SET status = v.status, attempt = COALESCE(v.attempt, t.attempt), "
    "node = COALESCE(v.node, t.node), "
    "error = CASE WHEN v.clear_error THEN NULL ELSE COALESCE(v.error, t.error) END, "
    "result_ref = COALESCE(v.result_ref, t.result_ref), ready_at = COALESCE(v.ready_at, t.ready_at), "
    "started_at = COALESCE(v.started_at, t.started_at), finished_at = COALESCE(v.finished_at, t.finished_at), "
    "next_attempt_at = COALESCE(v.next_attempt_at, t.next_attempt_at) "
    "FROM unnest(%s::text[], %s::int[], %s::text[], %s::bool[], %s::text[], %s::text[], %s::float8[], "
    "%s::float8[], %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[]) AS v(status, attempt, node, "
    "clear_error, error, result_ref, ready_at, started_at, finished_at, next_attempt_at, run_id, task_id, "
    "from_status) "
    "WHERE t.run_id = v.run_id AND t.task_id = v.task_id AND t.status = v.from_status"
)
_EVENT_COLUMNS = ("run_id", "task_id", "type", "payload", "created_at")
_DECISION_COLUMNS = ("run_id", "task_id", "policy", "node", "input", "output", "confidence", "latency_us",
                     "model_version", "created_at")
_TASK_INSERT_COLUMNS = ("run_id", "task_id", "position", "category", "status", "attempt", "priority",
                        "cpus", "memory", "gpus")
_WORKFLOW_UPDATE = (
    sa.update(W)
    .where(W.c.run_id == sa.bindparam("k_run_id"), W.c.status == sa.bindparam("k_from"))
    .values(
        status=sa.bindparam("v_status"),
        error=sa.func.coalesce(sa.bindparam("v_error", type_=sa.Text), W.c.error),
        started_at=sa.func.coalesce(sa.bindparam("v_started_at", type_=sa.Double), W.c.started_at),
        finished_at=sa.func.coalesce(sa.bindparam("v_finished_at", type_=sa.Double), W.c.finished_at),
        updated_at=sa.bindparam("v_updated_at"),
    )
)


# The PostgreSQL write path of `apply` (`Store._apply_pg`), as driver SQL.
_LOCK_WORKFLOWS_PG = "SELECT run_id, status FROM workflows WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE"
_LOCK_TASKS_PG = ("SELECT task_id, status FROM tasks WHERE run_id = %s AND task_id = ANY(%s) "
                  "ORDER BY task_id FOR UPDATE")
_NO_HASH_OR_MERGE_JOIN_PG = ("SELECT set_config('enable_hashjoin', 'off', true), "
                             "set_config('enable_mergejoin', 'off', true)")
_WORKFLOW_UPDATE_PG = (
    "UPDATE workflows SET status = %s, error = COALESCE(%s, error), started_at = COALESCE(%s, started_at), "
    "finished_at = COALESCE(%s, finished_at), updated_at = %s WHERE run_id = %s AND status = %s"
)
_INSERT_EVENT_PG = (f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "
                    "VALUES (%s, %s, %s, CAST(%s AS jsonb), %s)")
_INSERT_DECISION_PG = (f"INSERT INTO decisions ({', '.join(_DECISION_COLUMNS)}) "
                       "VALUES (%s, %s, %s, %s, CAST(%s AS jsonb), CAST(%s AS jsonb), %s, %s, %s, %s)")


def _unchecked_tasks(changes: Sequence[Change]) -> list[tuple[str, list[str]]]:
    """(run id, sorted task ids) of the tasks whose changes give no `expected`, whose stored status must be read
    (and locked, on PostgreSQL) first; runs sorted."""
    wanted: dict[str, set[str]] = {}
    for c in changes:
        if isinstance(c, TaskChange) and c.expected is None:
            wanted.setdefault(c.run_id, set()).add(c.task_id)
    return [(run_id, sorted(wanted[run_id])) for run_id in sorted(wanted)]


def _touched_runs(changes: Sequence[Change]) -> list[str]:
    """Runs whose tasks the batch moves (their `updated_at` moves too)."""
    return sorted({c.run_id for c in changes if isinstance(c, TaskChange)})


def _decision_rows(decisions: Sequence[DecisionRecord], now: float) -> list[tuple[Any, ...]]:
    """Decision records as rows in `_DECISION_COLUMNS` order, JSON fields encoded."""
    return [(d.run_id, d.task_id, d.policy, d.node,
             None if d.input is None else json_dumps(d.input),
             None if d.output is None else json_dumps(d.output),
             d.confidence, d.latency_us, d.model_version,
             now if d.created_at is None else d.created_at) for d in decisions]


def _execution_rows(executions: Sequence[ExecutionRecord]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Execution records as (columns, rows) for a bulk insert."""
    params = _execution_params(executions)
    return tuple(params[0]), [tuple(p.values()) for p in params]


def _task_update_arrays(rows: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Task update rows as the column arrays `_TASK_UPDATE_PG` takes (one array type per column)."""
    columns = [list(column) for column in zip(*rows)]
    for index in (6, 7, 8, 9):  # times: one array type even if a caller passed an int
        columns[index] = [None if v is None else float(v) for v in columns[index]]
    columns[1] = [None if v is None else int(v) for v in columns[1]]
    return tuple(columns)


class _StaleBatch(Exception):
    """A guarded update matched fewer rows than planned: some stored status was not the expected one."""


class Store:
    """The orchestrator's durable state. Open with `Store.open()`; thread-safe; close with `close()`."""

    def __init__(self, engine: Engine, url: URL, data_dir: Path, storage_dir: Path):
        """Use `Store.open()`, which also migrates the schema."""
        self.engine = engine
        self.url = mask_url(url)  # password masked
        self.dialect: str = engine.dialect.name  # "sqlite" | "postgresql"
        self.data_dir = data_dir
        self.storage_dir = storage_dir
        self._checkpointer = WalCheckpointer(engine) if self.dialect == "sqlite" else None

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(cls, url: str | None = None, data_dir: str | Path | None = None,
             storage_dir: str | Path | None = None) -> Store:
        """Open (creating and migrating if needed) the store at `url`.

        `url` None means SQLite at `<data_dir>/state.db`; `data_dir` defaults to $ORCHESTRATOR_DATA_DIR or
        `./.orchestrator`. Results too large to keep inline go to `storage_dir`, by default `<data_dir>/results`
        (for an explicit SQLite URL without `data_dir`: a `results` folder beside the database file).
        """
        explicit_data_dir = data_dir is not None
        data = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()
        if url is None:
            url = f"sqlite:///{data / 'state.db'}"
        parsed = parse_url(url)
        if storage_dir is not None:
            storage = Path(storage_dir).expanduser().resolve()
        elif parsed.get_backend_name() == "sqlite" and not explicit_data_dir:
            storage = Path(parsed.database).expanduser().resolve().parent / "results"
        else:
            storage = data / "results"
        engine = None
        try:
            engine = create_engine(parsed)
            upgrade_to_head(engine)
        except Exception as exc:
            if engine is not None:
                engine.dispose()
            raise _open_error(parsed, exc) from exc
        return cls(engine, parsed, data, storage)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url_masked(self) -> str:
        """The store URL with its password masked (the same as `url`)."""
        return self.url

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ------------------------------------------------------------------ workflows and state changes

    def create_workflow(self, wf: Workflow, policy: str, run_id: str | None = None) -> str:
        """Record a new run of `wf` and return its run id; every task starts `pending`.

        One transaction: the workflow row, its tasks, their dependencies and a `workflow.submitted` event.
        The runtime moves tasks without parents to `ready` itself (through `apply`), so that move has its event.
        """
        return self.create_workflows([(wf, policy, run_id)])[0]

    def create_workflows(self, runs: Sequence[tuple[Workflow, str, str | None]]) -> list[str]:
        """Record several new runs, each (workflow, policy, run id or None), in one transaction: all or none.
        Returns their run ids in order. A run id that is taken, or given twice, refuses the whole batch."""
        now = time.time()
        pending = TaskStatus.PENDING.value
        workflow_rows, task_rows, dependency_rows, events, run_ids = [], [], [], [], []
        for wf, policy, run_id in runs:
            run_id = run_id if run_id is not None else new_run_id(wf.name)
            if not _RUN_ID.match(run_id):
                raise StoreError(f"Run id '{run_id}' must be 1-128 letters, digits, '.', '_' or '-', "
                                 "starting with a letter or digit")
            if run_id in run_ids:
                raise _duplicate_run(run_id)
            run_ids.append(run_id)
            policy = policy or wf.policy or ""
            # The full model, serialised by pydantic (fast even for 10,000 tasks).
            workflow_rows.append((run_id, wf.name, wf.family, policy, pending, wf.model_dump_json(), now, now))
            task_rows.extend((run_id, t.id, i, t.category, pending, 0, t.priority, t.resources.cpus,
                              t.resources.memory, t.resources.gpus) for i, t in enumerate(wf.tasks))
            dependency_rows.extend((run_id, t.id, parent) for t in wf.tasks for parent in t.depends_on)
            payload = {"run_id": run_id, "name": wf.name, "family": wf.family, "policy": policy,
                       "status": pending, "tasks": len(wf.tasks), "at": now}
            events.append((run_id, None, "workflow.submitted", json_dumps(payload), now))
        if not run_ids:
            return []
        # A constraint violation here can only be a concurrent create with the same run id winning the race.
        with self._transaction("create workflow run", on_conflict=lambda: _duplicate_run(*run_ids)) as conn:
            for chunk in _chunks(run_ids, _SQLITE_IN_CHUNK):
                taken = conn.execute(sa.select(W.c.run_id).where(W.c.run_id.in_(chunk))).first()
                if taken is not None:
                    raise _duplicate_run(taken[0])
            self._bulk_insert(conn, "workflows", ("run_id", "name", "family", "policy", "status", "spec",
                                                  "created_at", "updated_at"), workflow_rows)
            self._bulk_insert(conn, "tasks", _TASK_INSERT_COLUMNS, task_rows)
            self._bulk_insert(conn, "task_dependencies", ("run_id", "task_id", "depends_on"), dependency_rows)
            self._append_events(conn, events)
        return run_ids

    def apply(self, changes: Sequence[Change], executions: Sequence[ExecutionRecord] = (),
              decisions: Sequence[DecisionRecord] = (), batch: tuple[str, int] | None = None) -> None:
        """Apply a batch of task and workflow status changes in one transaction, one outbox event each.

        Each move is checked against the transition table, from the status given as `expected` or else the
        stored one (or the one an earlier change in the same batch set). If any move is illegal or names an
        unknown task or run, nothing of the batch is applied: InvalidTransitionError or StoreError.
        `executions` and `decisions` (history rows) are written in the same transaction.

        `batch` = (lease owner, sequence number): the write is fenced by the lease (LeaseLostError, nothing
        applied, if another orchestrator holds it) and records the number, which `batch_written` reads back after
        a commit that was cut off.
        """
        now = time.time()
        if not changes:
            if executions or decisions or batch is not None:
                with self._transaction("record attempts and decisions") as conn:
                    if batch is not None:
                        self._mark_batch(conn, batch)
                    if executions:
                        self._bulk_insert(conn, "task_executions", *_execution_rows(executions))
                    if decisions:
                        self._bulk_insert(conn, "decisions", _DECISION_COLUMNS, _decision_rows(decisions, now))
            return
        write = self._apply_pg if self.dialect == "postgresql" else self._apply_sqlite
        try:
            with self._transaction("apply state changes") as conn:
                if batch is not None:
                    self._mark_batch(conn, batch)
                write(conn, changes, executions, decisions, now)
        except _StaleBatch:
            raise self._explain_stale_batch(changes) from None

    def _mark_batch(self, conn: sa.Connection, batch: tuple[str, int]) -> None:
        owner, seq = batch
        updated = conn.execute(sa.update(L).where(L.c.name == _LEASE, L.c.owner == owner)
                               .values(written_seq=seq)).rowcount
        if updated != 1:
            raise LeaseLostError(f"The orchestrator '{owner}' no longer holds the lease of the store at {self.url}: "
                                 "another orchestrator took it over; nothing of this write was applied")

    def batch_written(self, owner: str, seq: int) -> bool:
        """Whether `owner`'s write batch number `seq` (or a later one) was committed (see `apply`)."""
        with self._connection("read the last written batch") as conn:
            written = conn.execute(sa.select(L.c.written_seq).where(L.c.name == _LEASE, L.c.owner == owner)
                                   ).scalar()
        return written is not None and written >= seq

    def _apply_sqlite(self, conn: sa.Connection, changes: Sequence[Change], executions: Sequence[ExecutionRecord],
                      decisions: Sequence[DecisionRecord], now: float) -> None:
        """`apply` on SQLite, whose writers are serialised already (BEGIN IMMEDIATE): driver-level SQL on the
        connection's own cursor, because this runs once per orchestrator iteration."""
        if executions:
            self._bulk_insert(conn, "task_executions", *_execution_rows(executions))
        if decisions:
            self._bulk_insert(conn, "decisions", _DECISION_COLUMNS, _decision_rows(decisions, now))
        run_ids = sorted({c.run_id for c in changes})
        stored_workflows = {run_id: status for run_id, status in conn.exec_driver_sql(
            f"SELECT run_id, status FROM workflows WHERE run_id IN ({','.join('?' * len(run_ids))})",
            tuple(run_ids))}
        stored_tasks: dict[tuple[str, str], str] = {}
        for run_id, ids in _unchecked_tasks(changes):
            for chunk in _chunks(ids, _SQLITE_IN_CHUNK):
                rows = conn.exec_driver_sql(
                    f"SELECT task_id, status FROM tasks WHERE run_id = ? AND task_id IN ({','.join('?' * len(chunk))})",
                    (run_id, *chunk))
                stored_tasks.update(((run_id, task_id), status) for task_id, status in rows)
        task_rows, workflow_params, events = _plan(changes, stored_tasks, stored_workflows, now)
        if task_rows and _sqlite_executemany(conn, _TASK_UPDATE_SQL, task_rows) != len(task_rows):
            raise _StaleBatch()
        if workflow_params and conn.execute(_WORKFLOW_UPDATE, workflow_params).rowcount != len(workflow_params):
            raise _StaleBatch()
        touched = _touched_runs(changes)
        if touched:
            conn.exec_driver_sql(f"UPDATE workflows SET updated_at = ? WHERE run_id IN "
                                 f"({','.join('?' * len(touched))})", (now, *touched))
        self._append_events(conn, events)

    def _apply_pg(self, conn: sa.Connection, changes: Sequence[Change], executions: Sequence[ExecutionRecord],
                  decisions: Sequence[DecisionRecord], now: float) -> None:
        """`apply` on PostgreSQL in three round trips instead of one per statement: the row locks and stored
        statuses in one pipeline, every write of the batch in a second, then the commit (psycopg pipeline mode
        on the transaction's connection).

        Lock order, the same in every batch so that concurrent batches cannot deadlock: workflow rows, then task
        rows (both sorted), then the outbox lock."""
        pg = conn.connection.dbapi_connection
        with pg.pipeline():
            workflow_cursor = pg.cursor()
            workflow_cursor.execute(_LOCK_WORKFLOWS_PG, (sorted({c.run_id for c in changes}),))
            task_cursors = []
            for run_id, ids in _unchecked_tasks(changes):
                cursor = pg.cursor()
                cursor.execute(_LOCK_TASKS_PG, (run_id, ids))
                task_cursors.append((run_id, cursor))
        stored_workflows = dict(workflow_cursor.fetchall())
        stored_tasks = {(run_id, task_id): status
                        for run_id, cursor in task_cursors for task_id, status in cursor.fetchall()}
        task_rows, workflow_params, events = _plan(changes, stored_tasks, stored_workflows, now)
        task_cursor = workflow_update = None
        with pg.pipeline():
            cursor = pg.cursor()
            if executions:
                columns, rows = _execution_rows(executions)
                cursor.executemany(f"INSERT INTO task_executions ({', '.join(columns)}) "
                                   f"VALUES ({', '.join(['%s'] * len(columns))})", rows)
            if decisions:
                cursor.executemany(_INSERT_DECISION_PG, _decision_rows(decisions, now))
            if task_rows:
                # A run's rows are often newer than the table statistics, which then make a hash join over a
                # scan of the whole table look cheap. A batch is at most a few thousand primary-key lookups.
                cursor.execute(_NO_HASH_OR_MERGE_JOIN_PG)
                task_cursor = pg.cursor()
                task_cursor.execute(_TASK_UPDATE_PG, _task_update_arrays(task_rows))
            if workflow_params:
                workflow_update = pg.cursor()
                workflow_update.executemany(_WORKFLOW_UPDATE_PG, [
                    (p["v_status"], p["v_error"], p["v_started_at"], p["v_finished_at"], p["v_updated_at"],
                     p["k_run_id"], p["k_from"]) for p in workflow_params])
            touched = _touched_runs(changes)
            if touched:
                cursor.execute("UPDATE workflows SET updated_at = %s WHERE run_id = ANY(%s)", (now, touched))
            if events:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))  # see `_append_events`
                cursor.executemany(_INSERT_EVENT_PG, events)
        if task_cursor is not None and task_cursor.rowcount != len(task_rows):
            raise _StaleBatch()
        if workflow_update is not None and workflow_update.rowcount != len(workflow_params):
            raise _StaleBatch()

    def _explain_stale_batch(self, changes: Sequence[Change]) -> Exception:
        """After a rolled-back batch whose guarded updates missed: name the first change that was wrong."""
        seen: set[tuple[str, str]] = set()
        firsts = []
        for i, c in enumerate(changes):
            if isinstance(c, TaskChange) and (c.run_id, c.task_id) not in seen:
                seen.add((c.run_id, c.task_id))
                if c.expected is not None:
                    firsts.append((i, c))
        with self._connection("check state changes") as conn:
            for i, c in firsts:
                status = conn.execute(sa.select(T.c.status).where(
                    T.c.run_id == c.run_id, T.c.task_id == c.task_id)).scalar()
                if status is None:
                    return _unknown_task(c.run_id, c.task_id, i, len(changes))
                if status != c.expected.value:
                    return InvalidTransitionError(
                        f"Task '{c.task_id}' of workflow run '{c.run_id}' is '{status}', not the expected "
                        f"'{c.expected.value}' (change {i + 1} of {len(changes)}); nothing in the batch was "
                        "applied. Re-read the task or leave `expected` unset to check against the stored status"
                    )
        return StoreConflictError(f"A batch of {len(changes)} state changes conflicted with a concurrent writer on "
                          f"{self.url} and was rolled back; apply it again")

    def _append_events(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Append (run_id, task_id, type, payload JSON, created_at) rows to the outbox."""
        if not rows:
            return
        if self.dialect == "postgresql":
            # Held to commit: outbox ids then commit in id order, so a reader that has seen id n will never
            # later find a smaller id appear (SQLite writers are serialised already).
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
        self._bulk_insert(conn, "events", _EVENT_COLUMNS, rows)

    def _bulk_insert(self, conn: sa.Connection, table: str, columns: Sequence[str],
                     rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert many rows fast: COPY on PostgreSQL, one prepared executemany on SQLite."""
        if not rows:
            return
        if self.dialect == "postgresql":
            cursor = conn.connection.dbapi_connection.cursor()  # same connection, same transaction
            try:
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            finally:
                cursor.close()
        else:
            _sqlite_executemany(
                conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)

    def _sql(self, text: str) -> str:
        """Driver SQL written with ? placeholders, in the dialect's parameter style."""
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    # ------------------------------------------------------------------ reads

    def get_workflow(self, run_id: str) -> WorkflowRecord:
        with self._connection("read workflow run") as conn:
            row = conn.execute(sa.select(*_WORKFLOW_COLUMNS).where(W.c.run_id == run_id)).first()
        if row is None:
            raise _unknown_run(run_id)
        return _workflow_record(row)

    def list_workflows(self, status: WorkflowStatus | None = None, limit: int = 50) -> list[WorkflowRecord]:
        """The newest runs first, optionally only those with `status`."""
        query = sa.select(*_WORKFLOW_COLUMNS).order_by(W.c.created_at.desc(), W.c.run_id).limit(limit)
        if status is not None:
            query = query.where(W.c.status == WorkflowStatus(status).value)
        with self._connection("list workflow runs") as conn:
            return [_workflow_record(row) for row in conn.execute(query)]

    def get_tasks(self, run_id: str) -> list[TaskRecord]:
        """Every task of the run, in the order of the workflow spec."""
        with self._connection("read tasks") as conn:
            rows = conn.execute(sa.select(*_TASK_COLUMNS).where(T.c.run_id == run_id).order_by(T.c.position)).all()
            if not rows:
                self._require_run(conn, run_id)
        return [TaskRecord(*row[:4], TaskStatus(row[4]), *row[5:]) for row in rows]

    def task_counts(self, run_id: str) -> dict[str, int]:
        """How many tasks of the run are in each status; every status is a key, zero included."""
        counts = {s.value: 0 for s in TaskStatus}
        with self._connection("count tasks") as conn:
            rows = conn.execute(sa.select(T.c.status, sa.func.count()).where(T.c.run_id == run_id)
                                .group_by(T.c.status)).all()
            if not rows:
                self._require_run(conn, run_id)
        counts.update({status: n for status, n in rows})
        return counts

    def unfinished_workflows(self) -> list[str]:
        """Run ids still pending or running, oldest first: what a restarted runtime must resume."""
        query = sa.select(W.c.run_id).where(W.c.status.in_(_UNFINISHED)).order_by(W.c.created_at, W.c.run_id)
        with self._connection("list unfinished runs") as conn:
            return list(conn.execute(query).scalars())

    def load_spec(self, run_id: str) -> Workflow:
        with self._connection("read workflow spec") as conn:
            spec = conn.execute(sa.select(W.c.spec).where(W.c.run_id == run_id)).scalar()
        if spec is None:
            raise _unknown_run(run_id)
        return Workflow.model_validate(spec)

    def events(self, run_id: str | None = None, after_id: int = 0, limit: int = 1000,
               type_prefix: str | None = None) -> list[EventRecord]:
        """Outbox events with id > `after_id`, oldest first."""
        query = sa.select(E.c.id, E.c.run_id, E.c.task_id, E.c.type, E.c.payload, E.c.created_at).where(
            E.c.id > after_id).order_by(E.c.id).limit(limit)
        if run_id is not None:
            query = query.where(E.c.run_id == run_id)
        if type_prefix:
            query = query.where(E.c.type.startswith(type_prefix, autoescape=True))
        with self._connection("read events") as conn:
            return [EventRecord(*row) for row in conn.execute(query)]

    def latest_event_id(self) -> int:
        with self._connection("read events") as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(E.c.id), 0))).scalar_one()

    # ------------------------------------------------------------------ history: executions, decisions, ...

    def record_executions(self, rows: Sequence[ExecutionRecord]) -> None:
        """Record finished (or interrupted) task attempts; captured text keeps its last 64 KiB."""
        if not rows:
            return
        params = _execution_params(rows)

        def unknown_task() -> StoreError:
            return StoreError("Cannot record executions: some name a task that is not in the store "
                              f"(first row: run '{rows[0].run_id}', task '{rows[0].task_id}')")

        with self._transaction("record executions", on_conflict=unknown_task) as conn:
            conn.execute(sa.insert(X), params)

    def executions(self, run_id: str, task_id: str | None = None) -> list[ExecutionRecord]:
        query = sa.select(*(X.c[f.name] for f in fields(ExecutionRecord))).where(X.c.run_id == run_id)
        if task_id is not None:
            query = query.where(X.c.task_id == task_id)
        with self._connection("read executions") as conn:
            return [ExecutionRecord(*row) for row in conn.execute(query.order_by(X.c.id))]

    def record_decisions(self, rows: Sequence[DecisionRecord]) -> None:
        self._insert_records(DecisionRow.__table__, rows, "record decisions")

    def decisions(self, run_id: str, limit: int | None = None) -> list[DecisionRecord]:
        return self._select_records(DecisionRow.__table__, DecisionRecord,
                                    DecisionRow.__table__.c.run_id == run_id, limit=limit)

    def record_predictions(self, rows: Sequence[PredictionRecord]) -> None:
        self._insert_records(ResourcePredictionRow.__table__, rows, "record predictions")

    def update_prediction_actuals(self, rows: Sequence[PredictionActual]) -> int:
        """Fill what tasks really used into their predictions; returns how many predictions were updated."""
        P = ResourcePredictionRow.__table__
        values = {
            "actual_runtime": sa.func.coalesce(sa.bindparam("v_runtime", type_=sa.Double), P.c.actual_runtime),
            "actual_cpu": sa.func.coalesce(sa.bindparam("v_cpu", type_=sa.Double), P.c.actual_cpu),
            "actual_memory": sa.func.coalesce(sa.bindparam("v_memory", type_=sa.Double), P.c.actual_memory),
        }
        for_task = sa.update(P).where(P.c.run_id == sa.bindparam("k_run_id"),
                                      P.c.task_id == sa.bindparam("k_task_id")).values(**values)
        for_version = for_task.where(P.c.model_version == sa.bindparam("k_version"))
        updated = 0
        with self._transaction("update prediction actuals") as conn:
            for statement, subset in ((for_task, [r for r in rows if r.model_version is None]),
                                      (for_version, [r for r in rows if r.model_version is not None])):
                if subset:
                    params = [{"k_run_id": r.run_id, "k_task_id": r.task_id, "v_runtime": r.runtime,
                               "v_cpu": r.cpu, "v_memory": r.memory,
                               **({"k_version": r.model_version} if r.model_version is not None else {})}
                              for r in subset]
                    updated += conn.execute(statement, params).rowcount
        return updated

    def predictions(self, run_id: str | None = None, category: str | None = None,
                    with_actuals: bool = False, limit: int | None = None) -> list[PredictionRecord]:
        P = ResourcePredictionRow.__table__
        conditions = []
        if run_id is not None:
            conditions.append(P.c.run_id == run_id)
        if category is not None:
            conditions.append(P.c.category == category)
        if with_actuals:
            conditions.append(P.c.actual_runtime.is_not(None))
        return self._select_records(P, PredictionRecord, *conditions, limit=limit)

    def record_metric(self, name: str, value: float, labels: dict[str, Any] | None = None,
                      run_id: str | None = None) -> None:
        self.record_metrics([MetricRecord(name, value, labels or {}, run_id)])

    def record_metrics(self, rows: Sequence[MetricRecord]) -> None:
        self._insert_records(PerformanceMetricRow.__table__, rows, "record metrics")

    def metrics(self, name: str | None = None, run_id: str | None = None,
                limit: int | None = None) -> list[MetricRecord]:
        M = PerformanceMetricRow.__table__
        conditions = [c for c in (M.c.name == name if name is not None else None,
                                  M.c.run_id == run_id if run_id is not None else None) if c is not None]
        return self._select_records(M, MetricRecord, *conditions, limit=limit)

    def record_system_samples(self, rows: Sequence[SystemSample]) -> None:
        self._insert_records(SystemStateSampleRow.__table__, rows, "record system samples", time_field="ts")

    def system_samples(self, since: float | None = None, node: str | None = None,
                       limit: int | None = None) -> list[SystemSample]:
        S = SystemStateSampleRow.__table__
        conditions = [c for c in (S.c.ts >= since if since is not None else None,
                                  S.c.node == node if node is not None else None) if c is not None]
        return self._select_records(S, SystemSample, *conditions, limit=limit)

    def record_optimization(self, kind: str, description: str, params: dict[str, Any] | None = None,
                            predicted_gain: float | None = None, run_id: str | None = None,
                            workflow: str | None = None) -> int:
        """Record an applied or proposed workflow optimisation; returns its id (for `verify_optimization`)."""
        row = OptimizationRecord(kind, description, params or {}, predicted_gain, None, run_id, workflow)
        with self._transaction("record optimization") as conn:
            params_row = _record_params(row, time.time(), "created_at")
            return conn.execute(sa.insert(WorkflowOptimizationRow.__table__).values(**params_row)
                                .returning(WorkflowOptimizationRow.__table__.c.id)).scalar_one()

    def verify_optimization(self, optimization_id: int, verified_gain: float) -> None:
        O = WorkflowOptimizationRow.__table__
        with self._transaction("verify optimization") as conn:
            if conn.execute(sa.update(O).where(O.c.id == optimization_id)
                            .values(verified_gain=verified_gain)).rowcount == 0:
                raise StoreError(f"No workflow optimization with id {optimization_id}")

    def optimizations(self, run_id: str | None = None, workflow: str | None = None) -> list[OptimizationRecord]:
        O = WorkflowOptimizationRow.__table__
        conditions = [c for c in (O.c.run_id == run_id if run_id is not None else None,
                                  O.c.workflow == workflow if workflow is not None else None) if c is not None]
        return self._select_records(O, OptimizationRecord, *conditions)

    def _insert_records(self, table: sa.Table, rows: Sequence[Any], action: str,
                        time_field: str = "created_at") -> None:
        if not rows:
            return
        now = time.time()
        params = [_record_params(r, now, time_field) for r in rows]
        with self._transaction(action) as conn:
            conn.execute(sa.insert(table), params)

    def _select_records(self, table: sa.Table, record_type: type, *conditions: Any,
                        limit: int | None = None) -> list[Any]:
        query = sa.select(*(table.c[f.name] for f in fields(record_type))).where(*conditions).order_by(table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._connection(f"read {table.name}") as conn:
            return [record_type(*row) for row in conn.execute(query)]

    # ------------------------------------------------------------------ results

    def save_result(self, run_id: str, task_id: str, value: Any) -> str:
        """Store a task's result and return its reference (`result://<run_id>/<task_id>`); replaces any earlier.

        Encoded values up to 64 KiB stay in the database (JSON when the value round-trips through JSON,
        else pickle); larger ones become `<storage_dir>/<run_id>/<task_id>.pkl`; pandas DataFrames and pyarrow
        Tables become `<storage_dir>/<run_id>/<task_id>.parquet`.
        """
        encoded = result_codec.encode(value)
        relative: str | None = None
        size = len(encoded.data) if encoded.data is not None else 0
        if encoded.kind != "inline":
            if not _RUN_ID.match(run_id):  # never a path from a run id the store would not have created
                raise _unknown_task(run_id, task_id)
            relative = result_codec.relative_path(run_id, task_id, result_codec.suffix_for(encoded.kind))
            try:
                size = result_codec.write_file(self.storage_dir / relative, encoded)
            except OSError as exc:
                raise StoreError(f"Cannot write the result of task '{task_id}' under storage_dir "
                                 f"'{self.storage_dir}': {exc}") from exc
        row = {"run_id": run_id, "task_id": task_id, "kind": encoded.kind, "format": encoded.format,
               "inline": encoded.data if encoded.kind == "inline" else None, "path": relative, "size": size,
               "created_at": time.time()}

        def unknown_task() -> StoreError:
            if relative is not None:
                (self.storage_dir / relative).unlink(missing_ok=True)
            return _unknown_task(run_id, task_id)

        with self._transaction("save result", on_conflict=unknown_task) as conn:
            old_path = conn.execute(sa.select(R.c.path).where(R.c.run_id == run_id, R.c.task_id == task_id)
                                    ).scalar()
            statement = self._insert_fn()(R).values(**row)
            conn.execute(statement.on_conflict_do_update(
                index_elements=["run_id", "task_id"],
                set_={k: statement.excluded[k] for k in row if k not in ("run_id", "task_id")}))
        if old_path and old_path != relative:
            (self.storage_dir / old_path).unlink(missing_ok=True)
        return result_codec.result_ref(run_id, task_id)

    def load_result(self, result_ref: str) -> Any:
        run_id, task_id = result_codec.parse_ref(result_ref)
        with self._connection("load result") as conn:
            row = conn.execute(sa.select(R.c.kind, R.c.format, R.c.inline, R.c.path).where(
                R.c.run_id == run_id, R.c.task_id == task_id)).first()
        if row is None:
            raise StoreError(f"No result is stored for task '{task_id}' of workflow run '{run_id}' "
                             f"(reference '{result_ref}')")
        kind, fmt, inline, relative = row
        if kind == "inline":
            return result_codec.decode_bytes(fmt, bytes(inline))
        path = self.storage_dir / relative
        if not path.exists():
            raise StoreError(f"The result file of task '{task_id}' of run '{run_id}' is missing: '{path}'. "
                             "Open the store with the storage_dir that saved it (a shared folder when "
                             "tasks run on several machines)")
        return result_codec.read_file(path, kind, fmt)

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, name: str, role: str) -> str:
        """Create a key and return its plaintext, which is shown only now: the store keeps its sha256."""
        if not name or not role:
            raise StoreError("An API key needs a non-empty name and role")
        key = "orch_" + secrets.token_urlsafe(32)

        def taken() -> StoreError:
            return StoreError(f"An active API key named '{name}' already exists; revoke it first "
                              "or choose another name")

        with self._transaction("create API key", on_conflict=taken) as conn:
            conn.execute(sa.insert(K).values(name=name, role=role, key_hash=_hash_key(key), created_at=time.time()))
        return key

    def verify_api_key(self, key: str) -> ApiKeyRecord | None:
        """The record of the active key `key`, or None if it is unknown or revoked."""
        if not key:
            return None
        with self._connection("verify API key") as conn:
            row = conn.execute(sa.select(K.c.id, K.c.name, K.c.role, K.c.created_at, K.c.revoked_at,
                                         K.c.last_used_at)
                               .where(K.c.key_hash == _hash_key(key), K.c.revoked_at.is_(None))).first()
        if row is None:
            return None
        now = time.time()
        if row.last_used_at is None or row.last_used_at < now - _API_KEY_TOUCH_INTERVAL:
            with self._transaction("update API key use") as conn:
                conn.execute(sa.update(K).where(K.c.id == row.id).values(last_used_at=now))
        return ApiKeyRecord(*row)

    def revoke_api_key(self, name: str) -> None:
        with self._transaction("revoke API key") as conn:
            n = conn.execute(sa.update(K).where(K.c.name == name, K.c.revoked_at.is_(None))
                             .values(revoked_at=time.time())).rowcount
        if n == 0:
            raise StoreError(f"No active API key named '{name}'")

    def list_api_keys(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        query = sa.select(K.c.id, K.c.name, K.c.role, K.c.created_at, K.c.revoked_at, K.c.last_used_at)
        if not include_revoked:
            query = query.where(K.c.revoked_at.is_(None))
        with self._connection("list API keys") as conn:
            return [ApiKeyRecord(*row) for row in conn.execute(query.order_by(K.c.id))]

    # ------------------------------------------------------------------ control through the store

    def request_cancel(self, run_id: str) -> WorkflowRecord:
        """Ask for a run to be cancelled through the store, for when no orchestrator can be reached directly:
        the orchestrator running it (which polls for requests about once a second), or the next one to resume
        it, cancels it. A run that has ended is left as it is. Returns the run's record."""
        now = time.time()
        with self._transaction("request cancellation") as conn:
            row = conn.execute(sa.select(W.c.status, W.c.cancel_requested_at).where(W.c.run_id == run_id)
                               .with_for_update()).first()
            if row is None:
                raise _unknown_run(run_id)
            if row.status in _UNFINISHED and row.cancel_requested_at is None:
                conn.execute(sa.update(W).where(W.c.run_id == run_id).values(cancel_requested_at=now,
                                                                           updated_at=now))
                self._append_events(conn, [(run_id, None, "workflow.cancel_requested",
                                            json_dumps({"run_id": run_id, "at": now}), now)])
        return self.get_workflow(run_id)

    def record_rejection(self, error: str, name: str | None = None, source: str | None = None) -> int:
        """Record a workflow that was refused before it became a run (invalid file, cycle, too large, unknown
        policy, a task no node can hold) as a `workflow.rejected` event; returns the event id."""
        now = time.time()
        payload = {"name": name, "source": source, "error": _clip(_clean(error)), "at": now}
        with self._transaction("record a rejected workflow") as conn:
            self._append_events(conn, [(None, None, "workflow.rejected", json_dumps(payload), now)])
            return int(conn.execute(sa.select(sa.func.max(E.c.id))).scalar() or 0)

    def rejections(self, limit: int = 20) -> list[EventRecord]:
        """The latest `workflow.rejected` events, newest first."""
        with self._connection("read rejected workflows") as conn:
            rows = conn.execute(sa.select(E.c.id, E.c.run_id, E.c.task_id, E.c.type, E.c.payload, E.c.created_at)
                                .where(E.c.type == "workflow.rejected").order_by(E.c.id.desc()).limit(limit))
            return [EventRecord(*row) for row in rows]

    def cancel_requests(self) -> list[str]:
        """Unfinished runs whose cancellation was requested through the store."""
        with self._connection("read cancel requests") as conn:
            return list(conn.execute(sa.select(W.c.run_id).where(
                W.c.status.in_(_UNFINISHED), W.c.cancel_requested_at.is_not(None)).order_by(W.c.run_id)).scalars())

    def acquire_lease(self, owner: str, ttl: float, wait: float, host: str | None = None,
                      pid: int | None = None) -> None:
        """Make `owner` the one orchestrator of this store. A lease another owner renewed within `ttl` seconds
        blocks: wait up to `wait` seconds for it to lapse (an orchestrator that died stops renewing), then
        raise StoreError naming the holder. Renew with `renew_lease`; give back with `release_lease`."""
        deadline = time.monotonic() + wait
        while True:
            now = time.time()
            holder = None
            try:
                with self._transaction("take the orchestrator lease") as conn:
                    row = conn.execute(sa.select(L).where(L.c.name == _LEASE).with_for_update()).first()
                    values = {"owner": owner, "host": host, "pid": pid, "acquired_at": now, "heartbeat_at": now,
                              "written_seq": None}
                    if row is None:
                        conn.execute(sa.insert(L).values(name=_LEASE, **values))
                    elif row.owner == owner or row.heartbeat_at < now - ttl:
                        conn.execute(sa.update(L).where(L.c.name == _LEASE).values(**values))
                    else:
                        holder = row
            except StoreError:
                if time.monotonic() >= deadline:
                    raise
                holder = None  # a concurrent start inserted first: look again
                time.sleep(0.2)
                continue
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise self._leased_by(holder, now)
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def refuse_if_leased(self, within_s: float) -> None:
        """Raise the same StoreError as `acquire_lease` if an orchestrator renewed this store's lease within
        `within_s` seconds (it renews every second while alive), without waiting for the lease to lapse."""
        with self._connection("read the orchestrator lease") as conn:
            holder = conn.execute(sa.select(L).where(L.c.name == _LEASE)).first()
        now = time.time()
        if holder is not None and now - holder.heartbeat_at < within_s:
            raise self._leased_by(holder, now)

    def _leased_by(self, holder: sa.Row, now: float) -> StoreError:
        return StoreError(
            f"Another orchestrator (pid {holder.pid} on {holder.host}, started "
            f"{time.strftime('%H:%M:%S', time.localtime(holder.acquired_at))}) is running on the store at {self.url} "
            f"and owns the store (it renewed its lease {now - holder.heartbeat_at:.1f} s ago): two orchestrators on "
            "one store would run the same tasks twice. Talk to it through the Ray cluster it runs on (--address or "
            "RAY_ADDRESS; `orchestrator cancel` also works through the store), or stop it first")

    def renew_lease(self, owner: str) -> bool:
        """Renew `owner`'s lease; False if another orchestrator has taken the store over meanwhile."""
        now = time.time()
        with self._transaction("renew the orchestrator lease") as conn:
            return conn.execute(sa.update(L).where(L.c.name == _LEASE, L.c.owner == owner)
                                .values(heartbeat_at=now)).rowcount == 1

    def release_lease(self, owner: str) -> None:
        with self._transaction("release the orchestrator lease") as conn:
            conn.execute(sa.delete(L).where(L.c.name == _LEASE, L.c.owner == owner))

    # ------------------------------------------------------------------ event delivery cursors

    def sink_cursor(self, sink: str) -> int | None:
        """The id of the last event `sink` accepted; None if the sink has never been seen."""
        C = EventDeliveryRow.__table__
        with self._connection("read sink cursor") as conn:
            return conn.execute(sa.select(C.c.last_event_id).where(C.c.sink == sink)).scalar()

    def advance_sink_cursor(self, sink: str, last_event_id: int) -> None:
        """Move the sink's cursor forward to `last_event_id` (never backwards: see `set_sink_cursor`)."""
        C = EventDeliveryRow.__table__
        statement = self._insert_fn()(C).values(sink=sink, last_event_id=last_event_id, updated_at=time.time())
        statement = statement.on_conflict_do_update(
            index_elements=["sink"],
            set_={"last_event_id": statement.excluded.last_event_id, "updated_at": statement.excluded.updated_at},
            where=C.c.last_event_id < statement.excluded.last_event_id,
        )
        with self._transaction("advance sink cursor") as conn:
            conn.execute(statement)

    def set_sink_cursor(self, sink: str, last_event_id: int) -> None:
        """Set the sink's cursor, backwards too (to replay events); dispatchers read it when they start."""
        C = EventDeliveryRow.__table__
        statement = self._insert_fn()(C).values(sink=sink, last_event_id=last_event_id, updated_at=time.time())
        statement = statement.on_conflict_do_update(
            index_elements=["sink"],
            set_={"last_event_id": statement.excluded.last_event_id, "updated_at": statement.excluded.updated_at})
        with self._transaction("set sink cursor") as conn:
            conn.execute(statement)

    # ------------------------------------------------------------------ plumbing

    def _insert_fn(self):  # type: ignore[no-untyped-def]
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    @contextmanager
    def _transaction(self, action: str, on_conflict: Callable[[], StoreError] | None = None
                     ) -> Iterator[sa.Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); database errors become StoreError.

        `on_conflict` builds the error for a violated constraint (duplicate key, unknown foreign key).
        """
        dbapi = self.engine.dialect.loaded_dbapi  # raw driver errors come from COPY on PostgreSQL
        try:
            with self.engine.connect() as conn:
                conn.execution_options(store_write=True)
                with conn.begin():
                    yield conn
        except (sa.exc.IntegrityError, dbapi.IntegrityError) as exc:
            if on_conflict is not None:
                raise on_conflict() from exc
            raise StoreConflictError(f"The store at '{self.url}' refused to {action}: {_cause(exc)}") from exc
        except (sa.exc.DBAPIError, dbapi.Error) as exc:
            raise _database_error(exc, f"Cannot {action} in the store at '{self.url}'") from exc

    @contextmanager
    def _connection(self, action: str) -> Iterator[sa.Connection]:
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            with self.engine.connect() as conn:
                yield conn
        except (sa.exc.DBAPIError, dbapi.Error) as exc:
            raise _database_error(exc, f"Cannot {action} in the store at '{self.url}'") from exc

    @staticmethod
    def _require_run(conn: sa.Connection, run_id: str) -> None:
        if conn.execute(sa.select(W.c.run_id).where(W.c.run_id == run_id)).first() is None:
            raise _unknown_run(run_id)


# ---------------------------------------------------------------------- pure helpers


def _sqlite_executemany(conn: sa.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """executemany on the connection's own sqlite3 cursor, inside its transaction: the hot path of every
    orchestrator iteration, where SQLAlchemy's statement bookkeeping costs more than the insert itself.
    Returns the rows changed."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.executemany(sql, rows)
        return cursor.rowcount
    finally:
        cursor.close()


def _plan(changes: Sequence[Change], stored_tasks: dict[tuple[str, str], str], stored_workflows: dict[str, str],
          now: float) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Check every move in order; return the task update rows, the workflow updates and the outbox rows.

    Several changes of one task in a batch fold into one update row with the same effect as applying them
    in turn (the last value given for a field wins), guarded by the status before the first of them.
    Raises InvalidTransitionError or StoreError on the first bad change.
    """
    task_status: dict[tuple[str, str], TaskStatus] = {}
    workflow_status: dict[str, WorkflowStatus] = {}
    net: dict[tuple[str, str], list[Any]] = {}
    workflow_params: list[dict[str, Any]] = []
    events: list[tuple[Any, ...]] = []
    n = len(changes)
    for i, c in enumerate(changes):
        at = now if c.at is None else c.at
        if c.run_id not in stored_workflows:
            raise StoreNotFoundError(f"No workflow run '{c.run_id}' (change {i + 1} of {n}); nothing in the batch "
                                     "was applied")
        if isinstance(c, RunNote):
            events.append((c.run_id, None, c.type, json_dumps({**c.detail, "run_id": c.run_id, "at": at}), now))
            continue
        if isinstance(c, TaskChange):
            key = (c.run_id, c.task_id)
            current = task_status.get(key)
            if c.expected is not None:
                if current is not None and current is not c.expected:
                    raise InvalidTransitionError(
                        f"Task '{c.task_id}' of workflow run '{c.run_id}' is '{current.value}' after the earlier "
                        f"changes of this batch, not the expected '{c.expected.value}' (change {i + 1} of {n}); "
                        "nothing in the batch was applied")
                current = c.expected
            elif current is None:
                stored = stored_tasks.get(key)
                if stored is None:
                    raise _unknown_task(c.run_id, c.task_id, i, n)
                current = _STATUS_BY_TEXT[stored]
            new = c.status
            try:
                event_type = task_transition(current, new)
            except InvalidTransitionError:
                raise InvalidTransitionError(
                    f"Task '{c.task_id}' of workflow run '{c.run_id}' cannot move from '{current.value}' to "
                    f"'{new.value}' (change {i + 1} of {n}); nothing in the batch was applied"
                ) from None
            task_status[key] = new
            error = _clean(c.error)
            row = net.get(key)
            if row is None:
                #      status  attempt node  clear  error result ready started finished next  run  task  from
                row = [None, None, None, False, None, None, None, None, None, None, c.run_id, c.task_id,
                       _STATUS_TEXT[current]]
                net[key] = row
            row[0] = new_text = _STATUS_TEXT[new]
            if c.attempt is not None:
                row[1] = c.attempt
            if c.node is not None:
                row[2] = c.node
            if error is not None:
                row[3], row[4] = False, error
            elif new is TaskStatus.SUCCEEDED:
                row[3], row[4] = True, None  # success clears the error of earlier attempts
            if c.result_ref is not None:
                row[5] = c.result_ref
            if new is TaskStatus.READY:
                row[6] = at
            elif new is TaskStatus.RUNNING:
                row[7] = at
            elif new in TERMINAL_TASK_STATUSES:
                row[8] = at
            if c.next_attempt_at is not None:
                row[9] = c.next_attempt_at
            payload = {"run_id": c.run_id, "task_id": c.task_id, "status": new_text,
                       "previous": _STATUS_TEXT[current], "attempt": c.attempt, "node": c.node, "error": error,
                       "result_ref": c.result_ref, "at": at}
            if c.next_attempt_at is not None:
                payload["next_attempt_at"] = c.next_attempt_at
            events.append((c.run_id, c.task_id, event_type, json_dumps(payload), now))
        else:
            current_wf = workflow_status.get(c.run_id) or WorkflowStatus(stored_workflows[c.run_id])
            new_wf = c.status
            try:
                event_type = workflow_transition(current_wf, new_wf)
            except InvalidTransitionError:
                raise InvalidTransitionError(
                    f"Workflow run '{c.run_id}' cannot move from '{current_wf.value}' to '{new_wf.value}' "
                    f"(change {i + 1} of {n}); nothing in the batch was applied"
                ) from None
            workflow_status[c.run_id] = new_wf
            error = _clean(c.error)
            workflow_params.append({
                "k_run_id": c.run_id, "k_from": current_wf.value, "v_status": new_wf.value, "v_error": error,
                "v_started_at": at if new_wf is WorkflowStatus.RUNNING else None,
                "v_finished_at": at if new_wf.terminal else None, "v_updated_at": now,
            })
            payload = {"run_id": c.run_id, "status": new_wf.value, "previous": current_wf.value, "error": error,
                       "at": at}
            events.append((c.run_id, None, event_type, json_dumps(payload), now))
    return [tuple(net[key]) for key in sorted(net)], workflow_params, events


def new_run_id(name: str) -> str:
    """A fresh run id: the workflow name as a slug, then 12 random hex digits."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:48] or "run"
    return f"{slug}-{uuid.uuid4().hex[:12]}"


def _execution_params(rows: Sequence[ExecutionRecord]) -> list[dict[str, Any]]:
    return [{
        "run_id": r.run_id, "task_id": r.task_id, "attempt": r.attempt, "node": r.node, "status": r.status,
        "started_at": r.started_at, "finished_at": r.finished_at, "exit_info": _clip(r.exit_info),
        "error": _clip(r.error), "duration": r.duration, "cpu": r.cpu, "peak_memory": r.peak_memory,
        "stdout": _clip(r.stdout), "stderr": _clip(r.stderr),
    } for r in rows]


def _record_params(record: Any, now: float, time_field: str) -> dict[str, Any]:
    params = {f.name: value for f, value in zip(fields(record), astuple(record)) if f.name != "id"}
    if params.get(time_field) is None:
        params[time_field] = now
    return params


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters; captured output sometimes does."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def _clip(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """The last `limit` bytes of `text` (UTF-8), marked as truncated, without NUL characters."""
    text = _clean(text)
    if text is None or len(text) <= limit // 4:
        return text
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    marker = f"[... {len(data) - limit} bytes truncated ...]\n"
    return marker + data[-(limit - len(marker)):].decode("utf-8", errors="ignore")


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _workflow_record(row: sa.Row) -> WorkflowRecord:
    return WorkflowRecord(row[0], row[1], row[2], row[3], WorkflowStatus(row[4]), *row[5:])


def _unknown_run(run_id: str) -> StoreError:
    return StoreNotFoundError(f"no workflow run '{run_id}'; `orchestrator list` (Store.list_workflows()) lists the known "
                      "runs")


def _unknown_task(run_id: str, task_id: str, index: int | None = None, n: int | None = None) -> StoreError:
    where = f" (change {index + 1} of {n}); nothing in the batch was applied" if index is not None else ""
    return StoreNotFoundError(f"No task '{task_id}' in workflow run '{run_id}'{where}")


def _duplicate_run(*run_ids: str) -> StoreError:
    if len(run_ids) > 1:
        return StoreConflictError(f"One of the workflow runs {', '.join(repr(r) for r in run_ids)} already exists; pass "
                          "other run ids, or none for fresh ones")
    return StoreConflictError(f"Workflow run '{run_ids[0]}' already exists; pass another run_id, or none for a fresh one")


def _database_error(exc: BaseException, what: str) -> StoreError:
    """A database error as the store's error: StoreUnavailableError when the database could not be reached or
    dropped the connection (refused, terminated, locked, timed out: worth retrying), else StoreError."""
    orig = getattr(exc, "orig", None) or exc
    transient = (isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError,
                                  sa.exc.TimeoutError))
                 or getattr(exc, "connection_invalidated", False)
                 or type(orig).__name__ in ("OperationalError", "InterfaceError", "AdminShutdown",
                                            "ConnectionTimeout", "CannotConnectNow")
                 or any(c.__name__ in ("OperationalError", "InterfaceError") for c in type(orig).__mro__))
    kind = StoreUnavailableError if transient else StoreError
    return kind(f"{what}: {_cause(exc)}")


def _cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(line.strip() for line in str(orig).splitlines() if line.strip())
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__


def _open_error(url: URL, exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    masked = mask_url(url)
    if isinstance(exc, sa.exc.NoSuchModuleError) or isinstance(exc, ModuleNotFoundError):
        return StoreError(f"Cannot open the state store at '{masked}': its database driver is not installed "
                          f"({exc}); PostgreSQL URLs need psycopg: postgresql+psycopg://...")
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        return StoreError(f"Cannot migrate the state store at '{masked}': {exc}. The database may have been "
                          "created by a newer version of the orchestrator")
    hint = ("check that the folder exists and is writable" if url.get_backend_name() == "sqlite"
            else "check that the server is running and the host, port, user, password and database are right")
    return StoreError(f"Cannot open the state store at '{masked}': {_cause(exc)}; {hint}")

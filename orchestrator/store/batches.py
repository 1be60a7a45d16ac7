"""Applying a batch of state changes (`Store.apply`): checked, written and given its outbox events in one
transaction, all or nothing, in a few statements per batch on SQLite and three round trips on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidTransitionError, LeaseLostError, StoreConflictError
from .batch_plan import plan, touched_runs, unchecked_tasks
from .database import OUTBOX_LOCK_KEY
from .history import DECISION_COLUMNS, decision_rows, execution_rows
from .lease import LEASE, L
from .outbox import EVENT_COLUMNS, append_events
from .records import Change, DecisionRecord, ExecutionRecord, TaskChange
from .runs import T, W, unknown_task
from .transactions import (
    SQLITE_IN_CHUNK,
    StoreBase,
    bulk_insert,
    chunks,
    sqlite_executemany,
)

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

# The PostgreSQL write path (`Batches._apply_pg`), as driver SQL. The task update is one statement over arrays
# (one round trip instead of one per task).
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
_MARK_BATCH_SQLITE = "UPDATE orchestrator_leases SET written_seq = ? WHERE name = ? AND owner = ?"
_MARK_BATCH_PG = _MARK_BATCH_SQLITE.replace("?", "%s")
_LOCK_WORKFLOWS_PG = "SELECT run_id, status FROM workflows WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE"
_LOCK_TASKS_PG = ("SELECT task_id, status FROM tasks WHERE run_id = %s AND task_id = ANY(%s) "
                  "ORDER BY task_id FOR UPDATE")
_NO_HASH_OR_MERGE_JOIN_PG = ("SELECT set_config('enable_hashjoin', 'off', true), "
                             "set_config('enable_mergejoin', 'off', true)")
_WORKFLOW_UPDATE_PG = (
    "UPDATE workflows SET status = %s, error = COALESCE(%s, error), started_at = COALESCE(%s, started_at), "
    "finished_at = COALESCE(%s, finished_at), updated_at = %s WHERE run_id = %s AND status = %s"
)
_INSERT_EVENT_PG = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
                    "VALUES (%s, %s, %s, CAST(%s AS jsonb), %s)")
_INSERT_DECISION_PG = (f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
                       "VALUES (%s, %s, %s, %s, CAST(%s AS jsonb), CAST(%s AS jsonb), %s, %s, %s, %s)")


class _StaleBatch(Exception):
    """A guarded update matched fewer rows than planned: some stored status was not the expected one."""


class Batches(StoreBase):
    """`apply` and what a writer fenced by the lease needs around it (`batch_written`)."""

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
                        bulk_insert(conn, "task_executions", *execution_rows(executions))
                    if decisions:
                        bulk_insert(conn, "decisions", DECISION_COLUMNS, decision_rows(decisions, now))
            return
        write = self._apply_pg if self.dialect == "postgresql" else self._apply_sqlite
        try:
            with self._transaction("apply state changes") as conn:
                if batch is not None:
                    self._mark_batch(conn, batch)
                write(conn, changes, executions, decisions, now)
        except _StaleBatch:
            raise self._explain_stale_batch(changes) from None

    def batch_written(self, owner: str, seq: int) -> bool:
        """Whether `owner`'s write batch number `seq` (or a later one) was committed (see `apply`)."""
        with self._connection("read the last written batch") as conn:
            written = conn.execute(sa.select(L.c.written_seq).where(L.c.name == LEASE, L.c.owner == owner)
                                   ).scalar()
        return written is not None and written >= seq

    def _mark_batch(self, conn: sa.Connection, batch: tuple[str, int]) -> None:
        """Record the batch number in the lease row, which must still be `owner`'s (LeaseLostError if not)."""
        owner, seq = batch
        # Driver-level SQL: it runs in every write transaction (a compiled Core statement costs ten times more).
        updated = conn.exec_driver_sql(_MARK_BATCH_PG if self.dialect == "postgresql" else _MARK_BATCH_SQLITE,
                                       (seq, LEASE, owner)).rowcount
        if updated != 1:
            raise LeaseLostError(f"The orchestrator '{owner}' no longer holds the lease of the store at {self.url}: "
                                 "another orchestrator took it over; nothing of this write was applied")

    def _apply_sqlite(self, conn: sa.Connection, changes: Sequence[Change], executions: Sequence[ExecutionRecord],
                      decisions: Sequence[DecisionRecord], now: float) -> None:
        """`apply` on SQLite, whose writers are serialised already (BEGIN IMMEDIATE): driver-level SQL on the
        connection's own cursor, because this runs once per orchestrator iteration."""
        if executions:
            bulk_insert(conn, "task_executions", *execution_rows(executions))
        if decisions:
            bulk_insert(conn, "decisions", DECISION_COLUMNS, decision_rows(decisions, now))
        run_ids = sorted({c.run_id for c in changes})
        stored_workflows = {run_id: status for run_id, status in conn.exec_driver_sql(
            f"SELECT run_id, status FROM workflows WHERE run_id IN ({','.join('?' * len(run_ids))})",
            tuple(run_ids))}
        stored_tasks: dict[tuple[str, str], str] = {}
        for run_id, ids in unchecked_tasks(changes):
            for chunk in chunks(ids, SQLITE_IN_CHUNK):
                rows = conn.exec_driver_sql(
                    f"SELECT task_id, status FROM tasks WHERE run_id = ? AND task_id IN ({','.join('?' * len(chunk))})",
                    (run_id, *chunk))
                stored_tasks.update(((run_id, task_id), status) for task_id, status in rows)
        task_rows, workflow_params, events = plan(changes, stored_tasks, stored_workflows, now)
        if task_rows and sqlite_executemany(conn, _TASK_UPDATE_SQL, task_rows) != len(task_rows):
            raise _StaleBatch()
        if workflow_params and conn.execute(_WORKFLOW_UPDATE, workflow_params).rowcount != len(workflow_params):
            raise _StaleBatch()
        touched = touched_runs(changes)
        if touched:
            conn.exec_driver_sql(f"UPDATE workflows SET updated_at = ? WHERE run_id IN "
                                 f"({','.join('?' * len(touched))})", (now, *touched))
        append_events(conn, events)

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
            for run_id, ids in unchecked_tasks(changes):
                cursor = pg.cursor()
                cursor.execute(_LOCK_TASKS_PG, (run_id, ids))
                task_cursors.append((run_id, cursor))
        stored_workflows = dict(workflow_cursor.fetchall())
        stored_tasks = {(run_id, task_id): status
                        for run_id, cursor in task_cursors for task_id, status in cursor.fetchall()}
        task_rows, workflow_params, events = plan(changes, stored_tasks, stored_workflows, now)
        task_cursor = workflow_update = None
        with pg.pipeline():
            cursor = pg.cursor()
            if executions:
                columns, rows = execution_rows(executions)
                cursor.executemany(f"INSERT INTO task_executions ({', '.join(columns)}) "
                                   f"VALUES ({', '.join(['%s'] * len(columns))})", rows)
            if decisions:
                cursor.executemany(_INSERT_DECISION_PG, decision_rows(decisions, now))
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
            touched = touched_runs(changes)
            if touched:
                cursor.execute("UPDATE workflows SET updated_at = %s WHERE run_id = ANY(%s)", (now, touched))
            if events:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))  # see `append_events`
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
                    return unknown_task(c.run_id, c.task_id, i, len(changes))
                if status != c.expected.value:
                    return InvalidTransitionError(
                        f"Task '{c.task_id}' of workflow run '{c.run_id}' is '{status}', not the expected "
                        f"'{c.expected.value}' (change {i + 1} of {len(changes)}); nothing in the batch was "
                        "applied. Re-read the task or leave `expected` unset to check against the stored status"
                    )
        return StoreConflictError(f"A batch of {len(changes)} state changes conflicted with a concurrent writer on "
                                  f"{self.url} and was rolled back; apply it again")


def _task_update_arrays(rows: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Task update rows as the column arrays `_TASK_UPDATE_PG` takes (one array type per column)."""
    columns = [list(column) for column in zip(*rows)]
    for index in (6, 7, 8, 9):  # times: one array type even if a caller passed an int
        columns[index] = [None if v is None else float(v) for v in columns[index]]
    columns[1] = [None if v is None else int(v) for v in columns[1]]
    return tuple(columns)

"""Workflow runs: recording new runs with their tasks and dependencies, reading runs and tasks back, and
cancellation requested through the store."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import fields

import sqlalchemy as sa

from ..errors import StoreConflictError, StoreError, StoreInvalidError, StoreNotFoundError
from ..model import Workflow, get_limits
from ..states import TaskStatus, WorkflowStatus
from .database import json_dumps
from .outbox import append_events
from .records import TaskRecord, WorkflowRecord
from .schema import TaskRow, WorkflowRow
from .transactions import SQLITE_IN_CHUNK, StoreBase, bulk_insert, chunks

W = WorkflowRow.__table__
T = TaskRow.__table__

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # what a run id may be (also a folder name)
UNFINISHED = (WorkflowStatus.PENDING.value, WorkflowStatus.RUNNING.value)
WORKFLOW_COLUMNS = (W.c.run_id, W.c.name, W.c.family, W.c.policy, W.c.status, W.c.error, W.c.created_at,
                    W.c.started_at, W.c.finished_at, W.c.updated_at)  # WorkflowRecord's, in order
TASK_COLUMNS = tuple(T.c[f.name] for f in fields(TaskRecord))
_TASK_INSERT_COLUMNS = ("run_id", "task_id", "position", "category", "status", "attempt", "priority",
                        "cpus", "memory", "gpus")


class Runs(StoreBase):
    """Creating runs, reading them and their tasks, and cancel requests."""

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
            if not RUN_ID.match(run_id):
                raise StoreInvalidError(f"Run id '{run_id}' must be 1-128 letters, digits, '.', '_' or '-', "
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
            for chunk in chunks(run_ids, SQLITE_IN_CHUNK):
                taken = conn.execute(sa.select(W.c.run_id).where(W.c.run_id.in_(chunk))).first()
                if taken is not None:
                    raise _duplicate_run(taken[0])
            bulk_insert(conn, "workflows", ("run_id", "name", "family", "policy", "status", "spec", "created_at",
                                            "updated_at"), workflow_rows)
            bulk_insert(conn, "tasks", _TASK_INSERT_COLUMNS, task_rows)
            bulk_insert(conn, "task_dependencies", ("run_id", "task_id", "depends_on"), dependency_rows)
            append_events(conn, events)
        return run_ids

    # ------------------------------------------------------------------ reads

    def get_workflow(self, run_id: str) -> WorkflowRecord:
        with self._connection("read workflow run") as conn:
            row = conn.execute(sa.select(*WORKFLOW_COLUMNS).where(W.c.run_id == run_id)).first()
        if row is None:
            raise unknown_run(run_id)
        return workflow_record(row)

    def list_workflows(self, status: WorkflowStatus | None = None, limit: int = 50) -> list[WorkflowRecord]:
        """The newest runs first, optionally only those with `status`."""
        query = sa.select(*WORKFLOW_COLUMNS).order_by(W.c.created_at.desc(), W.c.run_id).limit(limit)
        if status is not None:
            query = query.where(W.c.status == WorkflowStatus(status).value)
        with self._connection("list workflow runs") as conn:
            return [workflow_record(row) for row in conn.execute(query)]

    def get_tasks(self, run_id: str) -> list[TaskRecord]:
        """Every task of the run, in the order of the workflow spec."""
        with self._connection("read tasks") as conn:
            rows = conn.execute(sa.select(*TASK_COLUMNS).where(T.c.run_id == run_id).order_by(T.c.position)).all()
            if not rows:
                require_run(conn, run_id)
        return [task_record(row) for row in rows]

    def task_counts(self, run_id: str) -> dict[str, int]:
        """How many tasks of the run are in each status; every status is a key, zero included."""
        counts = {s.value: 0 for s in TaskStatus}
        with self._connection("count tasks") as conn:
            rows = conn.execute(sa.select(T.c.status, sa.func.count()).where(T.c.run_id == run_id)
                                .group_by(T.c.status)).all()
            if not rows:
                require_run(conn, run_id)
        counts.update({status: n for status, n in rows})
        return counts

    def unfinished_workflows(self) -> list[str]:
        """Run ids still pending or running, oldest first: what a restarted runtime must resume."""
        query = sa.select(W.c.run_id).where(W.c.status.in_(UNFINISHED)).order_by(W.c.created_at, W.c.run_id)
        with self._connection("list unfinished runs") as conn:
            return list(conn.execute(query).scalars())

    def load_spec(self, run_id: str) -> Workflow:
        with self._connection("read workflow spec") as conn:
            spec = conn.execute(sa.select(W.c.spec).where(W.c.run_id == run_id)).scalar()
        if spec is None:
            raise unknown_run(run_id)
        return Workflow.model_validate(spec)

    # ------------------------------------------------------------------ changing a task's priority

    def set_task_priority(self, run_id: str, task_id: str, priority: int) -> TaskRecord:
        """Change the scheduling priority of one task that has not started yet (pending, ready or retrying):
        its `tasks.priority` and a `task.priority_changed` event (payload: the new `priority` and the
        `previous` one, with the run and task ids and `at`), in one transaction. Setting the priority it has
        already changes nothing and records no event. Returns the task's record.

        StoreInvalidError for a priority that is not a whole number within +-`Limits.max_priority`;
        StoreNotFoundError for an unknown run or task; StoreConflictError, naming its status, for a task that
        is running or has ended (or whose run has ended): its priority can no longer matter."""
        return self.change_task_priority(run_id, task_id, priority)[0]

    def change_task_priority(self, run_id: str, task_id: str, priority: int) -> tuple[TaskRecord, int]:
        """`set_task_priority`, also returning the priority the task had before (read in the same transaction)."""
        check_priority(task_id, priority)
        now = time.time()
        where = (T.c.run_id == run_id) & (T.c.task_id == task_id)
        with self._transaction("change a task's priority") as conn:
            run_status = conn.execute(sa.select(W.c.status).where(W.c.run_id == run_id).with_for_update()).scalar()
            if run_status is None:
                raise unknown_run(run_id)
            row = conn.execute(sa.select(T.c.status, T.c.priority).where(where).with_for_update()).first()
            if row is None:
                raise unknown_task(run_id, task_id)
            status = TaskStatus(row.status)
            if status.terminal or status == TaskStatus.RUNNING:
                raise priority_conflict(run_id, task_id, status)
            if WorkflowStatus(run_status).terminal:
                raise StoreConflictError(f"Workflow run '{run_id}' is {run_status}: the priority of its task "
                                         f"'{task_id}' can no longer matter")
            previous = int(row.priority)
            if previous != priority:
                conn.execute(sa.update(T).where(where).values(priority=priority))
                conn.execute(sa.update(W).where(W.c.run_id == run_id).values(updated_at=now))
                payload = {"run_id": run_id, "task_id": task_id, "priority": priority, "previous": previous,
                           "at": now}
                append_events(conn, [(run_id, task_id, "task.priority_changed", json_dumps(payload), now)])
            record = conn.execute(sa.select(*TASK_COLUMNS).where(where)).first()
        return task_record(record), previous

    # ------------------------------------------------------------------ cancellation through the store

    def request_cancel(self, run_id: str) -> WorkflowRecord:
        """Ask for a run to be cancelled through the store, for when no orchestrator can be reached directly:
        the orchestrator running it (which polls for requests about once a second), or the next one to resume
        it, cancels it. A run that has ended is left as it is. Returns the run's record."""
        now = time.time()
        with self._transaction("request cancellation") as conn:
            row = conn.execute(sa.select(W.c.status, W.c.cancel_requested_at).where(W.c.run_id == run_id)
                               .with_for_update()).first()
            if row is None:
                raise unknown_run(run_id)
            if row.status in UNFINISHED and row.cancel_requested_at is None:
                conn.execute(sa.update(W).where(W.c.run_id == run_id).values(cancel_requested_at=now,
                                                                           updated_at=now))
                append_events(conn, [(run_id, None, "workflow.cancel_requested",
                                      json_dumps({"run_id": run_id, "at": now}), now)])
        return self.get_workflow(run_id)

    def cancel_requests(self) -> list[str]:
        """Unfinished runs whose cancellation was requested through the store."""
        with self._connection("read cancel requests") as conn:
            return list(conn.execute(sa.select(W.c.run_id).where(
                W.c.status.in_(UNFINISHED), W.c.cancel_requested_at.is_not(None)).order_by(W.c.run_id)).scalars())


def check_priority(task_id: str, priority: object) -> None:
    """StoreInvalidError unless `priority` is a whole number within +-`Limits.max_priority` (what the store
    keeps, and what a workflow's own priorities are checked against)."""
    limit = get_limits().max_priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise StoreInvalidError(f"The priority of task '{task_id}' must be a whole number between {-limit} and "
                                f"{limit}, not {priority!r}")
    if not -limit <= priority <= limit:
        raise StoreInvalidError(f"The priority {priority} of task '{task_id}' is out of range: it must be between "
                                f"{-limit} and {limit}")


def priority_conflict(run_id: str, task_id: str, status: TaskStatus) -> StoreError:
    """A task whose priority can no longer change anything: it is running or has ended."""
    return StoreConflictError(f"Task '{task_id}' of workflow run '{run_id}' is {status.value}: its priority can no "
                              "longer change the order it runs in (only a pending, ready or retrying task's can)")


def new_run_id(name: str) -> str:
    """A fresh run id: the workflow name as a slug, then 12 random hex digits."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:48] or "run"
    return f"{slug}-{uuid.uuid4().hex[:12]}"


def workflow_record(row: sa.Row) -> WorkflowRecord:
    """A row of `WORKFLOW_COLUMNS` as a record."""
    return WorkflowRecord(row[0], row[1], row[2], row[3], WorkflowStatus(row[4]), *row[5:])


def task_record(row: sa.Row) -> TaskRecord:
    """A row of `TASK_COLUMNS` as a record."""
    return TaskRecord(*row[:4], TaskStatus(row[4]), *row[5:])


def require_run(conn: sa.Connection, run_id: str) -> None:
    """Raise StoreNotFoundError unless the run exists."""
    if conn.execute(sa.select(W.c.run_id).where(W.c.run_id == run_id)).first() is None:
        raise unknown_run(run_id)


def unknown_run(run_id: str) -> StoreError:
    return StoreNotFoundError(f"no workflow run '{run_id}'; `orchestrator list` (Store.list_workflows()) lists the "
                              "known runs")


def unknown_task(run_id: str, task_id: str, index: int | None = None, n: int | None = None) -> StoreError:
    """No such task; `index` of `n` names the change of a batch that named it."""
    where = f" (change {index + 1} of {n}); nothing in the batch was applied" if index is not None else ""
    return StoreNotFoundError(f"No task '{task_id}' in workflow run '{run_id}'{where}")


def _duplicate_run(*run_ids: str) -> StoreError:
    if len(run_ids) > 1:
        return StoreConflictError(f"One of the workflow runs {', '.join(repr(r) for r in run_ids)} already exists; "
                                  "pass other run ids, or none for fresh ones")
    return StoreConflictError(f"Workflow run '{run_ids[0]}' already exists; pass another run_id, or none for a "
                              "fresh one")

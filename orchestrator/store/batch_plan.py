"""Planning a batch of state changes, with no database: every move is checked against the transition table and
the batch folds into one guarded update row per task, the workflow updates and one outbox event per change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidTransitionError, StoreNotFoundError
from ..states import (
    TERMINAL_TASK_STATUSES,
    TaskStatus,
    WorkflowStatus,
    task_transition,
    workflow_transition,
)
from .database import json_dumps
from .records import Change, RunNote, TaskChange
from .runs import unknown_task
from .text import clean

_STATUS_TEXT = {s: s.value for s in TaskStatus}  # plain lookups: Enum.value is slow in a 1,000-change loop
_STATUS_BY_TEXT = {s.value: s for s in TaskStatus}


def plan(changes: Sequence[Change], stored_tasks: dict[tuple[str, str], str], stored_workflows: dict[str, str],
         now: float) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Check every move in order; return the task update rows, the workflow updates and the outbox rows.

    `stored_tasks` holds the stored status of each task whose change gives no `expected`; `stored_workflows`
    that of every run the batch names. Several changes of one task in a batch fold into one update row with the
    same effect as applying them in turn (the last value given for a field wins), guarded by the status before
    the first of them. Task rows are in `batches._TASK_UPDATE_SQL` order, sorted by (run, task); workflow
    updates are `batches._WORKFLOW_UPDATE` parameters; events are `outbox.append_events` rows.
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
            payload = {**c.detail, "run_id": c.run_id, "at": at}
            if c.task_id is not None:
                payload["task_id"] = c.task_id
            events.append((c.run_id, c.task_id, c.type, json_dumps(payload), now))
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
                    raise unknown_task(c.run_id, c.task_id, i, n)
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
            error = clean(c.error)
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
            error = clean(c.error)
            workflow_params.append({
                "k_run_id": c.run_id, "k_from": current_wf.value, "v_status": new_wf.value, "v_error": error,
                "v_started_at": at if new_wf is WorkflowStatus.RUNNING else None,
                "v_finished_at": at if new_wf.terminal else None, "v_updated_at": now,
            })
            payload = {"run_id": c.run_id, "status": new_wf.value, "previous": current_wf.value, "error": error,
                       "at": at}
            events.append((c.run_id, None, event_type, json_dumps(payload), now))
    return [tuple(net[key]) for key in sorted(net)], workflow_params, events


def unchecked_tasks(changes: Sequence[Change]) -> list[tuple[str, list[str]]]:
    """(run id, sorted task ids) of the tasks whose changes give no `expected`, whose stored status must be read
    (and locked, on PostgreSQL) first; runs sorted."""
    wanted: dict[str, set[str]] = {}
    for c in changes:
        if isinstance(c, TaskChange) and c.expected is None:
            wanted.setdefault(c.run_id, set()).add(c.task_id)
    return [(run_id, sorted(wanted[run_id])) for run_id in sorted(wanted)]


def touched_runs(changes: Sequence[Change]) -> list[str]:
    """Runs whose tasks the batch moves (their `updated_at` moves too)."""
    return sorted({c.run_id for c in changes if isinstance(c, TaskChange)})

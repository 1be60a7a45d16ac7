"""Task and workflow statuses and the one table of legal transitions between them.

Every engine (the simulator's bookkeeping, the Ray runtime, the store) checks moves against this table; the
simulator's hot loop checks them against `TASK_MOVES`, an integer-coded copy derived from it.
"""

from __future__ import annotations

from enum import Enum

from .errors import InvalidTransitionError


class TaskStatus(str, Enum):
    PENDING = "pending"  # waiting for parents
    READY = "ready"  # parents done, waiting for the scheduler
    RUNNING = "running"  # dispatched to a node
    RETRYING = "retrying"  # failed, waiting for its backoff before becoming ready again
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # out of retries
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # an upstream task failed or was cancelled

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES


class WorkflowStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


TERMINAL_TASK_STATUSES = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED}
)

# (from, to) -> the event name recorded for that move.
TASK_TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], str] = {
    (TaskStatus.PENDING, TaskStatus.READY): "task.ready",
    (TaskStatus.PENDING, TaskStatus.SKIPPED): "task.skipped",
    (TaskStatus.PENDING, TaskStatus.CANCELLED): "task.cancelled",
    (TaskStatus.READY, TaskStatus.RUNNING): "task.started",
    (TaskStatus.READY, TaskStatus.CANCELLED): "task.cancelled",
    (TaskStatus.READY, TaskStatus.SKIPPED): "task.skipped",
    (TaskStatus.RUNNING, TaskStatus.SUCCEEDED): "task.succeeded",
    (TaskStatus.RUNNING, TaskStatus.FAILED): "task.failed",
    (TaskStatus.RUNNING, TaskStatus.RETRYING): "task.retrying",
    (TaskStatus.RUNNING, TaskStatus.CANCELLED): "task.cancelled",
    # A running task whose worker vanished (crash, node loss) is put back in the ready set on resume.
    (TaskStatus.RUNNING, TaskStatus.READY): "task.requeued",
    (TaskStatus.RETRYING, TaskStatus.READY): "task.ready",
    (TaskStatus.RETRYING, TaskStatus.CANCELLED): "task.cancelled",
}

WORKFLOW_TRANSITIONS: dict[tuple[WorkflowStatus, WorkflowStatus], str] = {
    (WorkflowStatus.PENDING, WorkflowStatus.RUNNING): "workflow.started",
    (WorkflowStatus.PENDING, WorkflowStatus.CANCELLED): "workflow.cancelled",
    (WorkflowStatus.PENDING, WorkflowStatus.FAILED): "workflow.failed",
    (WorkflowStatus.RUNNING, WorkflowStatus.SUCCEEDED): "workflow.succeeded",
    (WorkflowStatus.RUNNING, WorkflowStatus.FAILED): "workflow.failed",
    (WorkflowStatus.RUNNING, WorkflowStatus.CANCELLED): "workflow.cancelled",
}


def task_transition(current: TaskStatus | str, new: TaskStatus | str) -> str:
    """Check a task status move and return its event name; raise InvalidTransitionError if illegal."""
    current, new = TaskStatus(current), TaskStatus(new)
    try:
        return TASK_TRANSITIONS[(current, new)]
    except KeyError:
        raise InvalidTransitionError(
            f"Task cannot move from '{current.value}' to '{new.value}'"
        ) from None


def workflow_transition(current: WorkflowStatus | str, new: WorkflowStatus | str) -> str:
    """Check a workflow status move and return its event name; raise InvalidTransitionError if illegal."""
    current, new = WorkflowStatus(current), WorkflowStatus(new)
    try:
        return WORKFLOW_TRANSITIONS[(current, new)]
    except KeyError:
        raise InvalidTransitionError(
            f"Workflow cannot move from '{current.value}' to '{new.value}'"
        ) from None


# ---- integer codes, for array bookkeeping -----------------------------------------------------------------------
# A task status as a small integer (its position in `TaskStatus`), and every legal move as one byte of
# `TASK_MOVES`: `TASK_MOVES[old * NUM_TASK_STATUSES + new]` is 1 when `TASK_TRANSITIONS` has (old, new). Derived
# from the table above, so the two cannot disagree; a lookup is cheap enough for the simulator's event loop.
TASK_STATUS_BY_CODE: tuple[TaskStatus, ...] = tuple(TaskStatus)
TASK_CODE: dict[TaskStatus, int] = {status: code for code, status in enumerate(TASK_STATUS_BY_CODE)}
NUM_TASK_STATUSES = len(TASK_STATUS_BY_CODE)
(PENDING_CODE, READY_CODE, RUNNING_CODE, RETRYING_CODE, SUCCEEDED_CODE, FAILED_CODE, CANCELLED_CODE,
 SKIPPED_CODE) = (TASK_CODE[s] for s in (TaskStatus.PENDING, TaskStatus.READY, TaskStatus.RUNNING,
                                         TaskStatus.RETRYING, TaskStatus.SUCCEEDED, TaskStatus.FAILED,
                                         TaskStatus.CANCELLED, TaskStatus.SKIPPED))


def _task_moves() -> bytes:
    moves = bytearray(NUM_TASK_STATUSES * NUM_TASK_STATUSES)
    for old, new in TASK_TRANSITIONS:
        moves[TASK_CODE[old] * NUM_TASK_STATUSES + TASK_CODE[new]] = 1
    return bytes(moves)


TASK_MOVES: bytes = _task_moves()


def illegal_task_move(old: int, new: int) -> InvalidTransitionError:
    """The error for a move between two coded statuses that `TASK_MOVES` refuses (raise it)."""
    return InvalidTransitionError(f"Task cannot move from '{TASK_STATUS_BY_CODE[old].value}' to "
                                  f"'{TASK_STATUS_BY_CODE[new].value}'")

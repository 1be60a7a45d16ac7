"""Task and workflow statuses and the one table of legal transitions between them.

Every engine (the simulator's bookkeeping, the Ray runtime, the store) checks moves against this table.
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

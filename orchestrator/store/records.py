"""The typed rows the store takes and returns: frozen dataclasses for state changes, history and reads.

Times are UNIX epoch seconds (`time.time()`); a `None` time on a row to record means "now".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from ..states import TaskStatus, WorkflowStatus


@dataclass(frozen=True, slots=True)
class TaskChange:
    """Move one task to `status`. Fields left at None keep their stored value.

    `expected`, when given, is the status the task must have now: the store then checks the move against it
    instead of reading the row first, and the update only applies if the stored status still matches.
    `at` is when the move happened (default: when `apply` runs); it sets `ready_at`, `started_at` or
    `finished_at` depending on the new status.
    """

    run_id: str
    task_id: str
    status: TaskStatus
    attempt: int | None = None
    node: str | None = None
    error: str | None = None
    result_ref: str | None = None
    at: float | None = None
    next_attempt_at: float | None = None
    expected: TaskStatus | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, TaskStatus):
            object.__setattr__(self, "status", TaskStatus(self.status))
        if self.expected is not None and not isinstance(self.expected, TaskStatus):
            object.__setattr__(self, "expected", TaskStatus(self.expected))


@dataclass(frozen=True, slots=True)
class WorkflowChange:
    """Move one workflow run to `status`; `at` sets `started_at` (running) or `finished_at` (terminal)."""

    run_id: str
    status: WorkflowStatus
    error: str | None = None
    at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, WorkflowStatus):
            object.__setattr__(self, "status", WorkflowStatus(self.status))


@dataclass(frozen=True, slots=True)
class RunNote:
    """Something that happened to a run without moving its status (e.g. `workflow.policy_fallback`): an outbox
    event of type `type` whose payload is `detail` plus the run id and `at`, written with the batch. With
    `task_id`, it is about that task (e.g. `task.memory_sized`): the event carries its id."""

    run_id: str
    type: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: float | None = None
    task_id: str | None = None


Change = TaskChange | WorkflowChange | RunNote


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    run_id: str
    name: str
    family: str | None
    policy: str
    status: WorkflowStatus
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class TaskRecord:
    run_id: str
    task_id: str
    position: int  # index of the task in the workflow spec
    category: str
    status: TaskStatus
    attempt: int
    node: str | None
    priority: int
    cpus: float
    memory: int
    gpus: float
    error: str | None
    result_ref: str | None
    ready_at: float | None
    started_at: float | None
    finished_at: float | None
    next_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One outbox event. `id` grows with every event and is the key consumers deduplicate on."""

    id: int
    run_id: str | None
    task_id: str | None
    type: str
    payload: dict[str, Any]
    created_at: float

    def to_json_dict(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "task_id": self.task_id, "type": self.type,
                "payload": self.payload, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One attempt of a task as it ran: where, how it ended, what it measured, what it printed.

    `stdout`, `stderr`, `error` and `exit_info` are truncated to their last 64 KiB when stored.
    """

    run_id: str
    task_id: str
    attempt: int
    status: str  # how the attempt ended: a TaskStatus value (succeeded, failed, cancelled, ...)
    node: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_info: str | None = None
    error: str | None = None
    duration: float | None = None  # seconds
    cpu: float | None = None  # average cores in use
    peak_memory: int | None = None  # bytes
    stdout: str | None = None
    stderr: str | None = None
    id: int | None = None  # set by the store


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One scheduling decision: what the policy saw (`input`), what it chose (`output`), how fast and sure."""

    run_id: str
    task_id: str | None
    policy: str
    node: str | None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    confidence: float | None = None
    latency_us: float | None = None
    model_version: str | None = None
    created_at: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """A resource prediction for one task (runtime s, cpu cores, memory bytes) with its uncertainty band."""

    run_id: str | None
    task_id: str | None
    category: str
    model_version: str
    predicted_runtime: float | None = None
    predicted_cpu: float | None = None
    predicted_memory: float | None = None
    runtime_lower: float | None = None
    runtime_upper: float | None = None
    cpu_lower: float | None = None
    cpu_upper: float | None = None
    memory_lower: float | None = None
    memory_upper: float | None = None
    actual_runtime: float | None = None
    actual_cpu: float | None = None
    actual_memory: float | None = None
    created_at: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class PredictionActual:
    """What a predicted task really used; fills the `actual_*` columns of its predictions."""

    run_id: str
    task_id: str
    runtime: float | None = None
    cpu: float | None = None
    memory: float | None = None
    model_version: str | None = None  # None: every prediction for this task


@dataclass(frozen=True, slots=True)
class SystemSample:
    """Cluster load at one moment, for one node or (node=None) the whole cluster."""

    cpus_total: float
    cpus_used: float
    memory_total: int
    memory_used: int
    queue_length: int
    running_tasks: int
    node: str | None = None
    ts: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class MetricRecord:
    name: str
    value: float
    labels: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    created_at: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class OptimizationRecord:
    """A workflow optimisation that was applied or proposed, with the gain predicted and (later) verified."""

    kind: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    predicted_gain: float | None = None
    verified_gain: float | None = None
    run_id: str | None = None
    workflow: str | None = None
    created_at: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as the store keeps it (never its plaintext). `expires_at` None: the key never expires."""

    id: int
    name: str
    role: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def expired(self, now: float | None = None) -> bool:
        """Whether the key has expired at `now` (default: the current time)."""
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    def status(self, now: float | None = None) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    @property
    def active(self) -> bool:
        """Not revoked and not expired: the key verifies."""
        return self.status() == "active"


ResultKind = Literal["inline", "file", "parquet"]

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """One page of a listing (`Store.page_runs`, `page_tasks`, `page_executions`, `page_events`): its rows in the
    listing's order, and the cursor to pass for the next page, None on the last one. The cursor is opaque."""

    items: tuple[Item, ...]
    next_cursor: str | None

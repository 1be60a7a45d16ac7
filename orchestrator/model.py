"""The workflow model: typed tasks and workflows (pydantic v2), validated as a whole when built.

A workflow is a DAG of tasks. Building a `Workflow` checks ids, dependencies, resources, size and cycles, and
raises a `WorkflowError` subclass that names the problem; nothing half-built is ever returned.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import (
    CycleError,
    DuplicateTaskError,
    ResourceRequestError,
    UnknownTaskError,
    WorkflowTooLargeError,
)

GiB = 1024**3
TiB = 1024**4

_PYTHON_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TASK_ID = re.compile(r"^[^\s/]{1,200}$")


class Limits(BaseModel):
    """Bounds past which a workflow or a request is rejected as absurd. Configurable per deployment."""

    model_config = ConfigDict(frozen=True)

    max_tasks: int = 100_000
    max_cpus: float = 1024.0
    max_memory: int = 16 * TiB
    max_gpus: float = 64.0
    max_retries: int = 100
    max_timeout: float = 30 * 24 * 3600.0


DEFAULT_LIMITS = Limits()
_active_limits: Limits = DEFAULT_LIMITS


def set_limits(limits: Limits) -> None:
    """Set the limits that every later `Workflow` is validated against."""
    global _active_limits
    _active_limits = limits


def get_limits() -> Limits:
    return _active_limits


class Resources(BaseModel):
    """What a task reserves while it runs: cpus (may be fractional), memory in bytes, gpus, custom resources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpus: float = 1.0
    memory: int = 0
    gpus: float = 0.0
    custom: dict[str, float] = Field(default_factory=dict)


class Observation(BaseModel):
    """What a recorded execution of the task measured (from a trace or from the runtime)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: float  # seconds
    avg_cpu: float | None = None  # cores in use on average (1.0 = one full core)
    peak_memory: int | None = None  # bytes
    machine: str | None = None


class TaskSpec(BaseModel):
    """One task of a workflow.

    `entrypoint` is either `module:function` (a Python callable) or a shell command. `category` is the kind of
    task (e.g. `mProject`); prediction models learn per category. `duration` is the expected runtime in
    seconds when known (the simulator uses it; the runtime ignores it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    category: str = ""
    entrypoint: str | None = None
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    retries: int = 0
    retry_delay: float | None = None  # base of the exponential backoff, seconds (None: the runtime's default)
    timeout: float | None = None
    priority: int = 0
    input_bytes: int | None = None
    output_bytes: int | None = None
    duration: float | None = None
    observed: Observation | None = None

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _TASK_ID.match(v):
            raise ValueError(f"task id {v!r} must be 1-200 characters without spaces or '/'")
        return v

    @model_validator(mode="after")
    def _default_category(self) -> "TaskSpec":
        if not self.category:
            # mProject_ID0001 -> mProject; a plain id is its own category.
            object.__setattr__(self, "category", re.sub(r"[_-]?\d+$", "", self.id) or self.id)
        return self

    @property
    def entrypoint_kind(self) -> Literal["python", "shell", "none"]:
        if self.entrypoint is None:
            return "none"
        return "python" if _PYTHON_ENTRYPOINT.match(self.entrypoint) else "shell"


class Workflow(BaseModel):
    """A DAG of tasks. Construction validates the whole graph (see `validate_workflow`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    tasks: list[TaskSpec]
    family: str | None = None  # e.g. the WfCommons application (montage, epigenomics, ...)
    policy: str | None = None  # scheduling policy for this workflow; None = the deployment default
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _validate_graph(self) -> "Workflow":
        validate_workflow(self, get_limits())
        return self

    def task_ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def task(self, task_id: str) -> TaskSpec:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise UnknownTaskError(f"Workflow '{self.name}' has no task '{task_id}'")

    def total_work(self) -> float:
        """Sum of known task durations in cpu-seconds (duration x cpus)."""
        return sum((t.duration or 0.0) * t.resources.cpus for t in self.tasks)


def _check_resources(task: TaskSpec, limits: Limits) -> None:
    r = task.resources
    for name, value, upper in (
        ("cpus", r.cpus, limits.max_cpus),
        ("memory", r.memory, limits.max_memory),
        ("gpus", r.gpus, limits.max_gpus),
    ):
        if not math.isfinite(value) or value < 0:
            raise ResourceRequestError(f"Task '{task.id}' requests {name}={value}: must be a finite number >= 0")
        if value > upper:
            raise ResourceRequestError(
                f"Task '{task.id}' requests {name}={value}, above the limit of {upper}; "
                "lower the request or raise the limit"
            )
    for name, value in r.custom.items():
        if not math.isfinite(value) or value < 0:
            raise ResourceRequestError(f"Task '{task.id}' requests custom resource {name}={value}: must be >= 0")
    if task.retries < 0 or task.retries > limits.max_retries:
        raise ResourceRequestError(
            f"Task '{task.id}' has retries={task.retries}: must be between 0 and {limits.max_retries}"
        )
    if task.timeout is not None and (not math.isfinite(task.timeout) or task.timeout <= 0
                                     or task.timeout > limits.max_timeout):
        raise ResourceRequestError(
            f"Task '{task.id}' has timeout={task.timeout}: must be > 0 and at most {limits.max_timeout} s"
        )
    if task.retry_delay is not None and (not math.isfinite(task.retry_delay) or task.retry_delay < 0):
        raise ResourceRequestError(f"Task '{task.id}' has retry_delay={task.retry_delay}: must be >= 0")
    if task.duration is not None and (not math.isfinite(task.duration) or task.duration < 0):
        raise ResourceRequestError(f"Task '{task.id}' has duration={task.duration}: must be a finite number >= 0")
    for name in ("input_bytes", "output_bytes"):
        v = getattr(task, name)
        if v is not None and v < 0:
            raise ResourceRequestError(f"Task '{task.id}' has {name}={v}: must be >= 0")


def validate_workflow(wf: Workflow, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise a WorkflowError naming the first problem: size, duplicate or unknown ids, resources, cycles."""
    n = len(wf.tasks)
    if n == 0:
        raise UnknownTaskError(f"Workflow '{wf.name}' has no tasks")
    if n > limits.max_tasks:
        raise WorkflowTooLargeError(
            f"Workflow '{wf.name}' has {n} tasks, above the limit of {limits.max_tasks}; "
            "split it or raise Limits.max_tasks"
        )
    index: dict[str, int] = {}
    for i, t in enumerate(wf.tasks):
        if t.id in index:
            raise DuplicateTaskError(f"Workflow '{wf.name}' defines task '{t.id}' twice")
        index[t.id] = i
    for t in wf.tasks:
        _check_resources(t, limits)
        seen: set[str] = set()
        for dep in t.depends_on:
            if dep not in index:
                raise UnknownTaskError(f"Task '{t.id}' depends on unknown task '{dep}'")
            if dep == t.id:
                raise CycleError([t.id])
            if dep in seen:
                raise DuplicateTaskError(f"Task '{t.id}' lists dependency '{dep}' twice")
            seen.add(dep)
    cycle = find_cycle(wf.tasks, index)
    if cycle:
        raise CycleError(cycle)


def find_cycle(tasks: list[TaskSpec], index: dict[str, int]) -> list[str] | None:
    """Return the ids of one dependency cycle, or None. Kahn's algorithm, then a walk on what is left."""
    n = len(tasks)
    indeg = [len(t.depends_on) for t in tasks]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, t in enumerate(tasks):
        for dep in t.depends_on:
            children[index[dep]].append(i)
    stack = [i for i in range(n) if indeg[i] == 0]
    done = 0
    while stack:
        i = stack.pop()
        done += 1
        for c in children[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                stack.append(c)
    if done == n:
        return None
    # Every node left has a parent that is also left: walk parents until one repeats.
    left = {i for i in range(n) if indeg[i] > 0}
    node = next(iter(left))
    order: list[int] = []
    position: dict[int, int] = {}
    while node not in position:
        position[node] = len(order)
        order.append(node)
        node = next(index[d] for d in tasks[node].depends_on if index[d] in left)
    cycle = order[position[node]:]
    cycle.reverse()  # parent -> child order
    return [tasks[i].id for i in cycle]

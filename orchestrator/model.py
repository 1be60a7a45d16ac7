"""The workflow model: typed tasks and workflows (pydantic v2), validated as a whole when built.

A workflow is a DAG of tasks. Building a `Workflow` checks ids, dependencies, resources, size and cycles, and
raises a `WorkflowError` subclass that names the problem; nothing half-built is ever returned.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import (
    CycleError,
    DuplicateTaskError,
    OrchestratorError,
    ResourceRequestError,
    UnknownTaskError,
    WorkflowTooLargeError,
)

GiB = 1024**3
TiB = 1024**4
MAX_TASKS_ENV = "ORCHESTRATOR_MAX_TASKS"
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")

_PYTHON_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TASK_ID = re.compile(r"^[^\s/]{1,200}$")


class Limits(BaseModel):
    """Bounds past which a workflow or a request is rejected as absurd. Configurable per deployment."""

    model_config = ConfigDict(frozen=True)

    max_tasks: int = 100_000
    max_cpus: float = 1024.0
    max_memory: int = 16 * TiB
    max_gpus: float = 64.0
    max_custom: float = 1e9  # any one custom resource
    max_retries: int = 100
    max_timeout: float = 30 * 24 * 3600.0
    max_duration: float = 365 * 24 * 3600.0  # a task's expected or recorded runtime, seconds


class LimitsError(OrchestratorError):
    """A configured limit (environment variable or option) is not a valid value."""


DEFAULT_LIMITS = Limits()
_active_limits: Limits | None = None  # set by set_limits(); None = the defaults and the environment


def set_limits(limits: Limits | None) -> None:
    """Set the limits that every later `Workflow` is validated against (None: back to defaults + environment)."""
    global _active_limits
    _active_limits = limits


def parse_max_tasks(value: Any, what: str) -> int:
    """A task-count limit given by a user: a whole number >= 1; LimitsError naming `what` otherwise."""
    try:
        if isinstance(value, bool):
            raise ValueError
        n = int(str(value).strip().replace("_", "")) if not isinstance(value, int) else value
    except ValueError:
        raise LimitsError(f"{what}={value!r} is not a whole number of tasks") from None
    if n < 1:
        raise LimitsError(f"{what}={value!r}: the task limit must be at least 1")
    return n


def get_limits() -> Limits:
    """The active limits: those set with `set_limits`, else the defaults with `$ORCHESTRATOR_MAX_TASKS` applied."""
    if _active_limits is not None:
        return _active_limits
    env = os.environ.get(MAX_TASKS_ENV)
    if env is None or not env.strip():
        return DEFAULT_LIMITS
    return DEFAULT_LIMITS.model_copy(update={"max_tasks": parse_max_tasks(env, MAX_TASKS_ENV)})


def with_max_tasks(max_tasks: int | None) -> None:
    """Raise or lower the workflow-size limit for the rest of the process (None: leave it as it is)."""
    if max_tasks is not None:
        set_limits(get_limits().model_copy(update={"max_tasks": parse_max_tasks(max_tasks, "--max-tasks")}))


def format_bytes(n: float) -> str:
    """A byte count for people: 17592186044416 -> '16 TiB', 1536 -> '1.5 KiB'."""
    if not math.isfinite(n):
        return str(n)
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value /= 1024
        unit += 1
    text = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{text} {_BINARY_UNITS[unit]}"


def _no_bool(value: Any, info) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{info.field_name}={value!r} is a boolean; give a number")
    return value


class Resources(BaseModel):
    """What a task reserves while it runs: cpus (may be fractional), memory in bytes, gpus, custom resources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpus: float = 1.0
    memory: int = 0
    gpus: float = 0.0
    custom: dict[str, float] = Field(default_factory=dict)

    _numbers_not_bools = field_validator("cpus", "memory", "gpus", mode="before")(_no_bool)

    @field_validator("custom", mode="before")
    @classmethod
    def _custom_not_bools(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name, value in v.items():
                if isinstance(value, bool):
                    raise ValueError(f"custom resource {name}={value!r} is a boolean; give a number")
        return v


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

    _numbers_not_bools = field_validator("retries", "retry_delay", "timeout", "priority", "input_bytes",
                                         "output_bytes", "duration", mode="before")(_no_bool)

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
            shown, limit = (f"{format_bytes(value)} ({value} bytes)", format_bytes(upper)) if name == "memory" \
                else (value, upper)
            raise ResourceRequestError(
                f"Task '{task.id}' requests {name}={shown}, above the limit of {limit}; "
                "lower the request or raise the limit"
            )
    for name, value in r.custom.items():
        if not math.isfinite(value) or value < 0:
            raise ResourceRequestError(f"Task '{task.id}' requests custom resource {name}={value}: must be >= 0")
        if value > limits.max_custom:
            raise ResourceRequestError(
                f"Task '{task.id}' requests custom resource {name}={value}, above the limit of "
                f"{limits.max_custom:g}; lower the request or raise the limit"
            )
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
    if task.duration is not None and task.duration > limits.max_duration:
        raise ResourceRequestError(
            f"Task '{task.id}' has duration={task.duration:g} s, above the limit of {limits.max_duration:g} s "
            f"({limits.max_duration / 86400:g} days)"
        )
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
            f"Workflow '{wf.name}' has {n} tasks, above the limit of {limits.max_tasks}; split it or raise "
            f"the limit (--max-tasks N on the command line, or the environment variable {MAX_TASKS_ENV}=N)"
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
                raise _cycle_error(wf.name, [t.id])
            if dep in seen:
                raise DuplicateTaskError(f"Task '{t.id}' lists dependency '{dep}' twice")
            seen.add(dep)
    cycle = find_cycle(wf.tasks, index)
    if cycle:
        raise _cycle_error(wf.name, cycle)


def _cycle_error(name: str, cycle: list[str]) -> CycleError:
    """A CycleError (its `.cycle` the ids) whose message names the workflow."""
    err = CycleError(cycle)
    err.args = (f"Workflow '{name}' has a dependency cycle: {' -> '.join(cycle + cycle[:1])}",)
    return err


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

"""The workflow model: typed tasks and workflows (pydantic v2), validated as a whole when built.

A workflow is a DAG of tasks. Building a `Workflow` checks names, ids, dependencies, resources and other numbers,
size, cycles and `$ref` arguments, and raises a `WorkflowError` subclass that names the problem; nothing half-built
is ever returned. `ref_names` finds the `{"$ref": task}` placeholders in a task's arguments.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import (
    CycleError,
    DuplicateTaskError,
    OrchestratorError,
    ResourceRequestError,
    UnknownTaskError,
    WorkflowError,
    WorkflowTooLargeError,
)

GiB = 1024**3
TiB = 1024**4
EiB = 1024**6
MAX_TASKS_ENV = "ORCHESTRATOR_MAX_TASKS"
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")

_RAY_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")  # no node offers them as custom resources
MAX_TIME_SCALE = 1e6  # metadata.time_scale: replayed tasks sleep their duration times this
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
    max_priority: int = 10**9  # priorities range from -max_priority to max_priority (the store keeps 32 bits)
    max_timeout: float = 30 * 24 * 3600.0
    max_duration: float = 365 * 24 * 3600.0  # a task's expected or recorded runtime, and retry_delay, seconds
    max_data_bytes: int = EiB  # input_bytes, output_bytes, a recorded peak memory


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
    if isinstance(n, int) and abs(n) >= 1024**9:  # past YiB, or too long to be a float
        return f"{_shown(n)} B"
    if not math.isfinite(n):
        return str(n)
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value /= 1024
        unit += 1
    text = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{text} {_BINARY_UNITS[unit]}"


def _shown(v: Any) -> str:
    """A value for a message, short and on one line: floats as %g; integers in full up to 21 digits, longer ones
    (which Python may refuse to print, or to turn into a float) as e.g. '1e+30'; anything else as a short repr."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return reprlib.repr(v)
    if isinstance(v, float) or abs(v) < 10**21:
        return f"{v:g}" if isinstance(v, float) else str(v)
    k = int(math.log10(abs(v)))
    return f"{v / 10**k:.3g}e+{k}"


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

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("the entrypoint must not be empty (leave it out for a task without one)")
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

    @field_validator("name")
    @classmethod
    def _name_on_one_line(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the workflow name must not be empty")
        if not v.isprintable():
            raise ValueError(f"the workflow name {v!r} must be printable text on one line")
        return v

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
        if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
            raise ResourceRequestError(f"Task '{task.id}' requests {name}={value}: must be a finite number >= 0")
        if value > upper:
            shown, limit = (f"{format_bytes(value)} ({_shown(value)} bytes)", format_bytes(upper)) \
                if name == "memory" else (value, upper)
            raise ResourceRequestError(
                f"Task '{task.id}' requests {name}={shown}, above the limit of {limit}; "
                "lower the request or raise the limit"
            )
    for name, value in r.custom.items():
        if name in _RAY_RESOURCES or name.startswith("node:"):
            raise ResourceRequestError(f"Task '{task.id}' requests custom resource {name!r}: Ray's own resources "
                                       "are requested with cpus, gpus and memory, not as custom resources")
        if not math.isfinite(value) or value < 0:
            raise ResourceRequestError(f"Task '{task.id}' requests custom resource {name}={value}: must be >= 0")
        if value > limits.max_custom:
            raise ResourceRequestError(
                f"Task '{task.id}' requests custom resource {name}={value}, above the limit of "
                f"{limits.max_custom:g}; lower the request or raise the limit"
            )
    _check_whole(task, "retries", task.retries, 0, limits.max_retries)
    _check_whole(task, "priority", task.priority, -limits.max_priority, limits.max_priority)
    _check_seconds(task, "timeout", task.timeout, limits.max_timeout, positive=True)
    _check_seconds(task, "retry_delay", task.retry_delay, limits.max_duration)
    _check_seconds(task, "duration", task.duration, limits.max_duration)
    for name in ("input_bytes", "output_bytes"):
        _check_whole(task, name, getattr(task, name), 0, limits.max_data_bytes, format_bytes(limits.max_data_bytes))
    if task.observed is not None:
        o = task.observed
        _check_seconds(task, "observed.runtime", o.runtime, limits.max_duration)
        _check_seconds(task, "observed.avg_cpu", o.avg_cpu, limits.max_cpus, unit=" cores")
        _check_whole(task, "observed.peak_memory", o.peak_memory, 0, limits.max_data_bytes,
                     format_bytes(limits.max_data_bytes))


def _check_whole(task: TaskSpec, name: str, value: int | None, low: int, high: int, shown_high: str = "") -> None:
    """Refuse a whole number outside [low, high], naming the task, the field and the range."""
    if value is not None and not low <= value <= high:
        raise ResourceRequestError(
            f"Task '{task.id}' has {name}={_shown(value)}: must be between {low} and {shown_high or high}")


def _check_seconds(task: TaskSpec, name: str, value: float | None, high: float, positive: bool = False,
                   unit: str = " s") -> None:
    """Refuse NaN, an infinity, a negative value (or zero, when `positive`) and one above `high`."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ResourceRequestError(
            f"Task '{task.id}' has {name}={value:g}: must be a finite number {'>' if positive else '>='} 0")
    if value > high:
        days = f" ({high / 86400:g} days)" if unit == " s" else ""
        raise ResourceRequestError(
            f"Task '{task.id}' has {name}={value:g}{unit}, above the limit of {high:g}{unit}{days}")


def ref_names(*values: Any) -> list[Any]:
    """The targets of the `{"$ref": task}` placeholders in `values` (at any depth of lists and dicts), in the order
    they appear, repeats included. A dict is a placeholder when "$ref" is its only key. In a validated workflow
    every target is the id of an ancestor of the task; before validation a target may be anything."""
    found: list[Any] = []
    stack = list(reversed(values))
    while stack:  # no recursion: the nesting depth of a value is not bounded here
        value = stack.pop()
        if isinstance(value, dict):
            if len(value) == 1 and "$ref" in value:
                found.append(value["$ref"])
            else:
                stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return found


def validate_workflow(wf: Workflow, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise a WorkflowError naming the first problem: size, duplicate or unknown ids, resources and other numbers,
    cycles, `$ref`s that name no ancestor, metadata.time_scale."""
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
    for t in wf.tasks:
        _check_refs(wf, t, index)
    scale = wf.metadata.get("time_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= MAX_TIME_SCALE:
        raise WorkflowError(f"Workflow '{wf.name}' has metadata.time_scale={_shown(scale)}: must be a number above 0 "
                            f"and at most {MAX_TIME_SCALE:g}")


def _check_refs(wf: Workflow, task: TaskSpec, index: dict[str, int]) -> None:
    """Every `$ref` of a task names one of its ancestors: only their results exist when it starts."""
    ancestors: set[str] | None = None  # found only for a ref that is not a direct dependency
    for target in ref_names(task.args, task.kwargs):
        if not isinstance(target, str):
            raise UnknownTaskError(
                f"Task '{task.id}' refers to {{$ref: {_shown(target)}}}: a $ref names a task by its id, a string")
        shown = target if target.isprintable() and len(target) <= 200 else _shown(target)
        if target not in index:
            raise UnknownTaskError(
                f"Task '{task.id}' refers to {{$ref: {shown}}}, which is not a task of workflow '{wf.name}'")
        if target in task.depends_on:
            continue
        if ancestors is None:
            ancestors = _ancestors(wf.tasks, index, index[task.id])
        if target not in ancestors:
            raise UnknownTaskError(
                f"Task '{task.id}' refers to {{$ref: {shown}}}, which is not among its dependencies "
                f"(add '{shown}' to depends_on)")


def _ancestors(tasks: list[TaskSpec], index: dict[str, int], i: int) -> set[str]:
    """The ids of every task that task `i` depends on, directly or through others."""
    seen: set[str] = set()
    stack = list(tasks[i].depends_on)
    while stack:
        dep = stack.pop()
        if dep not in seen:
            seen.add(dep)
            stack.extend(tasks[index[dep]].depends_on)
    return seen


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

"""The Python API: a `@task` decorator and a `WorkflowBuilder` that records calls into a validated `Workflow`.

    @task(cpus=1, retries=2)
    def extract(n): ...

    @task
    def total(rows): ...

    if __name__ == "__main__":     # required in a script: Ray workers import it for its task functions
        with WorkflowBuilder("etl") as wf:
            rows = extract(10)
            total(rows)        # depends on extract; receives its result
        result = wf.run()      # on Ray, through the orchestrator

Outside a builder a decorated function is a plain function, so it stays testable. Task functions defined in the
script that is run are imported by the Ray workers from that script, so its workflow must be built and run under
`if __name__ == "__main__":`; `run()` refuses to run inside a Ray worker (it would submit the workflow again from
every worker that imports the script, and wait for itself forever).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError, WorkflowError
from ..model import Resources, TaskSpec, Workflow

_current: ContextVar["WorkflowBuilder | None"] = ContextVar("orchestrator_builder", default=None)


class TaskHandle:
    """A task recorded in a builder; pass it as an argument to another task to depend on its result."""

    def __init__(self, task_id: str):
        self.id = task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"


def in_ray_worker() -> bool:
    """True in a Ray worker process (a task or an actor), False in a driver or without Ray."""
    ray = sys.modules.get("ray")
    if ray is None:  # never imported: not a Ray worker
        return False
    try:
        from ray._private.worker import global_worker

        return global_worker.mode == ray.WORKER_MODE
    except Exception:  # noqa: BLE001 - private API moved: ask the runtime context
        try:
            return ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        except Exception:  # noqa: BLE001
            return False


def ensure_not_in_ray_worker(what: str = "WorkflowBuilder.run()") -> None:
    """Refuse to submit a workflow from a Ray worker: that is a script's top-level `wf.run()` executed again when
    a worker imports the script for its task functions, which would submit more runs and deadlock."""
    if in_ray_worker():
        raise OrchestratorError(
            f"{what} was called inside a Ray worker. Workers import the module that defines your task functions, "
            "so a workflow run at the top level of a script runs again in every worker (submitting more runs and "
            "waiting forever): build and run it under `if __name__ == \"__main__\":`")


def _module_of(fn) -> str:
    module = fn.__module__
    if module != "__main__":
        return module
    path = Path(inspect.getfile(fn)).resolve()
    try:
        rel = path.relative_to(Path(os.getcwd()).resolve())
    except ValueError:
        raise WorkflowError(
            f"Task function '{fn.__qualname__}' is defined in a script outside the current directory; "
            "workers cannot import it - move it into an importable module"
        ) from None
    return ".".join(rel.with_suffix("").parts)


def _encode(value: Any, deps: list[str]) -> Any:
    if isinstance(value, TaskHandle):
        deps.append(value.id)
        return {"$ref": value.id}
    if isinstance(value, (list, tuple)):
        return [_encode(v, deps) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, deps) for k, v in value.items()}
    return value


class TaskFunction:
    def __init__(self, fn, **options: Any):
        functools.update_wrapper(self, fn)
        self.__orchestrator_function__ = fn
        self.fn = fn
        self.options = options

    def __call__(self, *args: Any, **kwargs: Any):
        builder = _current.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        after = kwargs.pop("after", None) or []
        return builder.add(self, args, kwargs, after)


def task(fn=None, *, cpus: float = 1.0, memory: int | str = 0, gpus: float = 0.0, retries: int = 0,
         retry_delay: float | None = None, timeout: float | None = None, priority: int = 0,
         category: str | None = None, duration: float | None = None):
    """Declare a workflow task with its resource request, retries, timeout and priority."""
    options = dict(cpus=cpus, memory=memory, gpus=gpus, retries=retries, retry_delay=retry_delay,
                   timeout=timeout, priority=priority, category=category, duration=duration)
    if fn is not None:
        return TaskFunction(fn, **options)
    return lambda f: TaskFunction(f, **options)


class WorkflowBuilder:
    """Collects task calls made inside `with WorkflowBuilder(name):` into a `Workflow`."""

    def __init__(self, name: str, policy: str | None = None, metadata: dict | None = None):
        self.name = name
        self.policy = policy
        self.metadata = metadata or {}
        self.tasks: list[TaskSpec] = []
        self._counts: dict[str, int] = {}
        self._token = None
        self._workflow: Workflow | None = None

    def __enter__(self) -> "WorkflowBuilder":
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)

    def add(self, fn: TaskFunction, args: tuple, kwargs: dict, after: list[TaskHandle]) -> TaskHandle:
        from ..loaders import parse_bytes

        base = fn.fn.__name__
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        task_id = base if n == 0 else f"{base}-{n}"
        deps: list[str] = []
        enc_args = _encode(list(args), deps)
        enc_kwargs = _encode(dict(kwargs), deps)
        deps.extend(h.id for h in after)
        o = fn.options
        spec = TaskSpec(
            id=task_id,
            category=o["category"] or re.sub(r"\W", "_", base),
            entrypoint=f"{_module_of(fn.fn)}:{fn.fn.__qualname__}",
            args=enc_args,
            kwargs=enc_kwargs,
            depends_on=list(dict.fromkeys(deps)),
            resources=Resources(cpus=o["cpus"], memory=parse_bytes(o["memory"]), gpus=o["gpus"]),
            retries=o["retries"],
            retry_delay=o["retry_delay"],
            timeout=o["timeout"],
            priority=o["priority"],
            duration=o["duration"],
        )
        self.tasks.append(spec)
        self._workflow = None
        return TaskHandle(task_id)

    def build(self) -> Workflow:
        if self._workflow is None:
            self._workflow = Workflow(name=self.name, tasks=self.tasks, policy=self.policy, metadata=self.metadata)
        return self._workflow

    def run(self, **kwargs: Any) -> dict:
        """Run on Ray through the orchestrator (see `orchestrator.runtime.run_workflow`), starting or connecting
        to Ray when needed. Raises OrchestratorError inside a Ray worker (see `ensure_not_in_ray_worker`)."""
        from .client import run_workflow

        ensure_not_in_ray_worker()
        return run_workflow(self.build(), **kwargs)

"""The one scheduling-policy interface, shared by the simulator, the Ray runtime and the RL environment.

An engine keeps a `SchedulingState`: the active jobs (workflow DAGs with task statuses and predicted
durations), the ready tasks in the policy's queue order, and the free resources of each node. Whenever something
changes it calls `policy.schedule(state)`, which returns `Decision`s: which ready task starts now, on which node.
The engine checks each decision fits, reserves the resources and starts the task.
"""

from __future__ import annotations

from abc import ABC
from itertools import islice
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..dag import DagAnalysis, DagArrays
from ..states import TASK_STATUS_BY_CODE, TaskStatus

EPS = 1e-9


class ReadyTask:
    """A task whose parents have all finished, waiting to be placed. Created once per (re)entry to the ready set."""

    __slots__ = ("job", "task", "cpus", "memory", "gpus", "predicted", "ready_time", "seq", "priority", "key",
                 "allowed")

    def __init__(self, job: int, task: int, cpus: float, memory: float, gpus: float, predicted: float,
                 ready_time: float, seq: int, priority: int = 0, allowed: frozenset[int] | None = None):
        self.job = job  # the engine's job index
        self.task = task  # index into the job's DagArrays
        self.cpus = cpus
        self.memory = memory
        self.gpus = gpus
        self.predicted = predicted  # predicted duration in seconds: what a scheduler may know
        self.ready_time = ready_time
        self.seq = seq  # engine-wide order of becoming ready (a unique tie-breaker)
        self.priority = priority  # the user's priority: higher runs first in every heuristic
        self.allowed = allowed  # node indices the task may run on (custom resources); None = any node
        self.key: tuple = ()

    def __repr__(self) -> str:
        return f"ReadyTask(job={self.job}, task={self.task}, cpus={self.cpus}, predicted={self.predicted:.3g})"


_new_ready_task = ReadyTask.__new__


def ready_task(job: Any, t: int, now: float, seq: int, allowed: frozenset[int] | None) -> ReadyTask:
    """Task `t` of `job` entering the ready set at `now`, the `seq`-th task of the engine to do so: the one way
    both engines make a `ReadyTask`. `job` holds per-task lists `cpus`, `memory`, `gpus`, `pred` (predicted
    seconds) and `task_priority` (the user's priority of each task); `allowed` is what `allowed_nodes` says of
    the task's custom-resource request. (Fields set directly: this runs once per task in the simulator's loop.)"""
    rt = _new_ready_task(ReadyTask)
    rt.job = job.id
    rt.task = t
    rt.cpus = job.cpus[t]
    rt.memory = job.memory[t]
    rt.gpus = job.gpus[t]
    rt.predicted = job.pred[t]
    rt.ready_time = now
    rt.seq = seq
    rt.priority = job.task_priority[t]
    rt.allowed = allowed
    rt.key = ()
    return rt


class Decision(NamedTuple):
    """Start `task` on node index `node`. Engines unpack decisions as `(task, node)` pairs, so a policy may
    return plain pairs (the default list scheduler does, in its hot loop)."""

    task: ReadyTask
    node: int


class NodeView:
    """Capacities and live free resources per node (plain lists: policies read single entries in hot loops), and
    the custom resources each node offers (`custom`, what `allowed_nodes` reads)."""

    __slots__ = ("names", "cap_cpus", "cap_memory", "cap_gpus", "free_cpus", "free_memory", "free_gpus", "custom")

    def __init__(self, names: list[str], cpus: list[float], memory: list[float], gpus: list[float],
                 custom: list[dict[str, float]] | None = None):
        self.names = list(names)
        self.cap_cpus = [float(c) for c in cpus]
        self.cap_memory = [float(m) for m in memory]
        self.cap_gpus = [float(g) for g in gpus]
        self.free_cpus = list(self.cap_cpus)
        self.free_memory = list(self.cap_memory)
        self.free_gpus = list(self.cap_gpus)
        self.custom = [dict(c) for c in custom] if custom is not None else [{} for _ in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def fits(self, node: int, cpus: float, memory: float, gpus: float) -> bool:
        return (self.free_cpus[node] >= cpus - EPS and self.free_memory[node] >= memory - EPS
                and self.free_gpus[node] >= gpus - EPS)

    def reserve(self, node: int, cpus: float, memory: float, gpus: float) -> None:
        self.free_cpus[node] -= cpus
        self.free_memory[node] -= memory
        self.free_gpus[node] -= gpus

    def release(self, node: int, cpus: float, memory: float, gpus: float) -> None:
        self.free_cpus[node] += cpus
        self.free_memory[node] += memory
        self.free_gpus[node] += gpus


class JobView(Protocol):
    """What a policy may read about an active job (a running workflow)."""

    id: int
    name: str
    arrival: float
    priority: int
    dag: DagArrays
    predicted: np.ndarray  # predicted duration per task
    analysis: DagAnalysis  # computed on predicted durations
    status: bytearray  # one TASK_* code per task; np.frombuffer(status, np.int8) gives an array view
    remaining_work: float  # predicted cpu-seconds of tasks not finished
    remaining_tasks: int


# Task status codes in JobView.status: a compact view of states.TaskStatus for policies (a retrying task is
# pending again; cancelled and skipped tasks count as failed).
TASK_PENDING, TASK_READY, TASK_RUNNING, TASK_DONE, TASK_FAILED = 0, 1, 2, 3, 4
VIEW_CODE: dict[TaskStatus, int] = {
    TaskStatus.PENDING: TASK_PENDING, TaskStatus.RETRYING: TASK_PENDING, TaskStatus.READY: TASK_READY,
    TaskStatus.RUNNING: TASK_RUNNING, TaskStatus.SUCCEEDED: TASK_DONE, TaskStatus.FAILED: TASK_FAILED,
    TaskStatus.CANCELLED: TASK_FAILED, TaskStatus.SKIPPED: TASK_FAILED,
}
VIEW_OF_CODE = bytes(VIEW_CODE[s] for s in TASK_STATUS_BY_CODE)  # states.TASK_CODE -> JobView.status code


class OrderedReadyTasks(Protocol):
    """The ready tasks of one policy in its queue order, as a scheduling state holds them (`queue.ReadyQueue`)."""

    def __len__(self) -> int: ...

    def iter(self, max_cpus: float | None = None, max_predicted: float | None = None) -> Iterator[ReadyTask]: ...

    def walk(self, nodes: "NodeView", free_c: list[float], free_m: list[float], free_g: list[float], most: float,
             scan_limit: int, place, take: bool,
             max_predicted: float | None = None) -> tuple[list[tuple[ReadyTask, int]], float]: ...


class SchedulingState(Protocol):
    """What a policy sees. Both engines offer it: the simulator (the `Simulation` itself), the runtime (one view
    per policy), and in the dispatch-ahead pass `ahead.AheadView` (allowances as free resources, only short
    tasks offered)."""

    now: float
    nodes: NodeView
    jobs: Mapping[int, JobView]
    queue: OrderedReadyTasks  # the policy's ready queue: `ready()` iterates it; the default `schedule` walks it
    max_predicted: float | None  # only tasks predicted to take at most this long are offered; None: all

    def ready(self, max_cpus: float | None = None) -> Iterable[ReadyTask]:
        """Ready tasks in the policy's queue order (those offered: see `max_predicted`). With `max_cpus` the engine
        may leave out tasks that request more cpus (a hint to skip what cannot fit; the order of the rest is
        unchanged)."""

    @property
    def num_ready(self) -> int: ...


class SchedulingPolicy(ABC):
    """Base class of every policy. Subclasses set the queue order through `task_key` (and `job_key` when the
    policy orders jobs first), and may override `place` (which node) or `schedule` (everything).

    The default `schedule` is list scheduling: walk the ready tasks in queue order and start each on the node
    `place` picks, skipping tasks that fit nowhere, until the cluster is full (`ReadyQueue.walk`, the one
    implementation: the simulator's fast path runs the same walk on its live resources).
    """

    name: str = "base"
    description: str = ""
    orders_jobs: bool = False  # True: the queue is ordered by job_key first, then by task_key within a job
    scan_limit: int = 64  # how many non-fitting tasks to skip over before giving up (backfilling depth)

    def reset(self, seed: int | None = None) -> None:
        """Called by an engine before a run."""

    def on_job_arrival(self, job: JobView) -> None:
        """Called once per job before its first task becomes ready (precompute per-job ranks here)."""

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        """Queue order of a ready task (ascending). Evaluated once, when the task becomes ready."""
        return (-task.priority, task.ready_time)

    def job_key(self, job: JobView) -> tuple:
        """Queue order of a job (ascending), re-evaluated when the job progresses. Used if `orders_jobs`."""
        return (-job.priority, job.arrival, job.id)

    def place(self, task: ReadyTask, nodes: NodeView, free_cpus: list[float], free_memory: list[float],
              free_gpus: list[float]) -> int | None:
        """Pick a node for a task given tentative free resources; None if it fits nowhere. Default: first fit."""
        return first_fit(task, free_cpus, free_memory, free_gpus)

    def schedule(self, state: SchedulingState) -> list[Decision]:
        nodes = state.nodes
        free_c = list(nodes.free_cpus)
        most = max(free_c, default=0.0)
        if most + EPS < 2 * EPS:
            return []  # no cpu free anywhere (a zero-cpu task waits for the next round)
        place = None if type(self).place is SchedulingPolicy.place else self.place
        started, _ = state.queue.walk(nodes, free_c, list(nodes.free_memory), list(nodes.free_gpus), most,
                                      self.scan_limit, place, take=False, max_predicted=state.max_predicted)
        return started  # (task, node) pairs: a Decision's fields, without the named-tuple construction cost

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description}


def first_fit(task: ReadyTask, free_cpus: list[float], free_memory: list[float],
              free_gpus: list[float]) -> int | None:
    """The first node (index) with room for the task among those it may use; None if none has."""
    c, m, g = task.cpus - EPS, task.memory - EPS, task.gpus - EPS
    allowed = task.allowed
    for i in range(len(free_cpus)):
        if free_cpus[i] >= c and free_memory[i] >= m and free_gpus[i] >= g and (allowed is None or i in allowed):
            return i
    return None


def iter_first(iterable: Iterable[ReadyTask], k: int) -> Iterator[ReadyTask]:
    """The first k items of the ready iteration (no more is taken from it)."""
    return islice(iterable, k)

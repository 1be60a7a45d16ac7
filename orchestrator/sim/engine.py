"""A discrete-event simulator of workflows on a cluster. Pure: a function of (workload, cluster, policy, seed).

Tasks hold their requested resources for their *actual* duration; the policy only sees *predicted* durations.
The `Simulation` object is itself the `SchedulingState` the policy reads. `run()` drives it to the end;
`advance()` / `apply()` let a learning environment take one decision at a time.
"""

from __future__ import annotations

import gc
import heapq
import time
from functools import cached_property

import numpy as np

from ..dag import DagAnalysis, analyse
from ..errors import PolicyError, SimulationError
from ..scheduling.interface import (
    EPS,
    TASK_DONE,
    TASK_PENDING,
    TASK_READY,
    TASK_RUNNING,
    Decision,
    NodeView,
    ReadyTask,
    SchedulingPolicy,
)
from ..scheduling.queue import ReadyQueue
from .cluster import Cluster
from .metrics import SimResult, compute_result
from .workload import Job, Workload


class JobState:
    """An active job as the policy sees it (satisfies `JobView`)."""

    __slots__ = ("id", "name", "family", "arrival", "priority", "dag", "predicted", "status",
                 "remaining_work", "remaining_tasks", "finish", "job", "pending", "cpus", "memory", "gpus",
                 "actual", "pred", "kids", "start", "end", "node", "__dict__")  # __dict__: for `analysis`

    def __init__(self, job: Job, record: bool, dag_lists: tuple | None = None):
        dag = job.dag
        self.id = job.id
        self.name = job.name
        self.family = job.family
        self.arrival = job.arrival
        self.priority = job.priority
        self.dag = dag
        self.job = job
        self.predicted = job.predicted  # `analysis` is computed when first read
        self.status = bytearray(dag.n)  # TASK_* codes; np.frombuffer(status, np.int8) for an array view
        self.remaining_work = float((job.predicted * dag.cpus).sum())
        self.remaining_tasks = dag.n
        self.finish = float("nan")
        # Plain lists for the hot loop (numpy scalar access is slow); those of the DAG are read-only, so jobs of
        # one DAG may share them (`dag_lists`, from `_dag_lists()`).
        in_degree, self.cpus, self.memory, self.gpus, self.kids = dag_lists or _dag_lists(dag)
        self.pending = in_degree.copy()
        self.actual = job.actual.tolist()
        self.pred = job.predicted.tolist()
        if record:
            self.start = [0.0] * dag.n
            self.end = [0.0] * dag.n
            self.node = [-1] * dag.n
        else:
            self.start = self.end = self.node = None

    @cached_property
    def analysis(self) -> DagAnalysis:
        """The DAG analysis on predicted durations, computed on first use (FIFO, for one, never reads it)."""
        return analyse(self.dag, self.predicted)


def _dag_lists(dag) -> tuple[list, list, list, list, list]:
    """A DAG's arrays as the plain lists a `JobState` reads: in-degree, cpus, memory, gpus, and the children
    of each task."""
    ptr, children = dag.children_ptr.tolist(), dag.children.tolist()
    return (dag.in_degree.tolist(), dag.cpus.tolist(), dag.memory.tolist(), dag.gpus.tolist(),
            list(map(children.__getitem__, map(slice, ptr, ptr[1:]))))


class Simulation:
    """Discrete-event simulation state; also the `SchedulingState` handed to the policy.

    Events: job arrivals in time order (ties in workload order), and task finishes kept as a heap of distinct
    finish times plus, per time, the tasks finishing then in the order they started. All events of one time
    form a batch: arrivals first, then finishes; then the policy is asked for decisions.
    """

    def __init__(self, workload: Workload, cluster: Cluster, policy: SchedulingPolicy, seed: int = 0,
                 record: bool = True):
        if len(workload) == 0:
            raise SimulationError("The workload has no jobs")
        self.workload = workload
        self.cluster = cluster
        self.policy = policy
        self.seed = seed
        self.record = record
        self.now = 0.0
        self.nodes = NodeView([n.name for n in cluster.nodes], [n.cpus for n in cluster.nodes],
                              [n.memory for n in cluster.nodes], [n.gpus for n in cluster.nodes])
        self.jobs: dict[int, JobState] = {}
        self.finished: dict[int, JobState] = {}
        self.queue = ReadyQueue(policy)
        self._by_job = self.queue.by_job
        self.ready = self.queue.iter  # SchedulingState.ready(max_cpus=None), without a layer of call
        self._arrivals: list[Job] = sorted(workload.jobs, key=lambda j: j.arrival)  # stable: ties keep their order
        self._next_arrival = 0
        self._finish_times: list[float] = []  # heap of the distinct times in `_finishing`
        self._finishing: dict[float, list[tuple[JobState, int, int]]] = {}  # time -> (job, task, node) in start order
        self._dag_lists: dict[int, tuple] = {}  # id(dag) -> its lists, shared by the jobs of one DAG
        self._ready_seq = 0
        self.decisions = 0
        self.completions = 0
        self.policy_seconds = 0.0
        self._awaiting_decision = self._decided = False  # `advance` returned True / `apply` started a task since
        self._check_fits(workload, cluster)
        policy.reset(seed)

    # ---- SchedulingState: `ready()` is bound in __init__ to the queue's iterator ---------------------------
    @property
    def num_ready(self) -> int:
        return len(self.queue)

    @property
    def num_running(self) -> int:
        return self.decisions - self.completions

    # ---- setup --------------------------------------------------------------------------------------------
    @staticmethod
    def _check_fits(workload: Workload, cluster: Cluster) -> None:
        caps = np.array([[n.cpus, n.memory, n.gpus] for n in cluster.nodes])
        checked = set()
        for job in workload.jobs:
            if id(job.dag) in checked:  # the same DAG, already found to fit
                continue
            checked.add(id(job.dag))
            need = np.stack([job.dag.cpus, job.dag.memory, job.dag.gpus], axis=1)
            fits = (need[:, None, :] <= caps[None, :, :] + EPS).all(axis=2).any(axis=1)
            if not fits.all():
                i = int(np.flatnonzero(~fits)[0])
                raise SimulationError(
                    f"Task '{job.dag.ids[i]}' of job '{job.name}' requests cpus={job.dag.cpus[i]:g}, "
                    f"memory={job.dag.memory[i]:.0f} B, gpus={job.dag.gpus[i]:g}: no node of the cluster is that "
                    "large, so it could never run"
                )

    # ---- event handling ---------------------------------------------------------------------------------
    def _make_ready(self, js: JobState, t: int) -> None:
        self._ready_seq += 1
        js.status[t] = TASK_READY
        rt = ReadyTask(js.id, t, js.cpus[t], js.memory[t], js.gpus[t], js.pred[t], self.now, self._ready_seq,
                       js.priority)
        self.queue.push(rt, js)

    def _arrive(self, job: Job) -> None:
        lists = self._dag_lists.get(id(job.dag))
        if lists is None:
            lists = self._dag_lists[id(job.dag)] = _dag_lists(job.dag)
        js = JobState(job, self.record, lists)
        self.jobs[job.id] = js
        self.policy.on_job_arrival(js)
        pending = js.pending
        for t in range(job.dag.n):
            if pending[t] == 0:
                self._make_ready(js, t)

    def _finish(self, js: JobState, t: int, node: int) -> None:
        nodes = self.nodes
        nodes.free_cpus[node] += js.cpus[t]
        nodes.free_memory[node] += js.memory[t]
        nodes.free_gpus[node] += js.gpus[t]
        js.status[t] = TASK_DONE
        self.completions += 1
        if js.end is not None:
            js.end[t] = self.now
        js.remaining_work -= js.pred[t] * js.cpus[t]
        js.remaining_tasks -= 1
        pending = js.pending
        kids = js.kids[t]
        if kids:
            make_ready = self._make_ready
            for c in kids:
                left = pending[c] - 1
                pending[c] = left
                if left == 0:
                    make_ready(js, c)
        if js.remaining_tasks == 0:
            js.finish = self.now
            self.finished[js.id] = self.jobs.pop(js.id)
        elif self._by_job:
            self.queue.update_job(js)

    def _has_events(self) -> bool:
        return bool(self._finish_times) or self._next_arrival < len(self._arrivals)

    def _skip_to_next_event(self) -> None:
        """Move time to the next event and process every event of that time (arrivals, then finishes)."""
        arrivals, i, times = self._arrivals, self._next_arrival, self._finish_times
        if i < len(arrivals) and (not times or arrivals[i].arrival <= times[0]):
            when = arrivals[i].arrival
        else:
            when = times[0]
        self.now = when
        while i < len(arrivals) and arrivals[i].arrival == when:
            self._next_arrival = i + 1
            self._arrive(arrivals[i])
            i += 1
        if times and times[0] == when:
            heapq.heappop(times)
            finish = self._finish
            for js, t, node in self._finishing.pop(when):
                finish(js, t, node)

    def advance(self) -> bool:
        """Process events up to the next moment a decision can be taken. False when the simulation is over.

        For engines that decide step by step (the RL environment); `run()` is the batch equivalent. Calling it
        again without `apply`ing a decision in between means "wait": time moves on to the next event first (so
        a caller whose policy passes, or whose ready tasks fit nowhere now, cannot spin at one moment forever).
        """
        wait = self._awaiting_decision and not self._decided
        while True:
            if not wait and len(self.queue) and self._has_free_capacity():
                self._awaiting_decision, self._decided = True, False
                return True
            wait = False
            if not self._has_events():
                if len(self.queue):
                    raise PolicyError(
                        f"Policy '{self.policy.name}' left {len(self.queue)} ready tasks waiting on an idle cluster"
                    )
                return False
            self._skip_to_next_event()

    def _has_free_capacity(self) -> bool:
        # A zero-cpu task waits until some cpu is free as well (a documented simplification).
        return max(self.nodes.free_cpus) > EPS

    def apply(self, decisions: list[Decision]) -> None:
        """Start each decided task on its node, after checking the decision is legal."""
        nodes = self.nodes
        free_c, free_m, free_g = nodes.free_cpus, nodes.free_memory, nodes.free_gpus
        jobs = self.jobs
        remove = self.queue.remove
        now = self.now
        times, finishing = self._finish_times, self._finishing
        n_nodes = len(free_c)
        for t, node in decisions:
            js = jobs.get(t.job)
            task = t.task
            if js is None or js.status[task] != TASK_READY:
                raise PolicyError(f"Policy '{self.policy.name}' chose task {t!r}, which is not ready")
            if not 0 <= node < n_nodes:
                raise PolicyError(f"Policy '{self.policy.name}' chose node {node}, which does not exist")
            c, m, g = t.cpus, t.memory, t.gpus
            if free_c[node] < c - EPS or free_m[node] < m - EPS or free_g[node] < g - EPS:
                raise PolicyError(
                    f"Policy '{self.policy.name}' placed {t!r} on node {nodes.names[node]}, which has only "
                    f"{free_c[node]:g} cpus / {free_m[node]:.0f} B free"
                )
            free_c[node] -= c
            free_m[node] -= m
            free_g[node] -= g
            remove(t)
            js.status[task] = TASK_RUNNING
            if js.start is not None:
                js.start[task] = now
                js.node[task] = node
            end = now + js.actual[task]
            same_end = finishing.get(end)
            if same_end is None:
                finishing[end] = [(js, task, node)]
                heapq.heappush(times, end)
            else:
                same_end.append((js, task, node))
        self.decisions += len(decisions)
        if decisions:
            self._decided = True

    def run(self) -> SimResult:
        """Run to completion with the policy and return the metrics.

        After each batch of simultaneous events the policy is asked once for decisions (list scheduling starts
        everything that fits in that one call); then time moves to the next event.
        """
        wall = time.perf_counter()
        # The run allocates many short-lived objects and no reference cycles: the cyclic collector would only
        # rescan the job states again and again.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            if type(self.policy).schedule is SchedulingPolicy.schedule:
                self._run_list_scheduling()
            else:
                self._run()
            if len(self.queue):
                raise PolicyError(
                    f"Policy '{self.policy.name}' left {len(self.queue)} ready tasks waiting on an idle cluster"
                )
            return compute_result(self, time.perf_counter() - wall)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> None:
        """The event loop for any policy: `schedule` after each batch of events, then `apply`."""
        queue = self.queue
        free_cpus = self.nodes.free_cpus
        clock = time.perf_counter
        apply, schedule, finish, arrive = self.apply, self.policy.schedule, self._finish, self._arrive
        arrivals, times, finishing = self._arrivals, self._finish_times, self._finishing
        n_arrivals = len(arrivals)
        heappop = heapq.heappop
        policy_seconds = 0.0
        calls = timed = 0
        while True:
            if queue._size and max(free_cpus) > EPS:
                calls += 1
                if calls & 7 == 1:  # time one call in eight: the clock costs as much as a decision
                    timed += 1
                    t0 = clock()
                    decisions = schedule(self)
                    policy_seconds += clock() - t0
                else:
                    decisions = schedule(self)
                if decisions:
                    apply(decisions)
            # The next batch of simultaneous events (inlined `_skip_to_next_event`: the hot loop).
            i = self._next_arrival
            if times:
                when = times[0]
                if i < n_arrivals and arrivals[i].arrival <= when:
                    when = arrivals[i].arrival
            elif i < n_arrivals:
                when = arrivals[i].arrival
            else:
                break
            self.now = when
            while i < n_arrivals and arrivals[i].arrival == when:
                self._next_arrival = i + 1
                arrive(arrivals[i])
                i += 1
            if times and times[0] == when:
                heappop(times)
                for js, t, node in finishing.pop(when):
                    finish(js, t, node)
        self.policy_seconds += policy_seconds * (calls / timed) if timed else 0.0

    def _run_list_scheduling(self) -> None:
        """`_run` for a policy that keeps the default `schedule` (list scheduling in queue order): the queue
        carries it out itself (`ReadyQueue.list_scheduler`: the same decisions without a `schedule` call or a
        walk through generators), and `apply`, `_skip_to_next_event`, `_finish`, `_make_ready` are inlined.
        """
        policy = self.policy
        queue = self.queue
        jobs, finished = self.jobs, self.finished
        nodes = self.nodes
        free_c, free_m, free_g = nodes.free_cpus, nodes.free_memory, nodes.free_gpus
        place = None if type(policy).place is SchedulingPolicy.place else policy.place
        start_tasks = queue.list_scheduler(nodes, policy.scan_limit, place)
        push_ready = queue.push
        new_task = ReadyTask.__new__
        update_job = queue.update_job if queue.by_job else None
        record = self.record
        arrive = self._arrive
        arrivals, times, finishing = self._arrivals, self._finish_times, self._finishing
        n_arrivals = len(arrivals)
        next_arrival = arrivals[self._next_arrival].arrival if self._next_arrival < n_arrivals else None
        clock = time.perf_counter
        heappop, heappush = heapq.heappop, heapq.heappush
        policy_seconds = 0.0
        calls = timed = 0
        ready_seq = self._ready_seq
        now = self.now
        most = max(free_c)  # kept equal to max(free_c)
        two_eps = 2 * EPS
        decisions, completions = self.decisions, self.completions
        while True:
            if queue._size and most > EPS and most + EPS >= two_eps:
                calls += 1
                if calls & 7 == 1:  # time one round in eight: the clock costs as much as a decision
                    timed += 1
                    t0 = clock()
                    started, most = start_tasks(most)
                    policy_seconds += clock() - t0
                else:
                    started, most = start_tasks(most)
                for task, node in started:  # `apply` without its checks: the queue only starts what fits
                    js = jobs[task.job]
                    t = task.task
                    js.status[t] = TASK_RUNNING
                    if record:
                        js.start[t] = now
                        js.node[t] = node
                    end = now + js.actual[t]
                    same_end = finishing.get(end)
                    if same_end is None:
                        finishing[end] = [(js, t, node)]
                        heappush(times, end)
                    else:
                        same_end.append((js, t, node))
                decisions += len(started)
            # The next batch of simultaneous events: arrivals first, then finishes in start order.
            if times:
                when = times[0]
                if next_arrival is not None and next_arrival <= when:
                    when = next_arrival
            elif next_arrival is not None:
                when = next_arrival
            else:
                break
            self.now = now = when
            if next_arrival == when:
                self._ready_seq, self.decisions, self.completions = ready_seq, decisions, completions
                i = self._next_arrival
                while i < n_arrivals and arrivals[i].arrival == when:
                    self._next_arrival = i + 1
                    arrive(arrivals[i])
                    i += 1
                next_arrival = arrivals[i].arrival if i < n_arrivals else None
                ready_seq = self._ready_seq
                if not times or times[0] != when:
                    continue
            heappop(times)
            for js, t, node in finishing.pop(when):  # `_finish`, inlined
                cpus = js.cpus
                old = free_c[node]
                free_c[node] = free = old + cpus[t]
                if free > most:
                    most = free
                elif free < old and old == most:  # (a negative request, which validation rejects)
                    most = max(free_c)
                free_m[node] += js.memory[t]
                free_g[node] += js.gpus[t]
                js.status[t] = TASK_DONE
                completions += 1
                if record:
                    js.end[t] = now
                js.remaining_work -= js.pred[t] * cpus[t]
                js.remaining_tasks -= 1
                kids = js.kids[t]
                if kids:
                    pending, status = js.pending, js.status
                    for c in kids:
                        left = pending[c] - 1
                        pending[c] = left
                        if left == 0:  # `_make_ready`, inlined; `ReadyTask(...)` without the __init__ call
                            ready_seq += 1
                            status[c] = TASK_READY
                            rt = new_task(ReadyTask)
                            rt.job = js.id
                            rt.task = c
                            rt.cpus = cpus[c]
                            rt.memory = js.memory[c]
                            rt.gpus = js.gpus[c]
                            rt.predicted = js.pred[c]
                            rt.ready_time = now
                            rt.seq = ready_seq
                            rt.priority = js.priority
                            rt.allowed = None
                            rt.key = ()
                            push_ready(rt, js)
                if js.remaining_tasks == 0:
                    js.finish = now
                    finished[js.id] = jobs.pop(js.id)
                elif update_job is not None:
                    update_job(js)
        self._ready_seq, self.decisions, self.completions = ready_seq, decisions, completions
        self.policy_seconds += policy_seconds * (calls / timed) if timed else 0.0


def simulate(workload: Workload, cluster: Cluster, policy: SchedulingPolicy, seed: int = 0,
             record: bool = True) -> SimResult:
    """Simulate `workload` on `cluster` under `policy`. Deterministic for a seed."""
    return Simulation(workload, cluster, policy, seed, record).run()


__all__ = ["Simulation", "simulate", "JobState", "TASK_PENDING"]

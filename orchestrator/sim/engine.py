"""A discrete-event simulator of workflows on a cluster. Pure: a function of (workload, cluster, policy, seed).

Tasks hold their requested resources for their *actual* duration; the policy only sees *predicted* durations.
The `Simulation` object is itself the `SchedulingState` the policy reads. `run()` drives it to the end;
`advance()` / `apply()` let a learning environment take one decision at a time.
"""

from __future__ import annotations

import gc
import heapq
import time

import numpy as np

from ..dag import analyse
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

_ARRIVAL, _FINISH = 0, 1


class JobState:
    """An active job as the policy sees it (satisfies `JobView`)."""

    __slots__ = ("id", "name", "family", "arrival", "priority", "dag", "predicted", "analysis", "status",
                 "remaining_work", "remaining_tasks", "finish", "job", "pending", "cpus", "memory", "gpus",
                 "actual", "pred", "kids_ptr", "kids", "start", "end", "node")

    def __init__(self, job: Job, record: bool):
        dag = job.dag
        self.id = job.id
        self.name = job.name
        self.family = job.family
        self.arrival = job.arrival
        self.priority = job.priority
        self.dag = dag
        self.job = job
        self.predicted = job.predicted
        self.analysis = analyse(dag, job.predicted)
        self.status = bytearray(dag.n)  # TASK_* codes; np.frombuffer(status, np.int8) for an array view
        self.remaining_work = float((job.predicted * dag.cpus).sum())
        self.remaining_tasks = dag.n
        self.finish = float("nan")
        # Plain lists for the hot loop (numpy scalar access is slow).
        self.pending = dag.in_degree.tolist()
        self.cpus = dag.cpus.tolist()
        self.memory = dag.memory.tolist()
        self.gpus = dag.gpus.tolist()
        self.actual = job.actual.tolist()
        self.pred = job.predicted.tolist()
        self.kids_ptr = dag.children_ptr.tolist()
        self.kids = dag.children.tolist()
        if record:
            self.start = [0.0] * dag.n
            self.end = [0.0] * dag.n
            self.node = [-1] * dag.n
        else:
            self.start = self.end = self.node = None


class Simulation:
    """Discrete-event simulation state; also the `SchedulingState` handed to the policy."""

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
        self._events: list[tuple] = []
        self._seq = 0
        self._ready_seq = 0
        self.decisions = 0
        self.completions = 0
        self.policy_seconds = 0.0
        self._check_fits(workload, cluster)
        policy.reset(seed)
        for job in workload.jobs:
            self._push(job.arrival, _ARRIVAL, job, -1, -1)

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
        for job in workload.jobs:
            need = np.stack([job.dag.cpus, job.dag.memory, job.dag.gpus], axis=1)
            fits = (need[:, None, :] <= caps[None, :, :] + EPS).all(axis=2).any(axis=1)
            if not fits.all():
                i = int(np.flatnonzero(~fits)[0])
                raise SimulationError(
                    f"Task '{job.dag.ids[i]}' of job '{job.name}' requests cpus={job.dag.cpus[i]:g}, "
                    f"memory={job.dag.memory[i]:.0f} B, gpus={job.dag.gpus[i]:g}: no node of the cluster is that "
                    "large, so it could never run"
                )

    def _push(self, when: float, kind: int, a, b: int, c: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, kind, self._seq, a, b, c))

    # ---- event handling ---------------------------------------------------------------------------------
    def _make_ready(self, js: JobState, t: int) -> None:
        self._ready_seq += 1
        js.status[t] = TASK_READY
        rt = ReadyTask(js.id, t, js.cpus[t], js.memory[t], js.gpus[t], js.pred[t], self.now, self._ready_seq,
                       js.priority)
        self.queue.push(rt, js)

    def _arrive(self, job: Job) -> None:
        js = JobState(job, self.record)
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
        kids = js.kids
        lo, hi = js.kids_ptr[t], js.kids_ptr[t + 1]
        if lo < hi:
            make_ready = self._make_ready
            for k in range(lo, hi):
                c = kids[k]
                left = pending[c] - 1
                pending[c] = left
                if left == 0:
                    make_ready(js, c)
        if js.remaining_tasks == 0:
            js.finish = self.now
            self.finished[js.id] = self.jobs.pop(js.id)
        elif self._by_job:
            self.queue.update_job(js)

    def advance(self) -> bool:
        """Process events up to the next moment a decision can be taken. False when the simulation is over.

        For engines that decide step by step (the RL environment); `run()` is the batch equivalent.
        """
        while True:
            if len(self.queue) and self._has_free_capacity():
                return True
            if not self._events:
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
        events = self._events
        push = heapq.heappush
        n_nodes = len(free_c)
        seq = self._seq
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
            seq += 1
            push(events, (now + js.actual[task], _FINISH, seq, js, task, node))
        self._seq = seq
        self.decisions += len(decisions)

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
            return self._run(wall)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self, wall: float) -> SimResult:
        policy = self.policy
        queue = self.queue
        events = self._events
        free_cpus = self.nodes.free_cpus
        clock = time.perf_counter
        finish, arrive, apply, schedule = self._finish, self._arrive, self.apply, policy.schedule
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
            if not events:
                break
            # The next batch of simultaneous events (inlined `_skip_to_next_event`: the hot loop).
            when = events[0][0]
            self.now = when
            while events and events[0][0] == when:
                _, kind, _, a, b, c = heappop(events)
                if kind == _FINISH:
                    finish(a, b, c)
                else:
                    arrive(a)
        self.policy_seconds += policy_seconds * (calls / timed) if timed else 0.0
        if len(queue):
            raise PolicyError(
                f"Policy '{policy.name}' left {len(queue)} ready tasks waiting on an idle cluster"
            )
        return compute_result(self, time.perf_counter() - wall)

    def _skip_to_next_event(self) -> None:
        events = self._events
        when = events[0][0]
        self.now = when
        finish = self._finish
        while events and events[0][0] == when:
            _, kind, _, a, b, c = heapq.heappop(events)
            if kind == _FINISH:
                finish(a, b, c)
            else:
                self._arrive(a)


def simulate(workload: Workload, cluster: Cluster, policy: SchedulingPolicy, seed: int = 0,
             record: bool = True) -> SimResult:
    """Simulate `workload` on `cluster` under `policy`. Deterministic for a seed."""
    return Simulation(workload, cluster, policy, seed, record).run()


__all__ = ["Simulation", "simulate", "JobState", "TASK_PENDING"]

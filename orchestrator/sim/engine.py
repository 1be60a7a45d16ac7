"""A discrete-event simulator of workflows on a cluster. Pure: a function of (workload, cluster, policy, seed).

Tasks hold their requested resources for their *actual* duration; the policy only sees *predicted* durations.
The `Simulation` object is itself the `SchedulingState` the policy reads. `run()` drives it to the end;
`advance()` / `apply()` let a learning environment take one decision at a time.

It means by every state what the Ray runtime (`runtime/state.py`) means, through the same shared code: ready
tasks from `ready_task` (each with its own task's priority and the nodes `allowed_nodes` gives its custom
resources), retry backoff from `RetryPolicy`, dispatch ahead from `scheduling.ahead`, status moves checked
against the one transition table (`states.TASK_MOVES`). `conformance.check_conformance` replays a simulation's
events into the runtime's state machine and checks that both take the same decisions.
"""

from __future__ import annotations

import gc
import heapq
import time
from functools import cached_property

import numpy as np

from ..dag import DagAnalysis, analyse
from ..errors import PolicyError, SimulationError
from ..scheduling.ahead import DispatchAhead
from ..scheduling.interface import (
    EPS,
    TASK_DONE,
    TASK_PENDING,
    TASK_READY,
    TASK_RUNNING,
    VIEW_OF_CODE,
    Decision,
    NodeView,
    SchedulingPolicy,
    ready_task,
)
from ..scheduling.placement import allowed_nodes
from ..scheduling.queue import ReadyQueue
from ..scheduling.retry import RetryPolicy
from ..states import (
    FAILED_CODE,
    NUM_TASK_STATUSES,
    PENDING_CODE,
    READY_CODE,
    RETRYING_CODE,
    RUNNING_CODE,
    SKIPPED_CODE,
    SUCCEEDED_CODE,
    TASK_MOVES,
    illegal_task_move,
)
from .cluster import Cluster
from .metrics import SimResult, compute_result
from .workload import Job, Workload

_N = NUM_TASK_STATUSES


class JobState:
    """An active job as the policy sees it (satisfies `JobView`).

    `status` holds the compact codes policies read (`TASK_*`), `detail` the full status codes of `states`
    (`TASK_CODE`) that moves are checked with. `priority` is the job's: its highest task priority.
    """

    __slots__ = ("id", "name", "family", "arrival", "priority", "dag", "predicted", "status", "detail",
                 "remaining_work", "remaining_tasks", "finish", "job", "pending", "cpus", "memory", "gpus",
                 "actual", "pred", "task_priority", "allowed", "kids", "start", "end", "node", "attempts",
                 "fails", "failures", "fail_fraction", "retries", "retry_delay", "failed_tasks", "__dict__")

    def __init__(self, job: Job, record: bool, dag_lists: tuple | None = None,
                 allowed: list[frozenset[int] | None] | None = None):
        dag = job.dag
        n = dag.n
        self.id = job.id
        self.name = job.name
        self.family = job.family
        self.arrival = job.arrival
        self.dag = dag
        self.job = job
        self.predicted = job.predicted  # `analysis` is computed when first read
        self.status = bytearray(n)  # TASK_* codes; np.frombuffer(status, np.int8) for an array view
        self.detail = bytearray(n)  # states.TASK_CODE per task (PENDING_CODE = 0)
        self.remaining_work = float((job.predicted * dag.cpus).sum())
        self.remaining_tasks = n  # not yet succeeded, failed or skipped
        self.finish = float("nan")
        # Plain lists for the hot loop (numpy scalar access is slow); those of the DAG are read-only, so jobs of
        # one DAG may share them (`dag_lists`, from `_dag_lists()`).
        in_degree, self.cpus, self.memory, self.gpus, self.kids, priority = dag_lists or _dag_lists(dag)
        self.task_priority = priority if not job.priority else [p + job.priority for p in priority]
        self.priority = max(self.task_priority)
        self.allowed = allowed  # per task: the nodes it may use (None: any); None: no task has custom requests
        self.pending = in_degree.copy()
        self.actual = job.actual.tolist()
        self.pred = job.predicted.tolist()
        self.attempts = [0] * n
        self.failed_tasks = 0
        if job.failed_attempts is not None:
            self.fails = job.failed_attempts.tolist()  # attempts that fail before one succeeds
            self.failures = [0] * n  # attempts failed so far
            self.fail_fraction = job.fail_fraction.tolist()
            self.retries = dag.retries.tolist()
            self.retry_delay = dag.retry_delay.tolist()  # NaN: the retry policy's default base
        else:
            self.fails = self.failures = self.fail_fraction = self.retries = self.retry_delay = None
        if record:
            self.start = [float("nan")] * n
            self.end = [float("nan")] * n
            self.node = [-1] * n
        else:
            self.start = self.end = self.node = None

    @cached_property
    def analysis(self) -> DagAnalysis:
        """The DAG analysis on predicted durations, computed on first use (FIFO, for one, never reads it)."""
        return analyse(self.dag, self.predicted)


def _dag_lists(dag) -> tuple[list, list, list, list, list, list]:
    """A DAG's arrays as the plain lists a `JobState` reads: in-degree, cpus, memory, gpus, the children of each
    task, and task priorities."""
    ptr, children = dag.children_ptr.tolist(), dag.children.tolist()
    return (dag.in_degree.tolist(), dag.cpus.tolist(), dag.memory.tolist(), dag.gpus.tolist(),
            list(map(children.__getitem__, map(slice, ptr, ptr[1:]))), dag.priority.tolist())


class Simulation:
    """Discrete-event simulation state; also the `SchedulingState` handed to the policy.

    Events: job arrivals in time order (ties in workload order), ends of task attempts kept as a heap of
    distinct times plus, per time, the attempts ending then in the order they started, and retries falling due
    (a heap by due time, ties in the order they were scheduled). All events of one time form a batch: arrivals
    first, then ends of attempts, then retries due; then the policy is asked for decisions (list scheduling
    starts everything that fits in that one call) and, with dispatch ahead, once more on the allowances.

    Options: `retry` (the backoff; default the runtime's), `dispatch_ahead` / `dispatch_ahead_max_s` (the
    runtime's dispatch ahead, `scheduling.ahead`: off by default here; the runtime's own default is 2.0 / 0.25),
    `events` (a list to which the general path appends every event and decision, for `conformance`).
    """

    max_predicted = None  # SchedulingState: every ready task is offered

    def __init__(self, workload: Workload, cluster: Cluster, policy: SchedulingPolicy, seed: int = 0,
                 record: bool = True, retry: RetryPolicy | None = None, dispatch_ahead: float = 0.0,
                 dispatch_ahead_max_s: float = 0.25, events: list | None = None):
        if len(workload) == 0:
            raise SimulationError("The workload has no jobs")
        self.workload = workload
        self.cluster = cluster
        self.policy = policy
        self.seed = seed
        self.record = record
        self.retry = retry or RetryPolicy()
        self.ahead = DispatchAhead(dispatch_ahead, dispatch_ahead_max_s)  # items: (job id, task)
        self.events = events
        self.now = 0.0
        self.nodes = NodeView([n.name for n in cluster.nodes], [n.cpus for n in cluster.nodes],
                              [n.memory for n in cluster.nodes], [n.gpus for n in cluster.nodes],
                              [n.custom for n in cluster.nodes])
        self.jobs: dict[int, JobState] = {}
        self.finished: dict[int, JobState] = {}
        self.queue = ReadyQueue(policy)
        self._by_job = self.queue.by_job
        self.ready = self.queue.iter  # SchedulingState.ready(max_cpus=None), without a layer of call
        self._arrivals: list[Job] = sorted(workload.jobs, key=lambda j: j.arrival)  # stable: ties keep their order
        self._next_arrival = 0
        self._finish_times: list[float] = []  # heap of the distinct times in `_finishing`
        self._finishing: dict[float, list[tuple[JobState, int, int]]] = {}  # time -> (job, task, node) in start order
        self._retries: list[tuple[float, int, int, int]] = []  # heap of (due, order, job id, task)
        self._retry_seq = 0
        self._dag_lists: dict[int, tuple] = {}  # id(dag) -> its lists, shared by the jobs of one DAG
        self._allowed: dict[int, list | None] = {}  # id(dag) -> allowed nodes per task on this cluster
        self._ready_seq = 0
        self.failures_modelled = any(j.failed_attempts is not None for j in workload.jobs)
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
    def _allowed_of(self, dag) -> list | None:
        """Per task of a DAG, the nodes of this cluster that offer its custom resources (None: no request)."""
        key = id(dag)
        if key not in self._allowed:
            self._allowed[key] = (None if dag.custom is None
                                  else [allowed_nodes(self.nodes.custom, request) for request in dag.custom])
        return self._allowed[key]

    def _check_fits(self, workload: Workload, cluster: Cluster) -> None:
        caps = np.array([[n.cpus, n.memory, n.gpus] for n in cluster.nodes])
        checked = set()
        for job in workload.jobs:
            if id(job.dag) in checked:  # the same DAG, already found to fit
                continue
            checked.add(id(job.dag))
            dag = job.dag
            need = np.stack([dag.cpus, dag.memory, dag.gpus], axis=1)
            fits = (need[:, None, :] <= caps[None, :, :] + EPS).all(axis=2)  # task x node
            allowed = self._allowed_of(dag)
            if allowed is not None:
                for i, nodes in enumerate(allowed):
                    if nodes is not None:
                        fits[i] &= np.isin(np.arange(len(cluster.nodes)), list(nodes))
            fits = fits.any(axis=1)
            if not fits.all():
                i = int(np.flatnonzero(~fits)[0])
                custom = dag.custom[i] if dag.custom is not None and dag.custom[i] else None
                raise SimulationError(
                    f"Task '{dag.ids[i]}' of job '{job.name}' requests cpus={dag.cpus[i]:g}, "
                    f"memory={dag.memory[i]:.0f} B, gpus={dag.gpus[i]:g}"
                    + (f" and custom resources {custom}" if custom else "")
                    + ": no node of the cluster "
                    + ("offers that together" if custom else "is that large") + ", so it could never run"
                )

    # ---- status moves (the general path; every move checked against the transition table) ------------------
    def _move(self, js: JobState, t: int, new: int) -> None:
        old = js.detail[t]
        if not TASK_MOVES[old * _N + new]:
            raise illegal_task_move(old, new)
        js.detail[t] = new
        js.status[t] = VIEW_OF_CODE[new]

    # ---- event handling ---------------------------------------------------------------------------------
    def _make_ready(self, js: JobState, t: int) -> None:
        detail = js.detail
        old = detail[t]
        if not TASK_MOVES[old * _N + READY_CODE]:  # `_move`, inline
            raise illegal_task_move(old, READY_CODE)
        detail[t] = READY_CODE
        js.status[t] = TASK_READY
        self._ready_seq += 1
        allowed = js.allowed
        self.queue.push(ready_task(js, t, self.now, self._ready_seq, allowed[t] if allowed is not None else None),
                        js)

    def _arrive(self, job: Job) -> None:
        lists = self._dag_lists.get(id(job.dag))
        if lists is None:
            lists = self._dag_lists[id(job.dag)] = _dag_lists(job.dag)
        js = JobState(job, self.record, lists, self._allowed_of(job.dag))
        self.jobs[job.id] = js
        self.policy.on_job_arrival(js)
        if self.events is not None:
            self.events.append(("arrive", self.now, job.id))
        pending = js.pending
        for t in range(job.dag.n):
            if pending[t] == 0:
                self._make_ready(js, t)

    def _start(self, js: JobState, t: int, node: int) -> None:
        """An attempt takes its slot now: it ends after the task's actual duration, or after its failure
        fraction of it if this attempt is drawn to fail."""
        duration = js.actual[t]
        fails = js.fails
        if fails is not None and js.failures[t] < fails[t]:
            duration *= js.fail_fraction[t]
        if js.start is not None:
            js.start[t] = self.now
            js.node[t] = node
        end = self.now + duration
        same_end = self._finishing.get(end)
        if same_end is None:
            self._finishing[end] = [(js, t, node)]
            heapq.heappush(self._finish_times, end)
        else:
            same_end.append((js, t, node))

    def _promoted(self, job_id: int, t: int, node: int) -> None:
        if self.events is not None:
            self.events.append(("promote", self.now, job_id, t, node))
        self._start(self.jobs[job_id], t, node)

    def _finish(self, js: JobState, t: int, node: int) -> None:
        """An attempt ended: its resources are free again (tasks waiting ahead at its node may take them), and it
        succeeded, or failed as drawn (then it is retried after its backoff, or fails for good and its
        descendants are skipped)."""
        fails = js.fails
        ok = fails is None or js.failures[t] >= fails[t]
        if self.events is not None:
            outcome = ("succeeded" if ok else "retrying" if js.failures[t] + 1 <= js.retries[t] else "failed")
            self.events.append(("end", self.now, js.id, t, node, outcome))
        nodes = self.nodes  # its resources are free again
        nodes.free_cpus[node] += js.cpus[t]
        nodes.free_memory[node] += js.memory[t]
        nodes.free_gpus[node] += js.gpus[t]
        if self.ahead.queues and self.ahead.queues.get(node):
            for job_id, task in self.ahead.promote(node, nodes):
                self._promoted(job_id, task, node)
        self.completions += 1
        if js.end is not None:
            js.end[t] = self.now
        if ok:
            detail = js.detail
            old = detail[t]
            if not TASK_MOVES[old * _N + SUCCEEDED_CODE]:  # `_move`, inline
                raise illegal_task_move(old, SUCCEEDED_CODE)
            detail[t] = SUCCEEDED_CODE
            js.status[t] = TASK_DONE
            js.remaining_work -= js.pred[t] * js.cpus[t]
            js.remaining_tasks -= 1
            kids = js.kids[t]
            if kids:
                pending = js.pending
                make_ready = self._make_ready
                for c in kids:
                    left = pending[c] - 1
                    pending[c] = left
                    if left == 0:
                        make_ready(js, c)
        else:
            js.failures[t] += 1
            failures = js.failures[t]
            if failures <= js.retries[t]:
                delay = self.retry.delay(failures, js.retry_delay[t], seed=self.seed, job=js.id, task=t)
                self._move(js, t, RETRYING_CODE)
                self._retry_seq += 1
                heapq.heappush(self._retries, (self.now + delay, self._retry_seq, js.id, t))
                return
            self._move(js, t, FAILED_CODE)
            js.failed_tasks += 1
            cpus, pred = js.cpus, js.pred
            js.remaining_work -= pred[t] * cpus[t]  # failed and skipped tasks have no work left
            js.remaining_tasks -= 1
            detail = js.detail
            for d in js.dag.descendants(t):
                if detail[d] == PENDING_CODE:  # (none can be ready, retrying or running: t never succeeded)
                    self._move(js, d, SKIPPED_CODE)
                    js.remaining_work -= pred[d] * cpus[d]
                    js.remaining_tasks -= 1
        if js.remaining_tasks == 0:
            js.finish = self.now
            self.finished[js.id] = self.jobs.pop(js.id)
        elif self._by_job:
            self.queue.update_job(js)

    def _retries_due(self) -> None:
        retries = self._retries
        while retries and retries[0][0] <= self.now:
            _, _, job_id, t = heapq.heappop(retries)
            if self.events is not None:
                self.events.append(("retry", self.now, job_id, t))
            self._make_ready(self.jobs[job_id], t)

    def _next_batch(self) -> bool:
        """Move time to the next event and process every event of that time: arrivals, then ends of attempts (in
        start order), then retries falling due. False when no event is left."""
        arrivals, i, times, retries = self._arrivals, self._next_arrival, self._finish_times, self._retries
        when = None
        if i < len(arrivals):
            when = arrivals[i].arrival
        if times and (when is None or times[0] < when):
            when = times[0]
        if retries and (when is None or retries[0][0] < when):
            when = retries[0][0]
        if when is None:
            return False
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
        if retries and retries[0][0] <= when:
            self._retries_due()
        return True

    def advance(self) -> bool:
        """Process events up to the next moment a decision can be taken. False when the simulation is over.

        For engines that decide step by step (the RL environment); `run()` is the batch equivalent. Calling it
        again without `apply`ing a decision in between means "wait": time moves on to the next event first (so
        a caller whose policy passes, or whose ready tasks fit nowhere now, cannot spin at one moment forever).
        Dispatch ahead is not modelled step by step.
        """
        if self.ahead.enabled:
            raise SimulationError("Step-by-step simulation (advance/apply) does not model dispatch ahead; "
                                  "run it with dispatch_ahead=0 or use run()")
        wait = self._awaiting_decision and not self._decided
        while True:
            if not wait and len(self.queue) and self._has_free_capacity():
                self._awaiting_decision, self._decided = True, False
                return True
            wait = False
            if not self._next_batch():
                if len(self.queue):
                    raise PolicyError(
                        f"Policy '{self.policy.name}' left {len(self.queue)} ready tasks waiting on an idle cluster"
                    )
                return False

    def _has_free_capacity(self) -> bool:
        # A zero-cpu task waits until some cpu is free as well (a documented simplification).
        return max(self.nodes.free_cpus) > EPS

    def apply(self, decisions: list[Decision], nodes: NodeView | None = None) -> None:
        """Start each decided task on its node, after checking the decision is legal. With `nodes` (the
        allowances of the dispatch-ahead pass) the tasks are committed ahead instead: they take a slot later."""
        ahead = nodes is not None
        if nodes is None:
            nodes = self.nodes
        free_c, free_m, free_g = nodes.free_cpus, nodes.free_memory, nodes.free_gpus
        jobs = self.jobs
        remove = self.queue.remove
        n_nodes = len(free_c)
        start, commit = self._start, self.ahead.commit
        moves = TASK_MOVES
        running = RUNNING_CODE
        for t, node in decisions:
            js = jobs.get(t.job)
            task = t.task
            if js is None or js.detail[task] != READY_CODE:
                raise PolicyError(f"Policy '{self.policy.name}' chose task {t!r}, which is not ready")
            if not isinstance(node, int) or not 0 <= node < n_nodes:
                raise PolicyError(f"Policy '{self.policy.name}' chose node {node}, which does not exist")
            c, m, g = t.cpus, t.memory, t.gpus
            if free_c[node] < c - EPS or free_m[node] < m - EPS or free_g[node] < g - EPS:
                raise PolicyError(
                    f"Policy '{self.policy.name}' placed {t!r} on node {nodes.names[node]}, which has only "
                    f"{free_c[node]:g} cpus / {free_m[node]:.0f} B free" + (" ahead" if ahead else "")
                )
            if t.allowed is not None and node not in t.allowed:
                raise PolicyError(f"Policy '{self.policy.name}' placed {t!r} on node {nodes.names[node]}, which "
                                  "does not offer the task's custom resources")
            free_c[node] -= c
            free_m[node] -= m
            free_g[node] -= g
            remove(t)
            if not moves[READY_CODE * _N + running]:
                raise illegal_task_move(READY_CODE, running)
            js.detail[task] = running
            js.status[task] = TASK_RUNNING
            js.attempts[task] += 1
            if ahead:
                commit(node, (js.id, task), c, m, g)
            else:
                start(js, task, node)
        if self.events is not None:
            self.events.append(("decide", self.now, [(t.job, t.task, node) for t, node in decisions], ahead))
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
            if self._fast_path_applies():
                self._run_list_scheduling()
            else:
                self._run()
            if len(self.queue):
                raise PolicyError(
                    f"Policy '{self.policy.name}' left {len(self.queue)} ready tasks waiting on an idle cluster"
                )
            if self.jobs:  # (an engine fault, not a policy's: every event was processed)
                raise SimulationError(f"{len(self.jobs)} job(s) never finished: "
                                      f"{len(self.ahead)} task(s) still waiting ahead")
            return compute_result(self, time.perf_counter() - wall)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _fast_path_applies(self) -> bool:
        """The fused list-scheduling loop serves policies that keep the default `schedule`, in runs where no
        task fails and nothing is dispatched ahead (it skips the checks of moves)."""
        return (type(self.policy).schedule is SchedulingPolicy.schedule and not self.failures_modelled
                and not self.ahead.enabled and self.events is None)

    def _ask(self, state) -> list[Decision]:
        """The policy's decisions on a state; one call in eight is timed (the clock costs as much as a decision)."""
        self._calls += 1
        if self._calls & 7 != 1:
            return self.policy.schedule(state)
        t0 = time.perf_counter()
        decisions = self.policy.schedule(state)
        self._timed_seconds += time.perf_counter() - t0
        self._timed += 1
        return decisions

    def _decide(self) -> None:
        """One round: the policy on the free resources (when some cpu is free), then on the allowances."""
        if self.events is not None:
            self.events.append(("round", self.now, len(self.queue),
                                {job_id: js.remaining_work for job_id, js in self.jobs.items()}))
        if len(self.queue) and max(self.nodes.free_cpus) > EPS:
            decisions = self._ask(self)
            if decisions or self.events is not None:
                self.apply(decisions)
        if self.ahead.enabled:
            view = self.ahead.view(self)
            if view is not None:
                decisions = self._ask(view)
                if decisions or self.events is not None:
                    self.apply(decisions, view.nodes)
            for node, (job_id, task) in self.ahead.promote_all(self.nodes):
                self._promoted(job_id, task, node)

    def _run(self) -> None:
        """The event loop for any policy: a round of decisions after each batch of events."""
        decide, next_batch = self._decide, self._next_batch
        self._calls = self._timed = 0
        self._timed_seconds = 0.0
        while True:
            decide()
            if not next_batch():
                break
        if self._timed:
            self.policy_seconds += self._timed_seconds * (self._calls / self._timed)

    def _run_list_scheduling(self) -> None:
        """`_run` for a policy that keeps the default `schedule` (list scheduling in queue order), in a run without
        failures or dispatch ahead: the queue's walk (`ReadyQueue.walk`, the same walk the default `schedule`
        makes) starts tasks directly on the live resources, and `apply`, `_next_batch`, `_finish`, `_make_ready`
        are inlined without their checks (a job's `detail` and `attempts` are settled when it ends: every task
        ran once and succeeded). The same decisions as `_run` (tests/test_sim_fastpath.py).
        """
        policy = self.policy
        queue = self.queue
        jobs, finished = self.jobs, self.finished
        nodes = self.nodes
        free_c, free_m, free_g = nodes.free_cpus, nodes.free_memory, nodes.free_gpus
        place = None if type(policy).place is SchedulingPolicy.place else policy.place
        walk, scan_limit = queue.walk, policy.scan_limit
        push_ready = queue.push
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
        succeeded = bytes([SUCCEEDED_CODE])
        decisions, completions = self.decisions, self.completions
        while True:
            if queue._size and most > EPS and most + EPS >= two_eps:
                calls += 1
                if calls & 7 == 1:  # time one round in eight: the clock costs as much as a decision
                    timed += 1
                    t0 = clock()
                    started, most = walk(nodes, free_c, free_m, free_g, most, scan_limit, place, True)
                    policy_seconds += clock() - t0
                else:
                    started, most = walk(nodes, free_c, free_m, free_g, most, scan_limit, place, True)
                for task, node in started:  # `apply` without its checks: the walk only starts what fits
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
                    pending, status, allowed = js.pending, js.status, js.allowed
                    for c in kids:
                        left = pending[c] - 1
                        pending[c] = left
                        if left == 0:  # `_make_ready`, inlined
                            ready_seq += 1
                            status[c] = TASK_READY
                            push_ready(ready_task(js, c, now, ready_seq, allowed[c] if allowed is not None else None),
                                       js)
                if js.remaining_tasks == 0:
                    js.finish = now
                    finished[js.id] = jobs.pop(js.id)
                    n = js.dag.n  # every task ran once and succeeded: `detail` and `attempts`, settled at once
                    js.detail[:] = succeeded * n
                    js.attempts = [1] * n
                elif update_job is not None:
                    update_job(js)
        self._ready_seq, self.decisions, self.completions = ready_seq, decisions, completions
        self.policy_seconds += policy_seconds * (calls / timed) if timed else 0.0


def simulate(workload: Workload, cluster: Cluster, policy: SchedulingPolicy, seed: int = 0,
             record: bool = True, retry: RetryPolicy | None = None, dispatch_ahead: float = 0.0,
             dispatch_ahead_max_s: float = 0.25) -> SimResult:
    """Simulate `workload` on `cluster` under `policy`. Deterministic for a seed. `retry` is the backoff of
    failed tasks (default: the runtime's); `dispatch_ahead` models the runtime's dispatch ahead (off by default
    here; see `scheduling.ahead`)."""
    return Simulation(workload, cluster, policy, seed, record, retry, dispatch_ahead, dispatch_ahead_max_s).run()


__all__ = ["Simulation", "simulate", "JobState", "TASK_PENDING"]

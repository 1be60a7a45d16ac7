"""The runtime's in-memory bookkeeping of active workflow runs: task statuses, the ready queues, retries with
backoff, failure propagation and cancellation. Pure Python (no Ray): every status move is checked against the
transition table and recorded as a store `Change`, which the actor writes before it acts.

It means by every state what the simulator means (`orchestrator/sim/conformance.py` checks that both take the
same decisions): ready tasks made by `scheduling.interface.ready_task`, per-task priorities, allowed nodes from
`scheduling.placement.allowed_nodes`, backoff from `scheduling.retry.RetryPolicy`, dispatch ahead from
`scheduling.ahead`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cached_property
from operator import attrgetter

import numpy as np

from ..dag import DagAnalysis, analyse, dag_arrays
from ..errors import PolicyError
from ..model import TaskSpec, Workflow
from ..scheduling import check_policy, get_policy
from ..scheduling.ahead import DispatchAhead
from ..scheduling.interface import (
    EPS,
    TASK_DONE,
    TASK_FAILED,
    VIEW_CODE,
    Decision,
    NodeView,
    ReadyTask,
    SchedulingPolicy,
    ready_task,
)
from ..scheduling.placement import allowed_nodes
from ..scheduling.queue import ReadyQueue
from ..scheduling.retry import RetryPolicy
from ..states import TaskStatus, WorkflowStatus, task_transition, workflow_transition
from ..store.records import RunNote, TaskChange, WorkflowChange
from .executor import MEMORY_FLOOR
from .memory_requests import raised_request

log = logging.getLogger("orchestrator.runtime")
# A policy that takes longer than this for one decision (the learned one checks itself) is replaced, for the runs
# it schedules, by the fallback policy: a slow model delays nothing for long.
DECISION_DEADLINE_MS = 250.0
_seq_of = attrgetter("seq")

_CODE = VIEW_CODE  # TaskStatus -> the JobView.status code policies read

__all__ = ["RetryPolicy", "RunState", "RuntimeState"]  # RetryPolicy lives in scheduling.retry (shared)


class RunState:
    """One active workflow run, as the policy sees it (satisfies `JobView`)."""

    def __init__(self, index: int, run_id: str, wf: Workflow, arrival: float, policy_name: str,
                 default_duration: float = 1.0):
        dag = dag_arrays(wf)
        self.id = index
        self.run_id = run_id
        self.name = wf.name
        self.workflow = wf
        self.specs: list[TaskSpec] = list(wf.tasks)
        self.arrival = arrival
        self.priority = max((t.priority for t in wf.tasks), default=0)  # a job's priority: its highest task's
        self.policy_name = policy_name
        self.dag = dag
        self.predicted = np.array([t.duration if t.duration is not None else default_duration for t in wf.tasks])
        # Per-task lists, as `ready_task` reads them (`pred` follows `predicted`).
        self.cpus, self.memory, self.gpus = dag.cpus.tolist(), dag.memory.tolist(), dag.gpus.tolist()
        self.pred: list[float] = self.predicted.tolist()
        # Tasks whose memory request is a sized one (`memory_requests: sized`): task -> bytes, kept in `memory`.
        self.sized: dict[int, float] = {}
        self.task_priority: list[int] = dag.priority.tolist()
        self.status = bytearray(dag.n)
        self.detail: list[TaskStatus] = [TaskStatus.PENDING] * dag.n
        self.status_counts: dict[TaskStatus, int] = {s: 0 for s in TaskStatus}
        self.status_counts[TaskStatus.PENDING] = dag.n
        self.remaining_work = float((self.predicted * dag.cpus).sum())
        self.remaining_tasks = dag.n  # not yet terminal
        self.pending = dag.in_degree.tolist()
        self.attempts = [0] * dag.n  # attempts started (every attempt has its own number)
        self.failures = [0] * dag.n  # attempts that failed by the task's own fault (they use up `retries`)
        self.system_failures = [0] * dag.n  # attempts lost with their worker or node (not the task's fault)
        self.next_attempt_at: dict[int, float] = {}
        self.retry_order: dict[int, int] = {}  # task -> when its retry was scheduled (orders retries due at once)
        self.ready_tasks: dict[int, ReadyTask] = {}
        self.errors: dict[int, str] = {}
        self.result_refs: list[str | None] = [None] * dag.n
        self.wf_status = WorkflowStatus.PENDING
        self.cancel_requested = False
        self.error: str | None = None  # why the run failed or was cancelled
        self.ahead: set[int] = set()  # tasks dispatched ahead: queued at their node, not yet holding a slot
        self.failed_policies: set[str] = set()  # policies that failed on this run (never handed it again)
        self.abandoned: str | None = None  # why the run cannot go on (no policy can schedule it)

    @cached_property
    def analysis(self) -> DagAnalysis:
        """The DAG analysis on predicted durations, computed when a policy first reads it (FIFO never does);
        replaced when the predictions change."""
        return analyse(self.dag, self.predicted)

    def ids(self, indices) -> list[str]:
        return [self.dag.ids[i] for i in indices]

    def counts(self) -> dict[str, int]:
        """Tasks per status, kept up to date by every move (cheap enough to poll)."""
        return {s.value: n for s, n in self.status_counts.items() if n}

    def descendants(self, i: int) -> list[int]:
        return self.dag.descendants(i)


class _PolicyView:
    """The `SchedulingState` one policy sees: all active runs, the shared nodes, its own ready queue."""

    max_predicted = None  # every ready task is offered

    def __init__(self, owner: "RuntimeState", queue: ReadyQueue):
        self._owner = owner
        self.queue = queue

    @property
    def now(self) -> float:
        return self._owner.now

    @property
    def nodes(self) -> NodeView:
        return self._owner.nodes

    @property
    def jobs(self) -> dict[int, RunState]:
        return self._owner.jobs

    def ready(self, max_cpus: float | None = None) -> Iterator[ReadyTask]:
        return self.queue.iter(max_cpus)

    @property
    def num_ready(self) -> int:
        return len(self.queue)


class RuntimeState:
    """All active runs of one orchestrator, with one ready queue per policy in use.

    Dispatch ahead (`ahead` > 0, `scheduling.ahead`): once the policy has filled every free slot, it may also
    commit short ready tasks (predicted at most `ahead_max_s`) to nodes beyond their free capacity, up to `ahead` x
    the node's resources. They wait in Ray's queue for that node in the policy's order and start the moment a slot
    frees, on the worker just released, without a round trip through the orchestrator. A task that becomes ready
    later can thus wait behind at most that much short work per node. Their slot is accounted when a task of the
    node ends, or at once when the node has room for them at the end of the round (`promoted`).

    Custom resources: a task may go to the nodes of `nodes.custom` that offer its request (`allowed_nodes`, as in
    the simulator; the actor keeps `nodes.custom` up to date with what Ray reports, empty for a node that left).
    """

    def __init__(self, nodes: NodeView, default_policy: str = "srpt-cp", retry: RetryPolicy | None = None,
                 seed: int = 0, default_duration: float = 1.0, ahead: float = 0.0, ahead_max_s: float = 1.0):
        if ahead < 0 or ahead_max_s < 0:
            raise ValueError(f"dispatch ahead must be >= 0 (got ahead={ahead}, ahead_max_s={ahead_max_s})")
        self.nodes = nodes
        self.ahead = DispatchAhead(ahead, ahead_max_s)  # items: (run, task)
        self.promoted: list[tuple[RunState, int]] = []  # ahead tasks that took a slot (for timeouts)
        self.default_policy = default_policy
        check_policy(default_policy)  # fail early on an unknown name
        self.retry = retry or RetryPolicy()
        self.seed = seed  # of the policies (`reset`) and of the retry jitter
        self.default_duration = default_duration
        self.now = 0.0
        self.jobs: dict[int, RunState] = {}
        self.by_run: dict[str, RunState] = {}
        self.policies: dict[str, SchedulingPolicy] = {}
        self.views: dict[str, _PolicyView] = {}
        self.changes: list[TaskChange | WorkflowChange | RunNote] = []
        self.finished_runs: list[RunState] = []
        # Memory requests of tasks that declare none (`runtime.memory_requests.MemoryRequests`, set by the actor in
        # "sized" mode; None: every task keeps its declared memory, as in the simulator).
        self.memory_sizer = None
        self._next_index = 0
        self._ready_seq = 0
        self._retry_seq = 0

    # ---- recording -------------------------------------------------------------------------------------
    def take_changes(self) -> list[TaskChange | WorkflowChange | RunNote]:
        out, self.changes = self.changes, []
        return out

    def _move(self, run: RunState, i: int, new: TaskStatus, **fields) -> None:
        old = run.detail[i]
        task_transition(old, new)  # raises InvalidTransitionError on an illegal move
        run.detail[i] = new
        run.status_counts[old] -= 1
        run.status_counts[new] += 1
        run.status[i] = _CODE[new]
        if new.terminal:
            run.remaining_tasks -= 1
        self.changes.append(TaskChange(run.run_id, run.dag.ids[i], new, at=self.now, expected=old, **fields))

    def _move_run(self, run: RunState, new: WorkflowStatus, error: str | None = None) -> None:
        workflow_transition(run.wf_status, new)
        run.wf_status = new
        run.error = error
        self.changes.append(WorkflowChange(run.run_id, new, error=error, at=self.now))

    def _policy_view(self, name: str) -> _PolicyView:
        view = self.views.get(name)
        if view is None:
            policy = get_policy(name)
            if getattr(policy, "deadline_ms", 0) is None:  # a policy with a decision deadline left to the engine
                policy.deadline_ms = DECISION_DEADLINE_MS
            policy.reset(self.seed)
            self.policies[name] = policy
            view = self.views[name] = _PolicyView(self, ReadyQueue(policy))
        return view

    # ---- admission and resume ----------------------------------------------------------------------------
    def admit(self, run_id: str, wf: Workflow, now: float, policy: str | None = None,
              stored: dict[str, tuple[TaskStatus, int, str | None, float | None]] | None = None,
              stored_status: WorkflowStatus | None = None, live: set[int] | None = None,
              failures: dict[str, tuple[int, int]] | None = None, sized: dict[int, float] | None = None) -> RunState:
        """Start tracking a run. `stored` (task id -> (status, attempt, result_ref, next_attempt_at)) restores
        a run after a restart: finished tasks stay finished, tasks that were running are put back as ready unless
        they are in `live` (attempts still running, when the actor re-reads the store after a failed write).
        `failures` (task id -> (own failures, system failures), from the execution rows) restores how many
        retries each task has used. `sized` (task -> bytes) carries the sized memory requests of a run re-read
        from the store (its live attempts hold them, and a raised request stays raised)."""
        self.now = now
        name = policy or wf.policy or self.default_policy
        run = RunState(self._next_index, run_id, wf, now, name, self.default_duration)
        for i, m in (sized or {}).items():
            run.memory[i] = run.sized[i] = m
        self._next_index += 1
        try:
            self._policy_view(name).queue.policy.on_job_arrival(run)
        except Exception as exc:  # noqa: BLE001 - the policy cannot load or take the run: fall back, say why
            run.failed_policies.add(name)
            fallback = self.fallback_for(run) or "fifo"
            log.error("scheduling policy '%s' cannot take run %s (%s: %s); it runs under '%s'", name, run_id,
                      type(exc).__name__, exc, fallback)
            run.policy_name = fallback
            self._policy_view(fallback).queue.policy.on_job_arrival(run)
            self.changes.append(RunNote(run_id, "workflow.policy_fallback", {
                "policy": name, "fallback": fallback, "reason": f"{type(exc).__name__}: {exc}"[:2000]}, at=now))
        self.jobs[run.id] = run
        self.by_run[run_id] = run
        if stored is None:
            self._move_run(run, WorkflowStatus.RUNNING)
            for i in range(run.dag.n):
                if run.pending[i] == 0:
                    self._make_ready(run, i)
            return run
        run.wf_status = stored_status or WorkflowStatus.RUNNING
        if run.wf_status == WorkflowStatus.PENDING:
            self._move_run(run, WorkflowStatus.RUNNING)
        for i, tid in enumerate(run.dag.ids):
            status, attempt, result_ref, next_at = stored[tid]
            run.status_counts[run.detail[i]] -= 1
            run.status_counts[status] += 1
            run.detail[i] = status
            run.status[i] = _CODE[status]
            run.attempts[i] = attempt
            if failures and tid in failures:
                run.failures[i], run.system_failures[i] = failures[tid]
            run.result_refs[i] = result_ref
            if status.terminal:
                run.remaining_tasks -= 1
            if status == TaskStatus.SUCCEEDED:
                run.remaining_work -= float(run.predicted[i] * run.dag.cpus[i])
                for c in run.dag.children_of(i).tolist():
                    run.pending[c] -= 1
            elif status == TaskStatus.RETRYING:
                run.next_attempt_at[i] = next_at if next_at is not None else now
                self._retry_seq += 1
                run.retry_order[i] = self._retry_seq
        for i in range(run.dag.n):
            status = run.detail[i]
            if status == TaskStatus.RUNNING and live and i in live:
                continue
            if status == TaskStatus.RUNNING:
                # Its worker is gone with the previous orchestrator: run it again.
                self._move(run, i, TaskStatus.READY, error="requeued after an orchestrator restart")
                self._enqueue(run, i)
            elif status == TaskStatus.READY:
                self._enqueue(run, i)
            elif status == TaskStatus.PENDING and run.pending[i] == 0:
                self._make_ready(run, i)
        self._maybe_finish(run)
        return run

    # ---- readiness -----------------------------------------------------------------------------------------
    def _enqueue(self, run: RunState, i: int) -> None:
        if self.memory_sizer is not None and i not in run.sized and run.memory[i] == 0:
            self._size_memory(run, i)
        self._ready_seq += 1
        task = ready_task(run, i, self.now, self._ready_seq, self.allowed(run.specs[i].resources.custom))
        run.ready_tasks[i] = task
        self.views[run.policy_name].queue.push(task, run)

    def allowed(self, custom: dict[str, float]) -> frozenset[int] | None:
        """The nodes a task with this custom-resource request may run on; None: any."""
        if not custom:
            return None
        return allowed_nodes(self.nodes.custom, custom)

    def max_node_memory(self) -> float:
        """The memory of the largest node alive (a sized request never exceeds it)."""
        return max(self.nodes.cap_memory, default=0.0)

    def _size_memory(self, run: RunState, i: int) -> None:
        """A task that declares no memory becomes ready: its request is the sizer's, from the peaks recorded so
        far (none: it keeps no request). Never while it holds resources: `release` gives back `run.memory[i]`."""
        spec = run.specs[i]
        sized = self.memory_sizer.size(run.workflow.family, spec.category, spec.input_bytes)
        if sized is None:
            return
        memory = float(sized.memory)
        cap = self.max_node_memory()
        if cap > 0:
            memory = min(memory, cap)
        run.memory[i] = run.sized[i] = memory
        detail = sized.detail(self.memory_sizer.k, self.memory_sizer.margin)
        detail["memory"] = int(memory)
        self.changes.append(RunNote(run.run_id, "task.memory_sized", detail, at=self.now, task_id=spec.id))

    def _make_ready(self, run: RunState, i: int) -> None:
        self._move(run, i, TaskStatus.READY)
        self._enqueue(run, i)

    def _dequeue(self, run: RunState, i: int) -> None:
        task = run.ready_tasks.pop(i, None)
        if task is not None:
            self.views[run.policy_name].queue.remove(task)

    def promote_due_retries(self, now: float) -> int:
        """Retrying tasks whose backoff is over become ready: in the order they fell due, ties in the order their
        retries were scheduled (as in the simulator)."""
        self.now = now
        due = sorted((t, run.retry_order.get(i, 0), run.id, i) for run in self.jobs.values()
                     for i, t in run.next_attempt_at.items() if t <= now)
        for _, _, index, i in due:
            run = self.jobs[index]
            del run.next_attempt_at[i]
            run.retry_order.pop(i, None)
            self._make_ready(run, i)
        return len(due)

    def next_retry_time(self) -> float | None:
        times = [t for run in self.jobs.values() for t in run.next_attempt_at.values()]
        return min(times) if times else None

    # ---- scheduling ------------------------------------------------------------------------------------------
    def schedule(self, now: float) -> list[tuple[RunState, Decision]]:
        """Ask every policy in use for decisions (round-robin over policies), reserve their resources and record
        the moves to running; then, with dispatch ahead, the same for the ahead allowance. The caller persists the
        changes, then dispatches. A policy that raises or returns an invalid decision decides nothing: its runs
        go on under the fallback policy (`fallback_for`), and each run records why (`workflow.policy_fallback`)."""
        self.now = now
        out: list[tuple[RunState, Decision]] = []
        free_cpus = self.nodes.free_cpus
        for name, view in list(self.views.items()):
            if len(view.queue) and free_cpus and max(free_cpus) > EPS:  # as the simulator: only with a cpu free
                self._decide(name, view, self.nodes, out, ahead=False)
        if self.ahead.enabled:
            for name, view in list(self.views.items()):
                ahead_view = self.ahead.view(view)
                if ahead_view is not None and name in self.views:
                    self._decide(name, ahead_view, ahead_view.nodes, out, ahead=True)
            for _, (run, i) in self.ahead.promote_all(self.nodes):
                run.ahead.discard(i)
                self.promoted.append((run, i))
        return out

    def _decide(self, name: str, view: _PolicyView, nodes: NodeView, out: list, ahead: bool) -> None:
        try:
            decisions = self._checked(name, self.policies[name].schedule(view), nodes)
        except Exception as exc:  # noqa: BLE001 - a policy's fault must not stall the runs: fall back
            self._policy_failed(name, exc)
            return
        for t, node in decisions:
            run = self.jobs[t.job]
            nodes.reserve(node, t.cpus, t.memory, t.gpus)
            if ahead:
                self.ahead.commit(node, (run, t.task), t.cpus, t.memory, t.gpus)
                run.ahead.add(t.task)
            self._dequeue(run, t.task)
            run.attempts[t.task] += 1
            self._move(run, t.task, TaskStatus.RUNNING, attempt=run.attempts[t.task], node=self.nodes.names[node])
            out.append((run, Decision(t, node)))

    def _checked(self, name: str, decisions, nodes: NodeView) -> list[tuple[ReadyTask, int]]:
        """The policy's decisions, all checked before any is carried out: each names a ready task of this policy's
        queue once, and the tasks fit together on the nodes chosen. PolicyError naming the first bad one."""
        checked: list[tuple[ReadyTask, int]] = []
        free_c, free_m, free_g = list(nodes.free_cpus), list(nodes.free_memory), list(nodes.free_gpus)
        seen: set[tuple[int, int]] = set()
        for decision in decisions:
            try:
                t, node = decision
            except (TypeError, ValueError):
                raise PolicyError(f"policy '{name}' returned {decision!r}, not a (task, node) decision") from None
            run = self.jobs.get(getattr(t, "job", None))
            if (run is None or run.policy_name != name or run.detail[t.task] != TaskStatus.READY
                    or run.ready_tasks.get(t.task) is not t or (t.job, t.task) in seen):
                raise PolicyError(f"policy '{name}' chose a task that is not ready in its queue: {t!r}")
            if not isinstance(node, int) or not 0 <= node < len(free_c):
                raise PolicyError(f"policy '{name}' chose node {node!r}, which does not exist")
            if (free_c[node] < t.cpus - EPS or free_m[node] < t.memory - EPS or free_g[node] < t.gpus - EPS
                    or (t.allowed is not None and node not in t.allowed)):
                raise PolicyError(f"policy '{name}' placed {t!r} on node {self.nodes.names[node]}, which lacks room "
                                  "or the task's custom resources")
            free_c[node] -= t.cpus
            free_m[node] -= t.memory
            free_g[node] -= t.gpus
            seen.add((t.job, t.task))
            checked.append((t, node))
        return checked

    def fallback_for(self, run: RunState) -> str | None:
        """The policy that takes over a run whose policy failed: the default one, then FIFO, never one that has
        failed this run already; None when both have."""
        return next((p for p in (self.default_policy, "fifo") if p not in run.failed_policies), None)

    def _policy_failed(self, name: str, exc: BaseException) -> None:
        """Hand the runs of a policy that failed to a fallback that has not failed them yet (the default policy,
        then FIFO); a run that no policy can schedule fails, with the cause recorded, instead of stalling."""
        error = f"{type(exc).__name__}: {exc}"
        for run in list(self.jobs.values()):
            if run.policy_name != name:
                continue
            run.failed_policies.add(name)
            fallback = self.fallback_for(run)
            if fallback is None:
                log.error("no scheduling policy can schedule run %s (last: '%s' failed with %s): failing it",
                          run.run_id, name, error)
                self.abandon(run, f"no scheduling policy could schedule it (policies tried: "
                                  f"{', '.join(sorted(run.failed_policies))}; last error: {error})")
                continue
            log.error("scheduling policy '%s' failed (%s); run %s goes on under '%s'", name, error, run.run_id,
                      fallback)
            self._switch_policy(run, fallback, f"policy '{name}' failed: {error}")
        self.views.pop(name, None)  # a later run asking for it gets a fresh instance
        self.policies.pop(name, None)

    def abandon(self, run: RunState, error: str) -> None:
        """Fail a run that cannot go on: tasks not started are skipped (those waiting for a retry cancelled);
        tasks already running finish, and the run then fails with `error`."""
        run.abandoned = error
        for i, status in enumerate(run.detail):
            if status in (TaskStatus.PENDING, TaskStatus.READY):
                self._dequeue(run, i)
                self._move(run, i, TaskStatus.SKIPPED, error=error)
            elif status == TaskStatus.RETRYING:
                run.next_attempt_at.pop(i, None)
                run.retry_order.pop(i, None)
                self._move(run, i, TaskStatus.CANCELLED, error=error)
        self._maybe_finish(run)

    def _switch_policy(self, run: RunState, name: str, reason: str) -> None:
        """Move a run (and its ready tasks, in their ready order) to another policy's queue, and record why."""
        old = run.policy_name
        tasks = sorted(run.ready_tasks.values(), key=_seq_of)
        old_view = self.views.get(old)
        if old_view is not None:
            for t in tasks:
                old_view.queue.remove(t)
        view = self._policy_view(name)
        run.policy_name = name
        view.queue.policy.on_job_arrival(run)
        for t in tasks:
            view.queue.push(t, run)
        self.changes.append(RunNote(run.run_id, "workflow.policy_fallback",
                                    {"policy": old, "fallback": name, "reason": reason[:2000]}, at=self.now))

    def update_predictions(self, run: RunState, values: dict[int, float]) -> None:
        """New predicted durations for some tasks of a run (a predictor answered after admission). The run's
        remaining work, its DAG analysis and the queue keys of its ready tasks all follow, so that the policy
        orders by one consistent set of predictions."""
        if not values or run.id not in self.jobs:
            return
        for i, v in values.items():
            run.predicted[i] = v
            run.pred[i] = float(v)
        codes = np.frombuffer(run.status, np.int8)
        ended = (codes == TASK_DONE) | (codes == TASK_FAILED)  # succeeded, failed, skipped: no work remains
        run.remaining_work = float((run.predicted * run.dag.cpus)[~ended].sum())
        run.__dict__.pop("analysis", None)
        view = self.views.get(run.policy_name)
        if view is None:
            return
        for t in sorted(run.ready_tasks.values(), key=_seq_of):
            view.queue.remove(t)
            t.predicted = float(run.predicted[t.task])
            view.queue.push(t, run)
        view.queue.update_job(run)

    def set_priority(self, run: RunState, i: int, priority: int) -> int:
        """An operator changed the priority of task i of a run; returns its previous priority. The run's priority
        (its highest task's, over all its tasks, as at admission) follows, and so do the queue keys: a ready task is
        re-keyed in its policy's queue (as `update_predictions` does), the run re-keyed among the runs. A task not
        ready yet (pending, retrying) takes the new priority when it becomes ready (`ready_task` reads
        `task_priority`).

        Tasks committed ahead to a node (`run.ahead`, `scheduling.ahead`) are already running as far as the
        policy and the store are concerned: they wait in their node's queue in commit order, which carries no
        priority, so there is nothing to re-order there (and the store refuses a running task's change)."""
        previous = run.task_priority[i]
        if priority == previous:
            return previous
        run.task_priority[i] = priority
        run.dag.priority[i] = priority
        run.specs[i] = run.specs[i].model_copy(update={"priority": priority})
        run.priority = max(run.task_priority, default=0)
        view = self.views.get(run.policy_name)
        if view is None or run.id not in self.jobs:
            return previous
        task = run.ready_tasks.get(i)
        if task is not None:
            view.queue.remove(task)
            task.priority = priority
            # A fresh tie-breaker: the queue forgets a removed entry still in its heap by its seq, and the stale
            # entry under the same seq could otherwise be the one it yields (at the old priority's place). Among
            # tasks of equal keys, the task now comes as if it had become ready at the change.
            self._ready_seq += 1
            task.seq = self._ready_seq
            view.queue.push(task, run)
        view.queue.update_job(run)
        return previous

    def num_ahead(self) -> int:
        return len(self.ahead)

    def take_promoted(self) -> list[tuple[RunState, int]]:
        out, self.promoted = self.promoted, []
        return out

    def _promote(self, node: int) -> None:
        """A slot of `node` freed: the tasks queued ahead there take it, in order, as far as they fit."""
        for run, i in self.ahead.promote(node, self.nodes):
            run.ahead.discard(i)
            self.promoted.append((run, i))

    def clear_ahead(self) -> None:
        """Forget the ahead bookkeeping (the engine then reserves every live attempt as holding a slot)."""
        for run, i in self.ahead.clear():
            run.ahead.discard(i)
        self.promoted.clear()

    def num_ready(self) -> int:
        return sum(len(v.queue) for v in self.views.values())

    # ---- outcomes ---------------------------------------------------------------------------------------------
    def succeeded(self, run: RunState, i: int, node: int | None, result_ref: str | None, now: float) -> None:
        self.now = now
        if node is not None:
            self.release(run, i, node)
        if run.detail[i] != TaskStatus.RUNNING:
            return  # cancelled or timed out meanwhile: the late result is ignored
        run.result_refs[i] = result_ref
        self._move(run, i, TaskStatus.SUCCEEDED, result_ref=result_ref, error=None)
        run.remaining_work -= float(run.predicted[i] * run.dag.cpus[i])
        for c in run.dag.children_of(i).tolist():
            run.pending[c] -= 1
            if run.pending[c] == 0 and run.detail[c] == TaskStatus.PENDING and not run.cancel_requested:
                self._make_ready(run, c)
        view = self.views[run.policy_name]
        view.queue.update_job(run)
        self._maybe_finish(run)

    def failed(self, run: RunState, i: int, node: int | None, error: str, now: float, system: bool = False,
               retryable: bool = True, memory: bool = False) -> str:
        """An attempt failed. Returns what happened: 'retrying', 'failed' or 'ignored'.

        `memory`: it exceeded its memory request. A sized request (`run.sized`) below the largest node's memory is
        then a sizing miss, not the task's fault: the task is retried at once at double the request (at most the
        largest node's), without using up `retries`; bounded, since the request reaches the cap after a few
        doublings. A memory failure at the cap, or of a declared request, is an ordinary failure."""
        self.now = now
        if node is not None:
            self.release(run, i, node)
        if run.detail[i] != TaskStatus.RUNNING:
            return "ignored"
        spec = run.specs[i]
        if memory and i in run.sized and not run.cancel_requested:
            current = run.memory[i]
            # Double what was enforced: a shell command's address space is never below MEMORY_FLOOR.
            enforced = max(current, MEMORY_FLOOR) if spec.entrypoint_kind == "shell" else current
            raised = raised_request(enforced, self.max_node_memory())
            if raised is not None:
                run.memory[i] = run.sized[i] = raised
                outcome = self._retry(run, i, error, now)
                self.changes.append(RunNote(run.run_id, "task.memory_raised", {
                    "from": int(current), "to": int(raised), "attempt": run.attempts[i],
                    "cap": int(self.max_node_memory())}, at=now, task_id=spec.id))
                return outcome
        if system:
            run.system_failures[i] += 1  # a lost worker is not the task's fault: it does not use up `retries`
            can_retry = run.system_failures[i] <= self.retry.system_retries
        else:
            run.failures[i] += 1
            can_retry = retryable and run.failures[i] <= spec.retries
        if can_retry and not run.cancel_requested:
            delay = 0.0 if system else self.retry.delay(run.failures[i], spec.retry_delay, seed=self.seed,
                                                        job=run.id, task=i)
            return self._retry(run, i, error, now + delay)
        run.errors[i] = error
        self._move(run, i, TaskStatus.FAILED, error=error)
        cpus = run.dag.cpus
        run.remaining_work -= float(run.predicted[i] * cpus[i])  # failed and skipped tasks have no work left
        cause = f"upstream task '{run.dag.ids[i]}' failed"
        for d in run.descendants(i):
            if run.detail[d] in (TaskStatus.PENDING, TaskStatus.READY):
                self._dequeue(run, d)
                self._move(run, d, TaskStatus.SKIPPED, error=cause)
                run.remaining_work -= float(run.predicted[d] * cpus[d])
        view = self.views.get(run.policy_name)
        if view is not None:
            view.queue.update_job(run)
        self._maybe_finish(run)
        return "failed"

    def _retry(self, run: RunState, i: int, error: str, at: float) -> str:
        """Task i goes back to wait for its next attempt at `at` (retries due together start in failure order)."""
        self._move(run, i, TaskStatus.RETRYING, error=error, next_attempt_at=at)
        run.next_attempt_at[i] = at
        self._retry_seq += 1
        run.retry_order[i] = self._retry_seq
        return "retrying"

    def release(self, run: RunState, i: int, node: int) -> None:
        """Give back what task i of `run` holds on `node` (or its place in the node's ahead queue)."""
        c, m, g = run.cpus[i], run.memory[i], run.gpus[i]
        if i in run.ahead:  # ended while still queued ahead (cancelled, lost): it never held a slot
            run.ahead.discard(i)
            self.ahead.withdraw(node, (run, i), c, m, g)
            return
        self.nodes.release(node, c, m, g)
        if self.ahead.queues.get(node):
            self._promote(node)

    def cancel(self, run: RunState, now: float) -> list[int]:
        """Cancel a run: pending/ready/retrying tasks never start; returns the running tasks to stop."""
        self.now = now
        run.cancel_requested = True
        running = []
        for i, status in enumerate(run.detail):
            if status in (TaskStatus.PENDING, TaskStatus.READY, TaskStatus.RETRYING):
                self._dequeue(run, i)
                run.next_attempt_at.pop(i, None)
                run.retry_order.pop(i, None)
                self._move(run, i, TaskStatus.CANCELLED, error="workflow cancelled")
            elif status == TaskStatus.RUNNING:
                running.append(i)
                self._move(run, i, TaskStatus.CANCELLED, error="workflow cancelled while running")
        self._maybe_finish(run)
        return running

    def _maybe_finish(self, run: RunState) -> None:
        if run.remaining_tasks > 0 or run.wf_status.terminal:
            return
        failed = [run.dag.ids[i] for i, s in enumerate(run.detail) if s == TaskStatus.FAILED]
        if run.cancel_requested:
            self._move_run(run, WorkflowStatus.CANCELLED, "cancelled by request")
        elif run.abandoned is not None:
            self._move_run(run, WorkflowStatus.FAILED, run.abandoned)
        elif failed:
            first = failed[0]
            reason = run.errors.get(run.dag.index[first], "")
            reason = reason.strip().splitlines()[-1] if reason.strip() else ""
            self._move_run(run, WorkflowStatus.FAILED,
                           f"{len(failed)} task(s) failed: {', '.join(failed[:5])}"
                           + (f" ({first}: {reason})" if reason else ""))
        else:
            self._move_run(run, WorkflowStatus.SUCCEEDED)
        self.jobs.pop(run.id, None)
        if len(self.finished_runs) < 1000:
            self.finished_runs.append(run)

    def drop(self, run: RunState) -> None:
        """Stop tracking a run (its ready tasks leave the queue; the caller has released its resources)."""
        for i in list(run.ready_tasks):
            self._dequeue(run, i)
        run.next_attempt_at.clear()
        run.retry_order.clear()
        self.jobs.pop(run.id, None)
        if self.by_run.get(run.run_id) is run:
            del self.by_run[run.run_id]

    def replace_in_ahead(self, old: RunState | None, new: RunState) -> None:
        """After a run was re-read: its tasks queued ahead at their nodes belong to the new run object."""
        if old is None:
            return
        for q in self.ahead.queues.values():
            for k, ((r, i), c, m, g) in enumerate(q):
                if r is old:
                    q[k] = ((new, i), c, m, g)

    def forget(self, run_id: str) -> None:
        run = self.by_run.pop(run_id, None)
        if run is not None:
            self.jobs.pop(run.id, None)

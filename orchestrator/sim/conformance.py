"""Conformance of the two engines: the simulator and the runtime's state machine take the same decisions.

`check_conformance(policy_name, workload, cluster, seed)` runs a workload through the simulator (its general
path, recording every event) and replays those events, in the same order and at the same times, into a
`RuntimeState` driven without Ray: arrivals -> `admit`; ends of attempts -> `succeeded` / `failed` with the
outcome the simulator drew; then, each round, `promote_due_retries` and `schedule` at the same `now`. Every
round must give the same decisions (task, node, order), the same ready tasks and remaining work per job, every
freed slot the same promotions of tasks dispatched ahead, every failure the same retry time, every task the
same final status and number of attempts. The default configuration is the runtime's (`RuntimeConfig`: dispatch
ahead and retry backoff). Any policy registered by name can be checked, a learned one as well as the heuristics;
a policy that keeps its own state must give the same answers to the same calls.

The runtime's job index is its admission order, so jobs are renumbered by arrival order first (the simulator's
job id is then the runtime's run index). Each job needs its `Workflow` (`Job.workflow`, set for jobs made from
a `TraceEntry`); the runtime gets it with the job's predicted durations as task durations (so its policy sees
the same predictions) and the job's priority added to each task's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..scheduling import get_policy
from ..scheduling.interface import NodeView
from ..scheduling.retry import RetryPolicy
from ..states import TASK_STATUS_BY_CODE
from .cluster import Cluster
from .engine import Simulation, simulate
from .workload import Workload


class ConformanceError(AssertionError):
    """The engines disagree; the message names the first difference."""


@dataclass(frozen=True)
class ConformanceReport:
    """What was compared (all of it equal)."""

    policy: str
    rounds: int  # rounds of decisions (each: the runtime's `schedule` against the simulator's round)
    decisions: int  # attempts started or committed ahead
    ahead_decisions: int  # of those, committed ahead
    promotions: int  # tasks dispatched ahead that took a slot
    failed_attempts: int
    retries: int  # failed attempts retried after their backoff
    failed_jobs: int
    tasks: int


def runtime_defaults() -> dict:
    """The runtime's default dispatch ahead and retry backoff (`RuntimeConfig`), without reading the environment."""
    from ..runtime.config import RuntimeConfig

    fields = RuntimeConfig.model_fields
    return {
        "dispatch_ahead": fields["dispatch_ahead"].default,
        "dispatch_ahead_max_s": fields["dispatch_ahead_max_s"].default,
        "retry": RetryPolicy(fields["retry_base"].default, fields["retry_cap"].default, fields["retry_jitter"].default,
                             fields["system_retries"].default),
    }


def in_arrival_order(workload: Workload) -> Workload:
    """The workload with job ids 0, 1, ... in arrival order (ties in workload order): the runtime's run indices."""
    order = sorted(range(len(workload.jobs)), key=lambda k: workload.jobs[k].arrival)
    return Workload(tuple(replace(workload.jobs[k], id=rank) for rank, k in enumerate(order)), workload.description)


def runtime_workflow(job):
    """The workflow the runtime is given for a job: its own, with the job's predicted durations and priority."""
    wf = job.workflow
    if wf is None:
        raise ValueError(f"Job {job.id} ('{job.name}') has no workflow; make it from a TraceEntry")
    if tuple(t.id for t in wf.tasks) != job.dag.ids:
        raise ValueError(f"Job {job.id} ('{job.name}'): its workflow's tasks are not those of its DAG")
    tasks = [t.model_copy(update={"duration": float(job.predicted[i]), "priority": t.priority + job.priority})
             for i, t in enumerate(wf.tasks)]
    return wf.model_copy(update={"tasks": tasks, "policy": None})


def check_conformance(policy_name: str, workload: Workload, cluster: Cluster, seed: int = 0, *,
                      dispatch_ahead: float | None = None, dispatch_ahead_max_s: float | None = None,
                      retry: RetryPolicy | None = None) -> ConformanceReport:
    """Run `workload` through both engines under the policy registered as `policy_name` and check they agree
    (module docstring); raise ConformanceError at the first difference. Options left out take the runtime's
    defaults. Also checks that `simulate()` (which may take the simulator's fast path) gives the same run."""
    from ..runtime.state import RuntimeState
    from ..store.records import RunNote

    defaults = runtime_defaults()
    ahead = defaults["dispatch_ahead"] if dispatch_ahead is None else dispatch_ahead
    ahead_max_s = defaults["dispatch_ahead_max_s"] if dispatch_ahead_max_s is None else dispatch_ahead_max_s
    retry = retry or defaults["retry"]
    workload = in_arrival_order(workload)
    workflows = {job.id: runtime_workflow(job) for job in workload.jobs}

    events: list[tuple] = []
    sim = Simulation(workload, cluster, get_policy(policy_name), seed, record=True, retry=retry,
                     dispatch_ahead=ahead, dispatch_ahead_max_s=ahead_max_s, events=events)
    result = sim.run()
    # A plain `simulate()` (no event log; the fast path where it applies) must be the same run.
    _same_run(result, simulate(workload, cluster, get_policy(policy_name), seed, retry=retry, dispatch_ahead=ahead,
                               dispatch_ahead_max_s=ahead_max_s), policy_name)

    nodes = NodeView([n.name for n in cluster.nodes], [n.cpus for n in cluster.nodes],
                     [n.memory for n in cluster.nodes], [n.gpus for n in cluster.nodes],
                     [n.custom for n in cluster.nodes])
    state = RuntimeState(nodes, default_policy=policy_name, retry=retry, seed=seed, ahead=ahead,
                         ahead_max_s=ahead_max_s)
    runs = {}
    retries_due: list[tuple[int, int]] = []
    counts = {"rounds": 0, "decisions": 0, "ahead": 0, "promotions": 0, "failed": 0, "retries": 0}
    k = 0

    def fail(what: str, now: float, expected, got) -> None:
        raise ConformanceError(f"policy '{policy_name}', seed {seed}, t={now!r}, round {counts['rounds']}: {what}"
                               f"\n  simulator: {expected!r}\n  runtime:   {got!r}")

    def take_promotions(now: float) -> None:
        nonlocal k
        expected = []
        while k < len(events) and events[k][0] == "promote":
            expected.append((events[k][2], events[k][3]))
            k += 1
        got = [(run.id, i) for run, i in state.take_promoted()]
        if got != expected:
            fail("tasks dispatched ahead that took a slot", now, expected, got)
        counts["promotions"] += len(got)

    while k < len(events):
        event = events[k]
        kind, now = event[0], event[1]
        k += 1
        if kind == "arrive":
            job = event[2]
            run = state.admit(f"job-{job}", workflows[job], now, policy=policy_name)
            if run.id != job:
                fail("run index of an arriving job", now, job, run.id)
            runs[job] = run
        elif kind == "end":
            _, _, job, task, node, outcome = event
            run = runs[job]
            if outcome == "succeeded":
                state.succeeded(run, task, node, None, now)
            else:
                counts["failed"] += 1
                got = state.failed(run, task, node, "simulated failure", now)
                if got != outcome:
                    fail(f"outcome of a failed attempt of task {task} of job {job}", now, outcome, got)
            take_promotions(now)
        elif kind == "retry":
            retries_due.append((event[2], event[3]))
        elif kind == "round":
            _, _, num_ready, remaining = event
            counts["rounds"] += 1
            for job, task in retries_due:
                due = runs[job].next_attempt_at.get(task)
                if due != now:
                    fail(f"retry time of task {task} of job {job}", now, now, due)
            before = state._ready_seq
            promoted = state.promote_due_retries(now)
            if promoted != len(retries_due):
                fail("number of retries falling due", now, len(retries_due), promoted)
            got_order = sorted(((runs[j].ready_tasks[t].seq, (j, t)) for j, t in retries_due), key=lambda x: x[0])
            if [jt for _, jt in got_order] != retries_due or (got_order and got_order[0][0] != before + 1):
                fail("order in which retried tasks became ready", now, retries_due, [jt for _, jt in got_order])
            counts["retries"] += len(retries_due)
            retries_due = []
            if state.num_ready() != num_ready:
                fail("number of ready tasks", now, num_ready, state.num_ready())
            got_remaining = {run.id: run.remaining_work for run in state.jobs.values()}
            if got_remaining != remaining:
                fail("remaining predicted work per active job", now, remaining, got_remaining)
            got = [(run.id, d.task.task, d.node) for run, d in state.schedule(now)]
            expected = []
            while k < len(events) and events[k][0] == "decide":
                expected.extend(events[k][2])
                if events[k][3]:
                    counts["ahead"] += len(events[k][2])
                k += 1
            if got != expected:
                fail("decisions (job, task, node) in order", now, expected, got)
            counts["decisions"] += len(got)
            notes = [c for c in state.take_changes() if isinstance(c, RunNote)]
            if notes:
                fail("policy calls", now, "no fallback", notes[0].data)
            take_promotions(now)
        else:  # "promote" events are taken right after the event that caused them
            fail(f"order of events (unexpected '{kind}')", now, "end or round first", event)

    _same_outcomes(sim, runs, state, policy_name, seed)
    return ConformanceReport(policy_name, counts["rounds"], counts["decisions"], counts["ahead"],
                             counts["promotions"], counts["failed"], counts["retries"], result.failed_jobs,
                             workload.num_tasks)


def _same_outcomes(sim: Simulation, runs: dict, state, policy_name: str, seed: int) -> None:
    from ..states import WorkflowStatus

    where = f"policy '{policy_name}', seed {seed}"
    if state.jobs or state.num_ready() or state.num_ahead():
        raise ConformanceError(f"{where}: the runtime still holds {len(state.jobs)} run(s), {state.num_ready()} ready "
                               f"and {state.num_ahead()} ahead task(s) after the simulator's last event")
    if state.nodes.free_cpus != state.nodes.cap_cpus:
        raise ConformanceError(f"{where}: the runtime's free cpus {state.nodes.free_cpus} are not its capacities")
    for job_id, js in sim.finished.items():
        run = runs[job_id]
        expected = [TASK_STATUS_BY_CODE[c] for c in js.detail]
        if run.detail != expected:
            raise ConformanceError(f"{where}: final task statuses of job {job_id}\n  simulator: {expected}\n"
                                   f"  runtime:   {run.detail}")
        if run.attempts != js.attempts:
            raise ConformanceError(f"{where}: attempts per task of job {job_id}\n  simulator: {js.attempts}\n"
                                   f"  runtime:   {run.attempts}")
        status = WorkflowStatus.SUCCEEDED if js.failed_tasks == 0 else WorkflowStatus.FAILED
        if run.wf_status != status:
            raise ConformanceError(f"{where}: job {job_id} ended {run.wf_status.value} in the runtime, "
                                   f"{status.value} in the simulator")


def _same_run(a, b, policy_name: str) -> None:
    import numpy as np

    for name in ("job", "task", "node", "start", "end", "attempts", "status"):
        x, y = getattr(a.tasks, name), getattr(b.tasks, name)
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            raise ConformanceError(f"policy '{policy_name}': simulate() and the recorded simulation differ in "
                                   f"tasks.{name}")
    if not np.array_equal(a.finish, b.finish) or a.decisions != b.decisions:
        raise ConformanceError(f"policy '{policy_name}': simulate() and the recorded simulation differ in job ends")


__all__ = ["check_conformance", "ConformanceError", "ConformanceReport", "runtime_defaults", "in_arrival_order",
           "runtime_workflow"]

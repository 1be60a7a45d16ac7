"""Metrics of a simulated run and the lower bounds they are compared with.

Lower bounds on the makespan (measured from the first arrival), each valid for any policy:

- `critical_path_lb`: no job ends before its arrival plus its critical path (tasks at their actual durations);
- `work_lb`: the cpu work still to come after any arrival cannot finish before the whole cluster's cpus do it;
- `makespan_lb`: the largest of those two and the same work bound on memory (GiB-seconds over total memory).

`avg_jct_lb` is the mean over jobs of each job's isolated bound (its critical path, cpu work / cpus and memory
work / memory, with the cluster to itself).

Failures (a workload with a `FailureModel`): which attempts fail is drawn with the workload, and the backoff
before each retry is a function of (seed, job, task, attempt), so what each task costs is the same under every
policy: its failed attempts (each holding its resources for its failure fraction of the duration), its
successful one, and the backoffs in between; a task downstream of one that fails for good never runs. The bounds
use exactly that (`attempt_profile`). A job that ends with a failed task counts as failed (`failed_jobs`,
`SimResult.succeeded`); its JCT runs from its arrival to its end, the moment its last task ended or was skipped
(when its user learns the outcome), and it is counted in `avg_jct`, `p95_jct` and the slowdowns like any job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..dag import analyse

if TYPE_CHECKING:
    from ..scheduling.retry import RetryPolicy
    from .engine import Simulation
    from .workload import Job

GiB = 1024**3


@dataclass(frozen=True)
class TaskRecord:
    """Where and when every task ran (only when the simulation recorded it): its last attempt's node, start and
end (-1 and NaN for a task that never ran), how many attempts it took, and its final status
(`states.TASK_CODE`)."""

    job: np.ndarray
    task: np.ndarray
    node: np.ndarray
    start: np.ndarray
    end: np.ndarray
    attempts: np.ndarray | None = None
    status: np.ndarray | None = None


@dataclass(frozen=True)
class SimResult:
    policy: str
    makespan: float
    job_ids: np.ndarray
    job_names: list[str]
    arrival: np.ndarray
    finish: np.ndarray
    jct: np.ndarray
    isolated_lb: np.ndarray  # per-job lower bound on its JCT with the cluster to itself
    makespan_lb: float
    critical_path_lb: float  # makespan bound from the jobs' critical paths alone
    work_lb: float  # makespan bound from cpu work over cpu capacity alone
    capacity_cpus: float
    reserved_cpu_s: float
    used_cpu_s: float
    reserved_mem_gib_s: float
    used_mem_gib_s: float
    num_tasks: int
    decisions: int
    policy_seconds: float
    wall_seconds: float
    tasks: TaskRecord | None = field(default=None, repr=False)
    succeeded: np.ndarray | None = None  # per job: it ended without a failed task

    @property
    def failed_jobs(self) -> int:
        return 0 if self.succeeded is None else int((~self.succeeded).sum())

    @property
    def slowdown(self) -> np.ndarray:
        return self.jct / np.maximum(self.isolated_lb, 1e-9)

    def metrics(self) -> dict[str, float]:
        """Plain-named metrics, as written to results.csv."""
        jct = self.jct
        return {
            "makespan": self.makespan,
            "avg_jct": float(jct.mean()),
            "p95_jct": float(np.percentile(jct, 95)),
            "avg_slowdown": float(self.slowdown.mean()),
            "p95_slowdown": float(np.percentile(self.slowdown, 95)),
            "utilisation": self.reserved_cpu_s / (self.capacity_cpus * self.makespan) if self.makespan > 0 else 0.0,
            "reserved_cpu_s": self.reserved_cpu_s,
            "used_cpu_s": self.used_cpu_s,
            "cpu_efficiency": self.used_cpu_s / self.reserved_cpu_s if self.reserved_cpu_s > 0 else 0.0,
            "reserved_mem_gib_s": self.reserved_mem_gib_s,
            "used_mem_gib_s": self.used_mem_gib_s,
            "makespan_lb": self.makespan_lb,
            "critical_path_lb": self.critical_path_lb,
            "work_lb": self.work_lb,
            "avg_jct_lb": float(self.isolated_lb.mean()),
            "failed_jobs": self.failed_jobs,
            "makespan_over_lb": self.makespan / self.makespan_lb if self.makespan_lb > 0 else 1.0,
            "avg_jct_over_lb": float(jct.mean() / self.isolated_lb.mean()) if self.isolated_lb.mean() > 0 else 1.0,
            "decision_us": 1e6 * self.policy_seconds / max(self.decisions, 1),
            "sim_tasks_per_s": self.num_tasks / self.wall_seconds if self.wall_seconds > 0 else 0.0,
        }


def attempt_profile(job: "Job", retry: "RetryPolicy", seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per task of a job with drawn failures: the seconds its attempts hold their resources in all (`busy`), and
    that plus the backoffs between them (`span`, what it adds to any path through it); 0 for a task that never
    runs (downstream of one that fails for good)."""
    dag = job.dag
    fails, retries = job.failed_attempts, dag.retries
    runs = np.ones(dag.n, dtype=bool)
    for t in np.flatnonzero(fails > retries).tolist():
        runs[dag.descendants(t)] = False
    busy = np.zeros(dag.n)
    span = np.zeros(dag.n)
    for t in np.flatnonzero(runs).tolist():
        k, r, actual = int(fails[t]), int(retries[t]), float(job.actual[t])
        base = None if np.isnan(dag.retry_delay[t]) else float(dag.retry_delay[t])
        busy[t] = k * float(job.fail_fraction[t]) * actual + (actual if k <= r else 0.0)
        span[t] = busy[t] + sum(retry.delay(a, base, seed=seed, job=job.id, task=t) for a in range(1, min(k, r) + 1))
    return busy, span


def compute_result(sim: "Simulation", wall_seconds: float) -> SimResult:
    jobs = sorted(sim.finished.values(), key=lambda j: j.id)
    cluster = sim.cluster
    total_cpus, total_mem = cluster.total_cpus, cluster.total_memory
    arrival = np.array([j.arrival for j in jobs])
    finish = np.array([j.finish for j in jobs])
    iso = np.empty(len(jobs))
    cp_len = np.empty(len(jobs))
    reserved_cpu = used_cpu = reserved_mem = used_mem = 0.0
    cpu_work = np.empty(len(jobs))
    critical_paths: dict[tuple[int, bytes], float] = {}  # jobs of one DAG with the same durations share it
    for k, js in enumerate(jobs):
        job, dag = js.job, js.dag
        if job.failed_attempts is None:
            busy = job.actual
            key = (id(dag), job.actual.tobytes())
            cp = critical_paths.get(key)
            if cp is None:
                cp = critical_paths[key] = analyse(dag, job.actual).critical_path_length
        else:
            busy, span = attempt_profile(job, sim.retry, sim.seed)
            cp = analyse(dag, span).critical_path_length
        cp_len[k] = cp
        cpu_work[k] = float((busy * dag.cpus).sum())
        mem_work = float((busy * dag.memory).sum())
        iso[k] = max(cp, cpu_work[k] / total_cpus, mem_work / total_mem)
        reserved_cpu += cpu_work[k]
        used_cpu += float((busy * job.used_cpus).sum())
        reserved_mem += mem_work / GiB
        used_mem += float((busy * job.used_memory).sum()) / GiB
    first = float(arrival.min())
    makespan = float(finish.max()) - first
    # Work still to do after each arrival bounds the end time from below; so does each job alone.
    order = np.argsort(arrival, kind="stable")
    suffix_work = np.cumsum(cpu_work[order][::-1])[::-1]
    work_bound = float(np.max(arrival[order] + suffix_work / total_cpus))
    critical_path_bound = float(np.max(arrival + cp_len))
    bound = max(work_bound, float(np.max(arrival + iso)))  # iso includes each job's critical path
    tasks = None
    if sim.record:
        parts = [(np.full(js.dag.n, js.id), np.arange(js.dag.n), np.asarray(js.node), np.asarray(js.start),
                  np.asarray(js.end), np.asarray(js.attempts), np.frombuffer(bytes(js.detail), np.int8))
                 for js in jobs]
        tasks = TaskRecord(*(np.concatenate([p[i] for p in parts]) for i in range(7)))
    return SimResult(
        policy=sim.policy.name,
        makespan=makespan,
        job_ids=np.array([j.id for j in jobs]),
        job_names=[j.name for j in jobs],
        arrival=arrival,
        finish=finish,
        jct=finish - arrival,
        isolated_lb=iso,
        makespan_lb=bound - first,
        critical_path_lb=critical_path_bound - first,
        work_lb=work_bound - first,
        capacity_cpus=total_cpus,
        reserved_cpu_s=reserved_cpu,
        used_cpu_s=used_cpu,
        reserved_mem_gib_s=reserved_mem,
        used_mem_gib_s=used_mem,
        num_tasks=sum(js.dag.n for js in jobs),
        decisions=sim.decisions,
        policy_seconds=sim.policy_seconds,
        wall_seconds=wall_seconds,
        tasks=tasks,
        succeeded=np.array([js.failed_tasks == 0 for js in jobs], dtype=bool),
    )

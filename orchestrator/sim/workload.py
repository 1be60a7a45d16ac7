"""Workloads for the simulator: jobs (workflow DAGs with actual and predicted task durations) arriving over time,
sampled from real traces (Poisson arrivals scaled to a target load) or replayed from an arrival list, and
optionally seeded task failures (`FailureModel`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..dag import DagAnalysis, DagArrays, analyse, dag_arrays
from ..errors import SimulationError
from ..loaders import load_trace_files
from ..model import Workflow
from .cluster import Cluster


@dataclass(frozen=True)
class TraceEntry:
    """A workflow prepared once for repeated simulation: its arrays, actual usage and static analysis."""

    workflow: Workflow
    dag: DagArrays
    actual: np.ndarray  # recorded runtime per task, seconds
    used_cpus: np.ndarray  # cores actually busy on average (<= request when recorded)
    used_memory: np.ndarray  # peak bytes actually used (request when not recorded)
    analysis: DagAnalysis  # on actual durations

    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def family(self) -> str:
        return self.workflow.family or "unknown"

    @property
    def cpu_work(self) -> float:
        return float((self.actual * self.dag.cpus).sum())

    @classmethod
    def from_workflow(cls, wf: Workflow) -> "TraceEntry":
        dag = dag_arrays(wf)
        used_cpus = np.array(
            [min(t.observed.avg_cpu, t.resources.cpus) if t.observed and t.observed.avg_cpu is not None
             else t.resources.cpus for t in wf.tasks])
        used_memory = np.array(
            [t.observed.peak_memory if t.observed and t.observed.peak_memory else t.resources.memory
             for t in wf.tasks], dtype=np.float64)
        return cls(wf, dag, dag.duration.copy(), used_cpus, used_memory, analyse(dag))


@dataclass(frozen=True)
class Job:
    """One workflow instance in a simulated workload.

    `priority` is added to the priority of each of its tasks (0: the tasks' own priorities). `failed_attempts`
    (None: the job never fails) is the number of attempts of each task that fail before one succeeds; a value
    above the task's retries means it fails for good. A failed attempt holds its resources for `fail_fraction`
    x its actual duration, then fails.
    """

    id: int
    name: str
    family: str
    arrival: float
    dag: DagArrays
    actual: np.ndarray
    predicted: np.ndarray
    used_cpus: np.ndarray
    used_memory: np.ndarray
    priority: int = 0
    workflow: Workflow | None = field(default=None, repr=False, compare=False)  # what `dag` was built from
    failed_attempts: np.ndarray | None = field(default=None, repr=False)  # int64 per task
    fail_fraction: np.ndarray | None = field(default=None, repr=False)  # float64 per task, in [0, 1]


@dataclass(frozen=True)
class Workload:
    jobs: tuple[Job, ...]
    description: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.jobs)

    @property
    def num_tasks(self) -> int:
        return sum(j.dag.n for j in self.jobs)


class TraceLibrary:
    """Real workflows loaded once, grouped by family, ready to be sampled into workloads."""

    def __init__(self, entries: Sequence[TraceEntry]):
        if not entries:
            raise SimulationError("A trace library needs at least one workflow")
        names: set[str] = set()
        for e in entries:
            if e.name in names:  # results are keyed by workflow name
                raise SimulationError(f"Two workflows of the trace library are named '{e.name}'; names must be "
                                      "unique (TraceLibrary.from_workflows renames repeats)")
            names.add(e.name)
        self.entries = list(entries)

    @classmethod
    def from_dir(cls, directory: str | Path, max_tasks: int | None = None) -> "TraceLibrary":
        """Every trace file under a folder; names are unique (a folder-relative path where file names repeat)."""
        entries = []
        for _, wf in load_trace_files(directory):
            if max_tasks is None or len(wf.tasks) <= max_tasks:
                entries.append(TraceEntry.from_workflow(wf))
        if not entries:
            raise SimulationError(f"No workflow in '{directory}' has at most {max_tasks} tasks")
        return cls(entries)

    @classmethod
    def from_workflows(cls, workflows: Sequence[Workflow]) -> "TraceLibrary":
        """The given workflows; a repeated name gets a numeric suffix (`name~2`, `name~3`, ...)."""
        used: set[str] = set()
        entries = []
        for wf in workflows:
            name, k = wf.name, 1
            while name in used:
                k += 1
                name = f"{wf.name}~{k}"
            used.add(name)
            entries.append(TraceEntry.from_workflow(wf if name == wf.name else wf.model_copy(update={"name": name})))
        return cls(entries)

    @property
    def families(self) -> list[str]:
        return sorted({e.family for e in self.entries})

    def subset(self, families: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
               max_tasks: int | None = None) -> "TraceLibrary":
        chosen = [e for e in self.entries
                  if (families is None or e.family in families)
                  and (exclude is None or e.family not in exclude)
                  and (max_tasks is None or e.dag.n <= max_tasks)]
        if not chosen:
            raise SimulationError(f"No workflow matches families={families} exclude={exclude} max_tasks={max_tasks}")
        return TraceLibrary(chosen)

    def by_name(self, name: str) -> TraceEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise SimulationError(f"No workflow named '{name}' in the trace library")


@dataclass(frozen=True)
class FailureModel:
    """Seeded task failures. Every attempt of a task fails independently with its probability: `by_task` (task
    id), else `by_category` (the task's category), else `probability`. For each (job, task) the number of failed
    attempts before one succeeds is drawn once, when the workload is made (geometric; capped at the task's
    retries + 1, which means it fails for good), from a stream seeded by (workload seed, job id) alone: the rest
    of the workload (arrivals, predictions) is the same with or without failures, and so is the draw for
    every policy. A failed attempt holds its resources for a fraction of the task's actual duration drawn
    uniformly in `fraction` (the same for every failed attempt of that task; (1, 1): its whole duration), then
    fails; the runtime's backoff (`scheduling.retry`) decides when it is tried again."""

    probability: float = 0.0
    by_category: Mapping[str, float] = field(default_factory=dict)
    by_task: Mapping[str, float] = field(default_factory=dict)
    fraction: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for where, p in [("probability", self.probability), *self.by_category.items(), *self.by_task.items()]:
            if not 0.0 <= p <= 1.0:
                raise SimulationError(f"Failure probability {where}={p} must be in [0, 1]")
        lo, hi = self.fraction
        if not 0.0 <= lo <= hi <= 1.0:
            raise SimulationError(f"Failure fraction {self.fraction} must satisfy 0 <= low <= high <= 1")

    def probabilities(self, job: Job) -> np.ndarray:
        """Each task's failure probability per attempt."""
        p = np.full(job.dag.n, float(self.probability))
        if self.by_category:
            if job.workflow is None:
                raise SimulationError(f"Job '{job.name}' has no workflow to read task categories from")
            for i, t in enumerate(job.workflow.tasks):
                if t.category in self.by_category:
                    p[i] = self.by_category[t.category]
        for tid, value in self.by_task.items():
            i = job.dag.index.get(tid)
            if i is not None:
                p[i] = value
        return p

    def draw(self, job: Job, seed: int) -> Job:
        """The job with its failed attempts drawn (unchanged when no task can fail)."""
        p = self.probabilities(job)
        if not p.any():
            return job
        rng = np.random.default_rng([seed & 0xFFFFFFFF, job.id, 0xFA11])
        limit = job.dag.retries + 1  # that many failures: out of retries
        success = np.clip(1.0 - p, 1e-12, 1.0)
        failed = np.where(p >= 1.0, limit, np.minimum(rng.geometric(success) - 1, limit)).astype(np.int64)
        fraction = rng.uniform(self.fraction[0], self.fraction[1], size=job.dag.n)
        if not failed.any():
            return job
        return replace(job, failed_attempts=failed, fail_fraction=fraction)

    def apply(self, workload: "Workload", seed: int | None = None) -> "Workload":
        """The workload with failures drawn for every job (`seed`: the workload's own by default)."""
        seed = int(workload.description.get("seed", 0) if seed is None else seed)
        return Workload(tuple(self.draw(j, seed) for j in workload.jobs),
                        {**workload.description, "failures": self.describe()})

    def describe(self) -> dict:
        return {"probability": self.probability, "by_category": dict(self.by_category),
                "by_task": dict(self.by_task), "fraction": list(self.fraction)}


def predict_durations(actual: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """What a scheduler is told: the actual duration times log-normal noise (sigma=`noise`; 0 = exact)."""
    if noise <= 0:
        return actual.copy()
    return actual * rng.lognormal(0.0, noise, size=actual.shape)


def make_job(entry: TraceEntry, job_id: int, arrival: float, rng: np.random.Generator, noise: float,
             time_scale: float = 1.0, priority: int = 0) -> Job:
    actual = entry.actual * time_scale
    return Job(
        id=job_id,
        name=entry.name,
        family=entry.family,
        arrival=float(arrival),
        dag=entry.dag,
        actual=actual,
        predicted=predict_durations(actual, rng, noise),
        used_cpus=entry.used_cpus,
        used_memory=entry.used_memory,
        priority=priority,
        workflow=entry.workflow,
    )


def _with_failures(workload: Workload, failures: FailureModel | None) -> Workload:
    return workload if failures is None else failures.apply(workload)


def single_workload(entry: TraceEntry, seed: int = 0, noise: float = 0.3, time_scale: float = 1.0,
                    failures: FailureModel | None = None) -> Workload:
    """One workflow arriving at time 0 (makespan experiments)."""
    rng = np.random.default_rng(seed)
    return _with_failures(Workload((make_job(entry, 0, 0.0, rng, noise, time_scale),),
                                   {"kind": "single", "workflow": entry.name, "seed": seed, "noise": noise}),
                          failures)


def poisson_workload(library: TraceLibrary, cluster: Cluster, load: float, num_jobs: int, seed: int = 0,
                     noise: float = 0.3, time_scale: float = 1.0, failures: FailureModel | None = None) -> Workload:
    """`num_jobs` workflows sampled uniformly from the library, arriving as a Poisson process whose rate makes
    the offered cpu load (arrival rate x mean cpu work / total cpus) equal to `load`."""
    if not 0 < load:
        raise SimulationError(f"load must be > 0, got {load}")
    if num_jobs < 1:
        raise SimulationError(f"num_jobs must be >= 1, got {num_jobs}")
    if not time_scale > 0:
        raise SimulationError(f"time_scale must be > 0, got {time_scale}")
    rng = np.random.default_rng(seed)
    mean_work = float(np.mean([e.cpu_work for e in library.entries])) * time_scale
    if not (np.isfinite(mean_work) and mean_work > 0):
        raise SimulationError(
            f"Cannot scale arrivals to load {load}: the workflows' mean cpu work is {mean_work:g} cpu-seconds "
            f"over {len(library.entries)} workflow(s): their task runtimes x cpus sum to zero); "
            "use workflows whose tasks have recorded runtimes"
        )
    rate = load * cluster.total_cpus / mean_work
    picks = rng.integers(0, len(library.entries), size=num_jobs)
    gaps = rng.exponential(1.0 / rate, size=num_jobs)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    jobs = tuple(make_job(library.entries[int(k)], i, float(arrivals[i]), rng, noise, time_scale)
                 for i, k in enumerate(picks))
    return _with_failures(Workload(jobs, {"kind": "poisson", "load": load, "num_jobs": num_jobs, "seed": seed,
                                          "noise": noise, "rate": rate}), failures)


def replay_workload(entries: Sequence[TraceEntry], arrivals: Sequence[float], seed: int = 0,
                    noise: float = 0.3, time_scale: float = 1.0, failures: FailureModel | None = None) -> Workload:
    """Given workflows arriving at given times (a replayed arrival list)."""
    if len(entries) != len(arrivals):
        raise SimulationError(f"{len(entries)} workflows but {len(arrivals)} arrival times")
    if any(a < 0 for a in arrivals):
        raise SimulationError("arrival times must be >= 0")
    rng = np.random.default_rng(seed)
    jobs = tuple(make_job(e, i, float(a), rng, noise, time_scale) for i, (e, a) in enumerate(zip(entries, arrivals)))
    return _with_failures(Workload(jobs, {"kind": "replay", "seed": seed, "noise": noise}), failures)

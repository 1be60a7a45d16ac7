"""Workloads for the simulator: jobs (workflow DAGs with actual and predicted task durations) arriving over time,
sampled from real traces (Poisson arrivals scaled to a target load) or replayed from an arrival list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
    """One workflow instance in a simulated workload."""

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
    )


def single_workload(entry: TraceEntry, seed: int = 0, noise: float = 0.3, time_scale: float = 1.0) -> Workload:
    """One workflow arriving at time 0 (makespan experiments)."""
    rng = np.random.default_rng(seed)
    return Workload((make_job(entry, 0, 0.0, rng, noise, time_scale),),
                    {"kind": "single", "workflow": entry.name, "seed": seed, "noise": noise})


def poisson_workload(library: TraceLibrary, cluster: Cluster, load: float, num_jobs: int, seed: int = 0,
                     noise: float = 0.3, time_scale: float = 1.0) -> Workload:
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
    return Workload(jobs, {"kind": "poisson", "load": load, "num_jobs": num_jobs, "seed": seed,
                           "noise": noise, "rate": rate})


def replay_workload(entries: Sequence[TraceEntry], arrivals: Sequence[float], seed: int = 0,
                    noise: float = 0.3, time_scale: float = 1.0) -> Workload:
    """Given workflows arriving at given times (a replayed arrival list)."""
    if len(entries) != len(arrivals):
        raise SimulationError(f"{len(entries)} workflows but {len(arrivals)} arrival times")
    if any(a < 0 for a in arrivals):
        raise SimulationError("arrival times must be >= 0")
    rng = np.random.default_rng(seed)
    jobs = tuple(make_job(e, i, float(a), rng, noise, time_scale) for i, (e, a) in enumerate(zip(entries, arrivals)))
    return Workload(jobs, {"kind": "replay", "seed": seed, "noise": noise})

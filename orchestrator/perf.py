"""Speed benchmarks of the pure core: DAG analysis on large workflows and simulator throughput per policy."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

from .dag import analyse, dag_arrays
from .model import Workflow


def random_layered_workflow(num_tasks: int, width: int = 100, fan_in: int = 3, seed: int = 0,
                            duration: float | None = None, **task_fields) -> Workflow:
    """`width` tasks per level, each depending on `fan_in` random tasks of the level before (file order is
    topological). Durations uniform in [1, 100) s unless `duration` is given; `task_fields` go on every task."""
    rng = random.Random(seed)
    tasks = []
    for i in range(num_tasks):
        level = i // width
        deps = []
        if level:
            lo, hi = (level - 1) * width, level * width
            deps = sorted(rng.sample(range(lo, hi), min(fan_in, hi - lo)))
        tasks.append({"id": f"t{i}", "depends_on": [f"t{d}" for d in deps],
                      "duration": duration if duration is not None else rng.uniform(1, 100), **task_fields})
    return Workflow(name=f"layered-{num_tasks}", tasks=tasks)


@dataclass
class DagTiming:
    tasks: int
    edges: int
    levels: int
    build_arrays_ms: float
    analyse_ms: float
    analyse_warm_ms: float


def time_dag_analysis(sizes=(1_000, 10_000, 50_000), repeats: int = 3) -> list[DagTiming]:
    out = []
    for n in sizes:
        wf = random_layered_workflow(n)
        best_build = best_cold = best_warm = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            dag = dag_arrays(wf)
            t1 = time.perf_counter()
            a = analyse(dag)  # first analysis also derives the level structure
            t2 = time.perf_counter()
            analyse(dag)  # later analyses (new durations) reuse it
            t3 = time.perf_counter()
            best_build, best_cold, best_warm = min(best_build, t1 - t0), min(best_cold, t2 - t1), min(best_warm, t3 - t2)
        out.append(DagTiming(n, int(dag.src.size), a.num_levels, 1e3 * best_build, 1e3 * best_cold, 1e3 * best_warm))
    return out


@dataclass
class SimThroughput:
    policy: str
    scenario: str
    tasks: int
    seconds: float
    completions_per_s: float


def time_simulator(policies, library, repeats: int = 3, jobs: int = 60, nodes: int = 4, cpus: int = 16,
                   load: float = 0.8) -> list[SimThroughput]:
    """Simulated task completions per second of CPU time (one core), best of `repeats`, per policy and scenario."""
    from .scheduling import get_policy
    from .sim import Cluster, poisson_workload, simulate, single_workload

    cluster = Cluster.homogeneous(nodes, cpus=cpus, memory_gib=64)
    online = poisson_workload(library, cluster, load, jobs, seed=1)
    biggest = max(library.entries, key=lambda e: e.dag.n)
    single = single_workload(biggest, seed=1)
    out = []
    for name in policies:
        for scenario, wl in (("online", online), (f"single:{biggest.name}", single)):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.process_time()
                simulate(wl, cluster, get_policy(name), seed=1, record=False)
                best = min(best, time.process_time() - t0)
            out.append(SimThroughput(name, scenario, wl.num_tasks, best, wl.num_tasks / best))
    return out


def rows(items) -> list[dict]:
    return [asdict(x) for x in items]

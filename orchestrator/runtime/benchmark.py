"""Runtime benchmarks: orchestration overhead against raw Ray on a 1,000-task DAG, scheduling-decision latency
with many ready tasks, and a real trace replayed on Ray against the simulator's prediction for it."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..model import Workflow
from ..scheduling.interface import NodeView


def layered_dag(num_tasks: int = 1000, width: int = 50, task_seconds: float = 0.01, fan_in: int = 2,
                seed: int = 0) -> Workflow:
    """A layered random DAG of tasks that each sleep `task_seconds` (see `random_layered_workflow`)."""
    from ..perf import random_layered_workflow

    return random_layered_workflow(num_tasks, width, fan_in, seed, duration=task_seconds,
                                   entrypoint="orchestrator.runtime.builtins:sleep", args=[task_seconds],
                                   resources={"cpus": 1})


@dataclass
class OverheadResult:
    tasks: int
    slots: int
    task_seconds: float
    ideal_s: float
    raw_ray_s: float
    orchestrated_s: float
    ratio: float
    raw_tasks_per_s: float
    orchestrated_tasks_per_s: float
    raw_median_s: float
    orchestrated_median_s: float
    ratio_of_medians: float
    events_recorded: int
    events_expected: int
    executions_recorded: int
    store: str


def _raw_ray(wf: Workflow) -> float:
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def step(seconds, *parents):
        time.sleep(seconds)

    start = time.perf_counter()
    refs: dict[str, object] = {}
    for t in wf.tasks:  # the file order is topological
        refs[t.id] = step.remote(t.args[0], *[refs[d] for d in t.depends_on])
    ray.get(list(refs.values()))
    return time.perf_counter() - start


def measure_overhead(num_tasks: int = 1000, task_seconds: float = 0.01, slots: int = 8, repeats: int = 5,
                     db_url: str | None = None, data_dir: str | None = None, seed: int = 0) -> OverheadResult:
    """Run the same DAG on raw Ray (object-ref dependencies) and through the orchestrator, alternating, in one
    Ray instance; report the best of `repeats` for each (both warm), and the medians."""
    import ray

    from .client import wait_for
    from .config import RuntimeConfig

    wf = layered_dag(num_tasks, task_seconds=task_seconds, seed=seed)
    data_dir = data_dir or tempfile.mkdtemp(prefix="orch-bench-")
    config = RuntimeConfig(db_url=db_url, data_dir=data_dir, default_policy="fifo", redis_url=None,
                           sample_every_s=3600)
    from .actor import OrchestratorActor

    handle = OrchestratorActor.options(num_cpus=0).remote(config.model_dump())
    info = ray.get(handle.ping.remote())
    import os

    if os.environ.get("ORCHESTRATOR_PROFILE_ACTOR"):  # e.g. py-spy: record the actor while the benchmark runs
        import subprocess

        subprocess.Popen(os.environ["ORCHESTRATOR_PROFILE_ACTOR"].format(pid=info["pid"]), shell=True)
    # Warm both paths: the workers start, and import the executor once each.
    warm = layered_dag(4 * slots, width=slots, task_seconds=task_seconds)
    _raw_ray(warm)
    wait_for(handle, [ray.get(handle.submit.remote(warm))])
    raw_times, orch_times, run_ids = [], [], []
    for _ in range(repeats):
        raw_times.append(_raw_ray(wf))
        start = time.perf_counter()
        run_id = ray.get(handle.submit.remote(wf))
        final = wait_for(handle, [run_id])[run_id]  # blocks in the actor, like ray.get for raw Ray
        orch_times.append(time.perf_counter() - start)
        if final["status"] != "succeeded":
            raise RuntimeError(f"benchmark run {run_id} ended {final['status']}")
        run_ids.append(run_id)
    loop = ray.get(handle.stats.remote())["loop_seconds"]
    ray.get(handle.shutdown.remote())
    ray.kill(handle)
    from ..store import Store

    print("actor loop seconds:", {k: round(v, 3) for k, v in loop.items()})
    store = Store.open(db_url, data_dir=data_dir)
    events = sum(len(store.events(r, limit=10 * num_tasks + 100)) for r in run_ids)
    executions = sum(len(store.executions(r)) for r in run_ids)
    # Per run: submitted, started and succeeded for the workflow; ready, started, succeeded per task.
    expected = repeats * (3 + 3 * num_tasks)
    store.close()
    raw, orch = min(raw_times), min(orch_times)
    raw_med, orch_med = float(np.median(raw_times)), float(np.median(orch_times))
    print("raw Ray runs (s):", [round(t, 3) for t in raw_times], "orchestrated runs (s):",
          [round(t, 3) for t in orch_times])
    return OverheadResult(num_tasks, slots, task_seconds, num_tasks * task_seconds / slots, raw, orch,
                          orch / raw, num_tasks / raw, num_tasks / orch, raw_med, orch_med, orch_med / raw_med,
                          events, expected, executions,
                          "postgresql" if db_url and db_url.startswith("postgresql") else "sqlite")


@dataclass
class ManyRunsResult:
    runs: int
    tasks_per_run: int
    slots: int
    task_seconds: float
    ideal_s: float
    raw_ray_median_s: float
    submit_many_median_s: float  # one `submit_many` call for every run
    submit_each_median_s: float  # one concurrent `submit` call per run
    ratio_submit_many: float  # of medians, to raw Ray
    ratio_submit_each: float
    events_recorded: int
    events_expected: int
    store: str


def _raw_ray_many(workflows: list[Workflow]) -> float:
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def step(seconds, *parents):
        time.sleep(seconds)

    start = time.perf_counter()
    refs = []
    for wf in workflows:
        mine: dict[str, object] = {}
        for t in wf.tasks:
            mine[t.id] = step.remote(t.args[0], *[mine[d] for d in t.depends_on])
        refs.extend(mine.values())
    ray.get(refs)
    return time.perf_counter() - start


def measure_many_runs(runs: int = 200, tasks_per_run: int = 5, task_seconds: float = 0.01, slots: int = 8,
                      repeats: int = 3, db_url: str | None = None, data_dir: str | None = None) -> ManyRunsResult:
    """Many small workflows at once (by default 200 chains of 5 tasks of 10 ms: the same 1,000 tasks as the
    overhead DAG, with a run's admission, start and end 200 times): raw Ray with object-ref dependencies, the
    orchestrator with one `submit_many` call, and with one concurrent `submit` call per run; medians."""
    import ray

    from .actor import OrchestratorActor
    from .client import wait_for
    from .config import RuntimeConfig

    workflows = [layered_dag(tasks_per_run, width=1, task_seconds=task_seconds, seed=k) for k in range(runs)]
    data_dir = data_dir or tempfile.mkdtemp(prefix="orch-bench-many-")
    config = RuntimeConfig(db_url=db_url, data_dir=data_dir, default_policy="fifo", redis_url=None,
                           sample_every_s=3600)
    handle = OrchestratorActor.options(num_cpus=0).remote(config.model_dump())
    ray.get(handle.ping.remote())
    _raw_ray_many(workflows[:2 * slots])  # warm both paths and both ways of submitting
    wait_for(handle, ray.get(handle.submit_many.remote(workflows[:slots])))
    wait_for(handle, ray.get([handle.submit.remote(wf) for wf in workflows[:slots]]))
    raw, many, each, run_ids = [], [], [], []
    for _ in range(repeats):
        raw.append(_raw_ray_many(workflows))
        for times, submit in ((many, lambda: ray.get(handle.submit_many.remote(workflows))),
                              (each, lambda: ray.get([handle.submit.remote(wf) for wf in workflows]))):
            start = time.perf_counter()
            ids = submit()
            final = wait_for(handle, ids)
            times.append(time.perf_counter() - start)
            failed = [r for r, p in final.items() if p["status"] != "succeeded"]
            if failed:
                raise RuntimeError(f"benchmark runs ended unsuccessfully: {failed[:3]}")
            run_ids.extend(ids)
    ray.get(handle.shutdown.remote())
    ray.kill(handle)
    from ..store import Store

    store = Store.open(db_url, data_dir=data_dir)
    events = sum(len(store.events(r, limit=10 * tasks_per_run + 100)) for r in run_ids)
    store.close()
    r, m, e = (float(np.median(x)) for x in (raw, many, each))
    return ManyRunsResult(runs, tasks_per_run, slots, task_seconds, runs * tasks_per_run * task_seconds / slots,
                          r, m, e, m / r, e / r, events, len(run_ids) * (3 + 3 * tasks_per_run),
                          "postgresql" if db_url and db_url.startswith("postgresql") else "sqlite")


@dataclass
class LatencyResult:
    policy: str
    ready_tasks: int
    decisions: int
    p50_us: float
    p99_us: float
    mean_us: float


def measure_decision_latency(policies: list[str], ready: int = 1000, decisions: int = 1000,
                             nodes: int = 4) -> list[LatencyResult]:
    """Time the runtime's scheduling step (`RuntimeState.schedule`, as the actor calls it) when one slot frees
    and `ready`..`ready+decisions` tasks wait. No Ray needed: this is the in-actor code path."""
    from .state import RuntimeState

    out = []
    rng = np.random.default_rng(0)
    total = ready + decisions
    wf = Workflow(name="latency", tasks=[{"id": f"t{i}", "duration": float(rng.uniform(1, 100)),
                                          "resources": {"cpus": 1, "memory": int(rng.integers(1, 4)) * 2**30}}
                                         for i in range(total)])
    for name in policies:
        view = NodeView([f"n{i}" for i in range(nodes)], [8.0] * nodes, [64.0 * 2**30] * nodes, [0.0] * nodes)
        state = RuntimeState(view, default_policy=name)
        run = state.admit("bench", wf, 0.0, policy=name)
        node_of = {d.task.task: d.node for _, d in state.schedule(0.0)}  # fill the cluster
        running = list(node_of)
        samples = []
        for k in range(decisions):
            if not running:
                break
            victim = running.pop(0)
            state.succeeded(run, victim, node_of.pop(victim), None, float(k))  # one slot frees
            t0 = time.perf_counter()
            made = state.schedule(float(k))
            samples.append((time.perf_counter() - t0) * 1e6)
            for _, d in made:
                node_of[d.task.task] = d.node
                running.append(d.task.task)
            state.take_changes()
        arr = np.array(samples)
        out.append(LatencyResult(name, ready, len(samples), float(np.percentile(arr, 50)),
                                 float(np.percentile(arr, 99)), float(arr.mean())))
    return out


@dataclass
class ReplayResult:
    trace: str
    tasks: int
    policy: str
    time_scale: float
    slots: int
    ray_makespan_s: float
    simulated_makespan_s: float
    error: float  # (ray - sim) / sim
    dispatch_latency_ms_p50: float  # decision recorded -> the task starts on its worker
    dispatch_latency_ms_p95: float


def measure_replay(trace: Path, time_scale: float, policy: str = "srpt-cp", db_url: str | None = None,
                   data_dir: str | None = None) -> ReplayResult:
    """Replay a WfCommons trace on Ray (each task sleeps runtime x time_scale) and compare its makespan with the
    simulator's for the same policy, cluster and durations."""
    import ray

    from ..loaders import load_workflow
    from ..scheduling import get_policy
    from ..sim import Cluster, NodeSpec, TraceLibrary, simulate, single_workload
    from .actor import OrchestratorActor
    from .client import wait_for
    from .config import RuntimeConfig

    wf = load_workflow(trace)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cluster = Cluster(tuple(NodeSpec(n["NodeID"][:8], n["Resources"].get("CPU", 0.0),
                                     n["Resources"].get("memory", 0.0)) for n in nodes))
    entry = TraceLibrary.from_workflows([wf]).entries[0]
    sim = simulate(single_workload(entry, seed=0, noise=0.0, time_scale=time_scale), cluster, get_policy(policy))
    config = RuntimeConfig(db_url=db_url, data_dir=data_dir or tempfile.mkdtemp(prefix="orch-replay-"),
                           default_policy=policy, redis_url=None, sample_every_s=3600)
    handle = OrchestratorActor.options(num_cpus=0).remote(config.model_dump())
    ray.get(handle.ping.remote())
    slots = int(cluster.total_cpus)
    _raw_ray(layered_dag(2 * slots, width=slots, task_seconds=0.2))  # start the workers: compare warm with warm
    run_id = ray.get(handle.submit.remote(wf, policy, None, time_scale))
    wait_for(handle, [run_id], poll=0.01)
    from ..store import Store

    ray.get(handle.shutdown.remote())
    ray.kill(handle)
    store = Store.open(db_url, data_dir=config.data_dir)
    execs = store.executions(run_id)
    decided = {t.task_id: t.started_at for t in store.get_tasks(run_id)}
    store.close()
    makespan = max(e.finished_at for e in execs) - min(e.started_at for e in execs)
    latency = np.array([1e3 * (e.started_at - decided[e.task_id]) for e in execs])
    return ReplayResult(trace.name, len(wf.tasks), policy, time_scale, int(cluster.total_cpus), makespan,
                        sim.makespan, (makespan - sim.makespan) / sim.makespan,
                        float(np.percentile(latency, 50)), float(np.percentile(latency, 95)))


def as_rows(results) -> list[dict]:
    return [asdict(r) for r in results]

"""What-if analysis of one workflow on one cluster, before it runs or while it runs: the completion time as a
distribution (with the cluster's contention), the bottlenecks with their reasons in words, and the parallel plan
(stages, width over time, the cluster size beyond which more nodes stop helping, the size a deadline needs).

Everything is measured in the simulator's list scheduling (`montecarlo.ListScheduler`) on sampled durations. To
answer a 1,000-task workflow in under 200 ms the work follows a time budget: one traced Monte Carlo gives the
distribution, each task's criticality and wait; tasks are screened by criticality x mean duration (the first-order
drop of the makespan when they run faster), and the drop is measured exactly, with common random numbers, only
for the top candidates and for whole categories, in one parallel call of `_variant_makespans`. Node counts are
searched (not swept one by one) on the same draws. `budget=None` gives fixed sample counts instead (deterministic
for a seed); with a budget the counts are rounded to powers of two, so that they rarely change between runs.
"""

from __future__ import annotations

import copy
import importlib
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from ..dag import DagArrays, analyse, dag_arrays
from ..errors import OrchestratorError
from ..model import Workflow, format_bytes
from ..scheduling.interface import EPS
from ..sim.cluster import Cluster, NodeSpec
from .durations import AnalysisInputError, DurationHistory, TaskDurations, durations_for
from .groundtruth import SPEEDUP, tight_cluster
from .montecarlo import SUPPORTED_POLICIES, ListScheduler, simulate_one

DEFAULT_BUDGET_S = 0.17  # wall time of one analysis (compile excluded); the Monte Carlo adapts its samples to it
MAX_ANALYSIS_TASKS = 100_000  # larger workflows are refused (split them); 50,000 tasks answer in seconds
TOP_K = 8  # tasks whose gain is measured exactly (the rest: screened estimate)
TOP_CATEGORIES = 6
_CALL_OVERHEAD = 0.004  # seconds a parallel kernel call costs besides its runs (thread wake-up), budgeted per call
ENOUGH_NODES_GAIN = 0.02  # more nodes "no longer help" when the expected makespan is within 2% of unlimited nodes
MAX_SWEEP_NODES = 1024
DONE, RUNNING, PENDING = "done", "running", "pending"
_STATUS_WORDS = {"done": DONE, "succeeded": DONE, "skipped": DONE, "cancelled": DONE, "failed": DONE,
                 "running": RUNNING, "pending": PENDING, "ready": PENDING, "retrying": PENDING}


# ---------------------------------------------------------------------------------------------- compiled kernels

@njit(parallel=True, cache=True)
def _variant_makespans(durs, vptr, vcols, vfac, vclus, cptr, cap_c, cap_m, cap_g, rank, indeg, ptr, kids, cpus,
                       mem, gpus, flat, best, scan_limit):
    """Makespans [variant, sample]: variant v multiplies the durations of columns vcols[vptr[v]:vptr[v+1]] by vfac
    and runs on cluster vclus[v] (nodes cptr[c]:cptr[c+1] of the cap arrays); every variant sees the same draws."""
    s_count, n = durs.shape
    v_count = vptr.shape[0] - 1
    out = np.empty((v_count, s_count), np.float64)
    for job in prange(v_count * s_count):
        v = job // s_count
        s = job - v * s_count
        d = durs[s].copy()
        for e in range(vptr[v], vptr[v + 1]):
            d[vcols[e]] *= vfac[e]
        c = vclus[v]
        lo = cptr[c]
        hi = cptr[c + 1]
        start = np.empty(n, np.float64)
        end = np.empty(n, np.float64)
        cause = np.empty(n, np.int64)
        out[v, s] = simulate_one(d, rank, indeg, ptr, kids, cpus, mem, gpus, cap_c[lo:hi], cap_m[lo:hi], cap_g[lo:hi],
                              flat, best, scan_limit, start, end, cause, False)
    return out


@njit(parallel=True, cache=True)
def _longest_paths(durs, order, pptr, parents):
    """Makespan with unlimited resources (the longest path) of each sample."""
    s_count, n = durs.shape
    out = np.empty(s_count, np.float64)
    for s in prange(s_count):
        fin = np.empty(n, np.float64)
        top = 0.0
        for j in range(n):
            t = order[j]
            r = 0.0
            for e in range(pptr[t], pptr[t + 1]):
                if fin[parents[e]] > r:
                    r = fin[parents[e]]
            fin[t] = r + durs[s, t]
            if fin[t] > top:
                top = fin[t]
        out[s] = top
    return out


_WARM = {"done": False, "seconds": 0.0}


def warm_up() -> float:
    """Load (or compile, the first time on a machine) every kernel the analysis calls, on a tiny workflow. Returns
    the seconds it took in this process; later calls return 0."""
    if _WARM["done"]:
        return 0.0
    t0 = time.perf_counter()
    wf = Workflow(name="warm-up", tasks=[{"id": "a", "duration": 1.0}, {"id": "b", "duration": 2.0},
                                         {"id": "c", "duration": 1.0, "depends_on": ["a", "b"]}])
    dag = dag_arrays(wf)
    cluster = Cluster.homogeneous(1, cpus=1, memory_gib=1)
    for policy in SUPPORTED_POLICIES:
        ls = ListScheduler(dag, cluster, dag.duration, policy)
        draws = np.tile(dag.duration, (2, 1))
        ls.trace(draws)
        ls.makespans(draws)
        ls.run(draws[0])
        _run_variants(ls, draws, [[]], [cluster])
    _longest_paths(np.tile(dag.duration, (2, 1)), analyse(dag).order, dag.parents_ptr, dag.parents)
    _WARM.update(done=True, seconds=time.perf_counter() - t0)
    return _WARM["seconds"]


def _run_variants(ls: ListScheduler, draws: np.ndarray, modifications: list[list[tuple[int, float]]],
                  clusters: list[Cluster], cluster_of: list[int] | None = None) -> np.ndarray:
    """Makespans [variant, sample] of `ls`'s workflow for each variant (a list of (task column, duration factor)),
    on `clusters[cluster_of[v]]` (default: the first), over the same draws."""
    vptr = np.zeros(len(modifications) + 1, dtype=np.int64)
    vptr[1:] = np.cumsum([len(m) for m in modifications])
    vcols = np.array([c for m in modifications for c, _ in m], dtype=np.int64)
    vfac = np.array([f for m in modifications for _, f in m], dtype=np.float64)
    vclus = np.zeros(len(modifications), dtype=np.int64) if cluster_of is None else np.asarray(cluster_of, np.int64)
    caps = [_caps(c) for c in clusters]
    cptr = np.zeros(len(caps) + 1, dtype=np.int64)
    cptr[1:] = np.cumsum([len(c[0]) for c in caps])
    cap_c, cap_m, cap_g = (np.concatenate([c[i] for c in caps]) for i in range(3))
    d = ls.dag
    return _variant_makespans(np.ascontiguousarray(draws, dtype=np.float64), vptr, vcols, vfac, vclus, cptr, cap_c,
                              cap_m, cap_g, ls.rank, d.in_degree.astype(np.int64), d.children_ptr, d.children,
                              d.cpus, d.memory, d.gpus, ls.flat, ls.best, ls.scan_limit)


def _caps(cluster: Cluster) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nodes = cluster.nodes
    return (np.array([x.cpus for x in nodes], dtype=np.float64), np.array([x.memory for x in nodes], dtype=np.float64),
            np.array([x.gpus for x in nodes], dtype=np.float64))


# ------------------------------------------------------------------------------------------------ the problem

@dataclass(frozen=True)
class Problem:
    """What is left to run of a workflow, as arrays: the tasks not done (`keep`: their positions in the workflow),
    their duration distributions, which of them already run and for how long, the cluster and the policy.

    Before a run every task is left and none runs. A running task's duration is drawn conditionally on exceeding
    what it has run, and only the remainder counts; it is placed first (the scheduler already placed it)."""

    workflow: Workflow
    dag: DagArrays
    keep: np.ndarray
    durations: TaskDurations
    running: np.ndarray  # bool per task left
    elapsed: np.ndarray  # seconds each running task has run (0 for the others)
    predicted: np.ndarray  # the mean remaining duration of each task left: what the policy ranks by
    cluster: Cluster
    policy: str
    done: int = 0
    all_durations: TaskDurations | None = None  # every task of the workflow (done ones too)
    all_state: np.ndarray | None = None  # done/running/pending per task of the workflow
    all_elapsed: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.dag.n

    def draws(self, samples: int, seed: int) -> np.ndarray:
        """`samples` x n remaining durations; the first k rows do not depend on `samples` (one stream per seed)."""
        z = self.durations.normals(samples, seed)
        out = self.durations.sample(samples, z=z)
        if self.running.any():
            cols = np.flatnonzero(self.running)
            out[:, cols] = _conditional_remaining(self.durations, cols, self.elapsed[cols], z[:, cols])
        return out


def _conditional_remaining(td: TaskDurations, cols: np.ndarray, elapsed: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Remaining duration D - e of a log-normal D conditioned on D > e, from standard normals z (inverse survival
    function in log space, so that a task far beyond its expected duration still gets a finite remainder)."""
    from scipy.special import log_ndtr, ndtri_exp

    mu, sigma, mean = td.mu[cols], td.sigma[cols], td.mean[cols]
    out = np.zeros_like(z)
    for j in range(len(cols)):
        if mean[j] <= 0:
            continue
        if sigma[j] <= 0:
            out[:, j] = max(mean[j] - elapsed[j], 0.0)
            continue
        a = (np.log(max(elapsed[j], 1e-300)) - mu[j]) / sigma[j]
        log_survival = log_ndtr(-a) + log_ndtr(-z[:, j])  # S(D) = S(e) * (1 - Phi(z))
        b = -ndtri_exp(np.minimum(log_survival, -1e-300))
        out[:, j] = np.maximum(np.exp(mu[j] + sigma[j] * b) - elapsed[j], 0.0)
    return out


def _conditional_mean_remaining(td: TaskDurations, cols: np.ndarray, elapsed: np.ndarray) -> np.ndarray:
    """E[D - e | D > e] of each log-normal, in closed form (log space)."""
    from scipy.special import log_ndtr

    mu, sigma, mean = td.mu[cols], td.sigma[cols], td.mean[cols]
    out = np.zeros(len(cols))
    for j in range(len(cols)):
        if mean[j] <= 0:
            continue
        if sigma[j] <= 0 or elapsed[j] <= 0:
            out[j] = max(mean[j] - elapsed[j], 0.0)
            continue
        a = (np.log(elapsed[j]) - mu[j]) / sigma[j]
        log_mean = mu[j] + sigma[j] ** 2 / 2 + log_ndtr(sigma[j] - a) - log_ndtr(-a)
        out[j] = max(math.exp(min(log_mean, 700.0)) - elapsed[j], 0.0)
    return out


def sub_dag(dag: DagArrays, keep: np.ndarray, priority: np.ndarray | None = None) -> DagArrays:
    """The tasks `keep` (indices, ascending) of `dag` and the edges between them: a parent outside `keep` is done,
    its edge satisfied. `priority` (per kept task) replaces theirs."""
    keep = np.asarray(keep, dtype=np.int64)
    new_of = np.full(dag.n, -1, dtype=np.int64)
    new_of[keep] = np.arange(len(keep))
    mask = (new_of[dag.src] >= 0) & (new_of[dag.dst] >= 0)
    src, dst = new_of[dag.src[mask]], new_of[dag.dst[mask]]
    ids = tuple(dag.ids[i] for i in keep)
    return build_dag(ids, src, dst, dag.duration[keep], dag.cpus[keep], dag.memory[keep], dag.gpus[keep],
                     dag.priority[keep] if priority is None else priority)


def build_dag(ids: tuple[str, ...], src: np.ndarray, dst: np.ndarray, duration: np.ndarray, cpus: np.ndarray,
              memory: np.ndarray, gpus: np.ndarray, priority: np.ndarray) -> DagArrays:
    """A DagArrays from its edge list and per-task arrays (no custom resources, default retries)."""
    n = len(ids)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)

    def csr(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(keys, kind="stable")
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
        return ptr, values[order].astype(np.int64)

    children_ptr, children = csr(src, dst)
    parents_ptr, parents = csr(dst, src)
    return DagArrays(ids=ids, src=src, dst=dst, children_ptr=children_ptr, children=children,
                     parents_ptr=parents_ptr, parents=parents, duration=np.asarray(duration, dtype=np.float64),
                     cpus=np.asarray(cpus, dtype=np.float64), memory=np.asarray(memory, dtype=np.float64),
                     gpus=np.asarray(gpus, dtype=np.float64), index={t: i for i, t in enumerate(ids)},
                     priority=np.asarray(priority, dtype=np.int64))


def normalise_status(workflow: Workflow, status: Mapping[str, str] | None,
                     elapsed: Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per task of the workflow: its state (done/running/pending) and seconds run so far. Statuses may be the
    store's (succeeded, failed, cancelled and skipped count as done; ready and retrying as pending)."""
    n = len(workflow.tasks)
    state = np.full(n, PENDING, dtype=object)
    ran = np.zeros(n)
    if not status:
        return state, ran
    index = {t.id: i for i, t in enumerate(workflow.tasks)}
    unknown = [t for t in status if t not in index]
    if unknown:
        raise AnalysisInputError(f"status names {len(unknown)} task(s) that workflow '{workflow.name}' does not have "
                                 f"(e.g. '{unknown[0]}')")
    for tid, s in status.items():
        word = _STATUS_WORDS.get(str(getattr(s, "value", s)).lower())
        if word is None:
            raise AnalysisInputError(f"task '{tid}' has status {s!r}: give done, running or pending "
                                     "(or a task status of the store)")
        state[index[tid]] = word
    for tid, e in (elapsed or {}).items():
        if tid not in index:
            raise AnalysisInputError(f"elapsed names task '{tid}', which workflow '{workflow.name}' does not have")
        if not (isinstance(e, (int, float)) and math.isfinite(e) and e >= 0):
            raise AnalysisInputError(f"task '{tid}' has elapsed={e!r}: give the seconds it has run, >= 0")
        ran[index[tid]] = float(e)
    ran[state != RUNNING] = 0.0
    return state, ran


def build_problem(workflow: Workflow, cluster: Cluster | None = None, *, history: DurationHistory | None = None,
                  policy: str | None = None, status: Mapping[str, str] | None = None,
                  elapsed: Mapping[str, float] | None = None,
                  durations: TaskDurations | None = None) -> tuple[Problem, str]:
    """The problem to analyse and where its cluster came from. Raises AnalysisInputError naming the problem: too
    many tasks, no runtime known, a task no node can hold, an unsupported policy or custom resources."""
    n = len(workflow.tasks)
    if n > MAX_ANALYSIS_TASKS:
        raise AnalysisInputError(
            f"workflow '{workflow.name}' has {n:,} tasks; the analysis answers up to {MAX_ANALYSIS_TASKS:,} "
            "(50,000 take a few seconds): analyse its parts separately")
    policy = policy or workflow.policy or "srpt-cp"
    if policy not in SUPPORTED_POLICIES:
        raise AnalysisInputError(f"policy '{policy}': the analysis simulates {', '.join(SUPPORTED_POLICIES)}; "
                                 "pick one of them (--policy)")
    td = durations if durations is not None else durations_for(workflow, history)
    full = dag_arrays(workflow, td.mean)
    if full.custom is not None:
        first = next(t.id for t in workflow.tasks if t.resources.custom)
        raise AnalysisInputError(f"task '{first}' requests custom resources; the analysis does not model them "
                                 "(use `orchestrator simulate`-style runs of the event simulator instead)")
    source = "given"
    if cluster is None:
        cluster = tight_cluster(full, td.mean)
        source = "default"
    check_fits(full, cluster, workflow.name)
    state, ran_all = normalise_status(workflow, status, elapsed)
    keep = np.flatnonzero(state != DONE)
    running = state[keep] == RUNNING
    ran = ran_all[keep]
    sub_td = TaskDurations(td.mean[keep], td.cv[keep], tuple(td.source[i] for i in keep) if td.source else ())
    predicted = sub_td.mean.copy()
    if running.any():
        cols = np.flatnonzero(running)
        predicted[cols] = _conditional_mean_remaining(sub_td, cols, ran[cols])
    priority = full.priority[keep].copy()
    if running.any():  # already placed: they hold their room from the first instant
        priority[running] = (priority.max(initial=0) if len(priority) else 0) + 1
    dag = sub_dag(full, keep, priority) if len(keep) < n or running.any() else replace(full, duration=predicted)
    dag = replace(dag, duration=predicted)
    return Problem(workflow, dag, keep, sub_td, running, ran, predicted, cluster, policy, int(n - len(keep)), td,
                   state, ran_all), source


def check_fits(dag: DagArrays, cluster: Cluster, name: str) -> None:
    """Refuse a cluster on which some task fits on no node, naming the task, what it needs and the largest node."""
    if dag.n == 0:
        return
    cap_c, cap_m, cap_g = _caps(cluster)
    fits = ((dag.cpus[:, None] <= cap_c[None, :] + EPS) & (dag.memory[:, None] <= cap_m[None, :] + EPS)
            & (dag.gpus[:, None] <= cap_g[None, :] + EPS)).any(axis=1)
    if fits.all():
        return
    big = max(cluster.nodes, key=lambda x: (x.cpus, x.memory, x.gpus))
    biggest = f"{big.cpus:g} cpus / {format_bytes(big.memory)}" + (f" / {big.gpus:g} gpus" if big.gpus else "")
    if not fits.any():
        small = int(np.argmin(dag.cpus + dag.memory / 2**30 + dag.gpus))
        raise AnalysisInputError(
            f"the cluster is too small for any task of workflow '{name}': its largest node has {biggest}, and even "
            f"the smallest task '{dag.ids[small]}' needs {_needs(dag, small)}; give bigger nodes (--cluster, "
            "--node-cpus, --node-memory)")
    bad = np.flatnonzero(~fits)
    named = ", ".join(f"'{dag.ids[i]}' ({_needs(dag, i)})" for i in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    raise AnalysisInputError(
        f"{len(bad)} task(s) of workflow '{name}' are bigger than every node: {named}{more}; the largest node has "
        f"{biggest}. Give bigger nodes (--cluster, --node-cpus, --node-memory) or lower the requests")


def _needs(dag: DagArrays, i: int) -> str:
    gpu = f" / {dag.gpus[i]:g} gpus" if dag.gpus[i] else ""
    return f"{dag.cpus[i]:g} cpus / {format_bytes(float(dag.memory[i]))}{gpu}"


def describe_cluster(cluster: Cluster) -> str:
    """'5 x (4 cpus, 16 GiB)' or a sum of such groups."""
    groups: dict[tuple, int] = defaultdict(int)
    for x in cluster.nodes:
        groups[(x.cpus, x.memory, x.gpus)] += 1
    parts = []
    for (c, m, g), k in sorted(groups.items(), key=lambda kv: -kv[1]):
        gpu = f", {g:g} gpus" if g else ""
        parts.append(f"{k} x ({c:g} cpus, {format_bytes(m)}{gpu})")
    return " + ".join(parts)


def resized(cluster: Cluster, nodes: int) -> Cluster:
    """The cluster with `nodes` nodes: the smallest nodes go first when shrinking; growing adds copies of the
    largest node."""
    ordered = sorted(cluster.nodes, key=lambda x: (-x.cpus, -x.memory, -x.gpus))
    if nodes <= len(ordered):
        return Cluster(tuple(ordered[:nodes]))
    big = ordered[0]
    extra = tuple(NodeSpec(f"added-{i}", big.cpus, big.memory, big.gpus, big.node_type)
                  for i in range(nodes - len(ordered)))
    return Cluster(tuple(ordered) + extra)


# ------------------------------------------------------------------------------------------------ the report

@dataclass
class Distribution:
    """Completion time (remaining time from now, for a running workflow), seconds."""

    mean: float
    p50: float
    p90: float
    std: float
    stderr: float  # of the mean
    samples: int
    critical_path: float  # unlimited resources, mean durations: the reference floor
    critical_path_tasks: list[str]
    unlimited_mean: float  # expected longest path with unlimited resources (sampled durations)
    unlimited_p90: float


@dataclass
class Bottleneck:
    """A task or a category, with the drop of the expected makespan if it ran 30% faster."""

    kind: str  # "task" | "category"
    name: str
    gain: float  # seconds of expected makespan saved
    gain_pct: float
    stderr: float | None  # of the gain (None: a screened estimate, not measured)
    measured: bool
    criticality: float  # share of samples on the schedule's critical chain (a category: its share of that chain)
    wait: float  # mean seconds between ready and start
    mean_duration: float
    tasks: int
    reasons: list[str]


@dataclass
class NodePoint:
    nodes: int
    mean: float
    p90: float


@dataclass
class ParallelPlan:
    stages: int  # levels of the DAG
    width_per_stage: list[int]
    peak_width: int  # most tasks at once in a run on mean durations on the cluster
    average_parallelism: float  # total work / critical path
    width_over_time: list[list[float]]  # [time, tasks running, cpus in use] from a run on mean durations
    mean_run_makespan: float
    nodes_curve: list[NodePoint]  # expected makespan and P90 per node count tried
    curve_samples: int  # draws behind each point of the curve (the same for every point)
    node_type: str  # what a node added is
    enough_nodes: int | None  # beyond it more nodes gain < 2%
    enough_note: str
    deadline: float | None = None
    deadline_nodes: int | None = None
    deadline_note: str | None = None


@dataclass
class AnalysisReport:
    workflow: str
    tasks: int
    tasks_left: int
    cluster: str
    cluster_source: str  # "given" | "default" (the tight cluster) | "store"
    nodes: int
    policy: str
    method: str
    method_note: str
    makespan: Distribution
    task_bottlenecks: list[Bottleneck]
    category_bottlenecks: list[Bottleneck]
    saturation: str | None
    plan: ParallelPlan
    live: dict[str, Any] | None
    components: int
    notes: list[str]
    seconds: float  # wall time of the analysis, compile excluded
    compile_seconds: float  # first-call load/compile of the kernels in this process (0 when warm)
    timings: dict[str, float]
    seed: int
    task_ids: tuple[str, ...] = field(default=(), repr=False)  # the tasks left, in `task_gain` order
    task_gain: np.ndarray | None = field(default=None, repr=False)  # per task left: measured, else estimated
    task_gain_measured: np.ndarray | None = field(default=None, repr=False)
    criticality: np.ndarray | None = field(default=None, repr=False)
    wait: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, per_task: bool = False) -> dict[str, Any]:
        """JSON-safe; `per_task` adds every task's gain, criticality and wait."""
        skip = {"task_ids", "task_gain", "task_gain_measured", "criticality", "wait"}
        out = {k: _jsonable(v) for k, v in self.__dict__.items() if k not in skip}
        if per_task and self.task_gain is not None:
            out["per_task"] = [{"task": t, "gain": _jsonable(g), "measured": bool(m), "criticality": _jsonable(c),
                                "wait": _jsonable(w)} for t, g, m, c, w in
                               zip(self.task_ids, self.task_gain, self.task_gain_measured, self.criticality,
                                   self.wait)]
        return out


def _jsonable(v: Any) -> Any:
    if is_dataclass(v):
        return {k: _jsonable(x) for k, x in asdict(v).items()}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def seconds_text(x: float) -> str:
    """340 s, 1,234 s, 2.5 s, 0.012 s."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f} s"
    if abs(x) >= 1:
        return f"{x:.3g} s"
    return f"{x:.2g} s"


# ------------------------------------------------------------------------------------------------ analysis

@dataclass
class _Budget:
    """How many samples each part gets: fixed counts without a time budget, else sized from the measured cost of
    one sample so that the whole analysis fits the budget (counts rounded down to powers of two)."""

    deadline: float | None  # perf_counter time by which to be done (None: no budget)
    samples: int
    cost: float = 0.0  # seconds per sample (parallel), measured

    def left(self) -> float:
        return max(self.deadline - time.perf_counter(), 0.0) if self.deadline is not None else math.inf

    def fit(self, share: float) -> float:
        """How many single runs fit in `share` of the time left, one kernel call (inf without a budget)."""
        if self.deadline is None or self.cost <= 0:
            return math.inf
        return max(share * self.left() - _CALL_OVERHEAD, 0.0) / self.cost

    def count(self, share: float, per: int, floor: int, cap: int) -> int:
        """Samples for `per` variants given `share` of the time left: at least `floor`, at most `cap`."""
        cap = max(1, min(cap, self.samples))
        fit = self.fit(share) / max(per, 1)
        if not math.isfinite(fit):
            return cap
        return int(min(cap, max(min(floor, cap), _pow2_floor(fit))))


def _pow2_floor(x: float) -> int:
    return 1 << int(math.floor(math.log2(x))) if x >= 1 else 1


def analyze(workflow: Workflow, cluster: Cluster | None = None, *, history: DurationHistory | None = None,
            policy: str | None = None, samples: int = 2000, method: str = "mc", deadline: float | None = None,
            status: Mapping[str, str] | None = None, elapsed: Mapping[str, float] | None = None, seed: int = 0,
            budget: float | None = DEFAULT_BUDGET_S, top_k: int = TOP_K,
            durations: TaskDurations | None = None) -> AnalysisReport:
    """Analyse `workflow` on `cluster` (None: the tight cluster of half its average parallelism) under `policy`
    (None: the workflow's own, else srpt-cp).

    `status` (task id -> done/running/pending, or the store's task statuses) and `elapsed` (task id -> seconds a
    running task has run) analyse a running workflow: done tasks are removed, running ones draw their remaining
    duration conditionally, and every time is the remaining time from now. `method`: "mc" (Monte Carlo) or "gnn"
    (the trained model, `gnn.OptimizerModel`, for the distribution and the gains; a short Monte Carlo still gives
    the reasons and the plan). `budget`: seconds the analysis aims at (None: `samples` draws, fixed counts).
    """
    if method not in ("mc", "gnn"):
        raise AnalysisInputError(f"method '{method}': give 'mc' (Monte Carlo) or 'gnn' (the trained model)")
    if samples < 1:
        raise AnalysisInputError(f"samples={samples}: give at least 1")
    if deadline is not None and not (math.isfinite(deadline) and deadline > 0):
        raise AnalysisInputError(f"deadline={deadline}: give the seconds the workflow must finish within, > 0")
    compile_s = warm_up()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    problem, source = build_problem(workflow, cluster, history=history, policy=policy, status=status,
                                    elapsed=elapsed, durations=durations)
    budget_state = _Budget(None if budget is None else t_start + budget, samples)
    timings["prepare"] = time.perf_counter() - t_start
    notes: list[str] = []
    live = None
    if status:
        counts = {DONE: problem.done, RUNNING: int(problem.running.sum()),
                  PENDING: int(problem.n - problem.running.sum())}
        live = {**counts, "note": "times are the remaining time from now"}
    if problem.n == 0:
        return _nothing_left(problem, source, method, compile_s, t_start, timings, live, seed)
    return _analyze_problem(problem, source, method, deadline, seed, budget_state, top_k, compile_s, t_start,
                            timings, notes, live)


def _analyze_problem(problem: Problem, source: str, method: str, deadline: float | None, seed: int,
                     budget: _Budget, top_k: int, compile_s: float, t_start: float, timings: dict[str, float],
                     notes: list[str], live: dict | None) -> AnalysisReport:
    dag, cluster = problem.dag, problem.cluster
    n = dag.n
    t = time.perf_counter()
    ls = ListScheduler(dag, cluster, problem.predicted, problem.policy)
    static = analyse(dag, problem.predicted)
    comps = _components(dag)
    timings["structure"] = time.perf_counter() - t

    # 1. one run on mean durations (the width over time; its time sizes the sampling), then the traced Monte Carlo:
    # distribution, criticality, waits
    t = time.perf_counter()
    mean_run = ls.run(problem.predicted)
    probe = problem.draws(2, seed)
    t1 = time.perf_counter()
    for row in probe:
        ls.run(row)
    budget.cost = 1.25 * (time.perf_counter() - t1) / len(probe) / max(numba.get_num_threads(), 1)
    timings["mean run"] = time.perf_counter() - t
    t = time.perf_counter()
    total = min(budget.samples, 32) if method == "gnn" else budget.count(0.20, 1, 32, budget.samples)
    draws = problem.draws(total, seed)
    trace = ls.trace(draws)
    makespans, crit, wait = trace.makespans, trace.criticality, trace.wait
    budget.cost = max(time.perf_counter() - t - _CALL_OVERHEAD, 0.5 * (time.perf_counter() - t)) / total
    timings["distribution"] = time.perf_counter() - t
    method_note = (f"Monte Carlo of the simulator's list scheduling ({problem.policy}), {total} samples of "
                   "log-normal durations")

    # 2. gains: screen by criticality x duration, measure the top tasks and the categories with common random numbers
    t = time.perf_counter()
    categories = _categories(problem)
    gains = _gains(problem, ls, draws, makespans, crit, categories, budget, top_k, method)
    candidates, top_cats, task_stats, cat_stats, gain, measured, gnn_pred, gain_note = gains
    method_note = (f"GNN ({gnn_pred.seconds * 1000:.0f} ms) for the distribution and every task's gain; reasons "
                   f"and the plan from a Monte Carlo of {total} samples ({problem.policy})" if gnn_pred is not None
                   else method_note + gain_note)
    timings["gains"] = time.perf_counter() - t

    if gnn_pred is not None:
        mean, p50, p90 = float(gnn_pred.mean), float(gnn_pred.p50), float(gnn_pred.p90)
        std = float(makespans.std())
    else:
        mean = float(makespans.mean())
        p50, p90 = (float(x) for x in np.percentile(makespans, [50, 90]))
        std = float(makespans.std(ddof=1)) if total > 1 else 0.0

    # 3. the parallel plan
    t = time.perf_counter()
    plan, unlimited = _plan(problem, ls, static, mean_run, draws, makespans, budget, deadline)
    timings["plan"] = time.perf_counter() - t

    dist = Distribution(mean, p50, p90, std, std / math.sqrt(total), total, static.critical_path_length,
                        [dag.ids[i] for i in static.critical_path], float(unlimited.mean()),
                        float(np.percentile(unlimited, 90)))
    t = time.perf_counter()
    bottlenecks = [_task_bottleneck(problem, i, task_stats[i], crit, wait, mean, static) for i in candidates]
    bottlenecks = sorted((b for b in bottlenecks if _clear_gain(b, mean)), key=lambda b: -b.gain)
    cat_rows = [_category_bottleneck(problem, c, categories[c], cat_stats[c], crit, wait, mean) for c in top_cats]
    cat_rows.sort(key=lambda b: -b.gain)
    saturation = _saturation(problem, wait, makespans.mean())
    if comps > 1:
        notes.append(f"the workflow has {comps} independent parts (no dependency joins them); they share the cluster")
    if n == 1:
        notes.append("a single task: its own duration is the makespan; only a faster task or a bigger node helps")
    if not bottlenecks:
        notes.append("no single task is a bottleneck: running any of them 30% faster changes the expected makespan "
                     "by less than the noise of the measurement")
    if budget.deadline is not None and total < budget.samples:
        notes.append(f"{total} samples (of --samples {budget.samples}) to stay within the "
                     f"{budget_seconds(budget, t_start):.2f} s budget; the standard error of the mean is given")
    timings["reasons"] = time.perf_counter() - t
    return AnalysisReport(
        workflow=problem.workflow.name, tasks=len(problem.workflow.tasks), tasks_left=n,
        cluster=describe_cluster(cluster), cluster_source=source, nodes=len(cluster), policy=problem.policy,
        method=method, method_note=method_note, makespan=dist, task_bottlenecks=bottlenecks,
        category_bottlenecks=cat_rows, saturation=saturation, plan=plan, live=live, components=comps, notes=notes,
        seconds=time.perf_counter() - t_start, compile_seconds=compile_s, timings=timings, seed=seed,
        task_ids=dag.ids, task_gain=gain, task_gain_measured=measured, criticality=crit, wait=wait)


def _gains(problem: Problem, ls: ListScheduler, draws: np.ndarray, makespans: np.ndarray, crit: np.ndarray,
           categories: dict[str, np.ndarray], budget: _Budget, top_k: int, method: str):
    """Per task, the drop of the expected makespan at 30% faster: the screening estimate (criticality x mean
    duration x 30%: the first-order drop) for every task, measured with common random numbers (paired differences
    on the first draws, one kernel call) for the top tasks and categories by that estimate; or the GNN's."""
    n = problem.n
    estimate = SPEEDUP * crit * problem.predicted
    order = np.argsort(-estimate, kind="stable")
    cat_est = {c: float(estimate[idx].sum()) for c, idx in categories.items()}
    room = budget.fit(0.5) / 8  # as many variants as fit with 8 samples each (at least 3 tasks and 1 category)
    k_tasks = int(min(top_k, max(3, room * 0.7))) if math.isfinite(room) else top_k
    k_cats = int(min(TOP_CATEGORIES, max(1, room - k_tasks))) if math.isfinite(room) else TOP_CATEGORIES
    candidates = [int(i) for i in order[:k_tasks] if estimate[i] > 0] or [int(order[0])]
    top_cats = sorted(categories, key=lambda c: -cat_est[c])[:k_cats]
    measured = np.zeros(n, dtype=bool)
    if method == "gnn":
        pred = _gnn_predict(problem)
        gain = np.asarray(pred.gain, dtype=np.float64)[:n]
        candidates = [int(i) for i in np.argsort(-gain, kind="stable")[:top_k]]
        task_stats: dict[int, tuple[float, float | None]] = {i: (float(gain[i]), None) for i in candidates}
        cat_stats = {c: (float(np.clip(gain[categories[c]], 0, None).sum()), None) for c in top_cats}
        return candidates, top_cats, task_stats, cat_stats, gain, measured, pred, ""
    gain = estimate.copy()
    variants = [[(i, 1.0 - SPEEDUP)] for i in candidates] + \
               [[(int(j), 1.0 - SPEEDUP) for j in categories[c]] for c in top_cats]
    g = budget.count(0.5, len(variants), 8, min(len(draws), 256))
    diff = makespans[None, :g] - _run_variants(ls, draws[:g], variants, [problem.cluster])
    means = diff.mean(axis=1)
    ses = diff.std(axis=1, ddof=1) / math.sqrt(g) if g > 1 else np.zeros(len(variants))
    task_stats = {i: (float(means[k]), float(ses[k])) for k, i in enumerate(candidates)}
    cat_stats = {c: (float(means[len(candidates) + k]), float(ses[len(candidates) + k]))
                 for k, c in enumerate(top_cats)}
    for i, (m, _) in task_stats.items():
        gain[i] = m
        measured[i] = True
    note = (f"; gains at {SPEEDUP:.0%} faster measured with common random numbers on {g} of the draws for the top "
            f"{len(candidates)} tasks by criticality x mean duration (screening) and for {len(top_cats)} "
            f"categor{'y' if len(top_cats) == 1 else 'ies'}; other tasks: the screening estimate")
    return candidates, top_cats, task_stats, cat_stats, gain, measured, None, note


def _clear_gain(b: Bottleneck, mean: float) -> bool:
    """A gain above the noise of its measurement (two standard errors) and above 0.1% of the makespan."""
    return b.gain > max(2 * (b.stderr or 0.0), 1e-3 * mean, 0.0)


def budget_seconds(budget: _Budget, t_start: float) -> float:
    return (budget.deadline - t_start) if budget.deadline is not None else math.inf


def _nothing_left(problem: Problem, source: str, method: str, compile_s: float, t_start: float,
                  timings: dict[str, float], live: dict | None, seed: int) -> AnalysisReport:
    dist = Distribution(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, [], 0.0, 0.0)
    plan = ParallelPlan(0, [], 0, 0.0, [], 0.0, [], 0, "", None, "nothing is left to run")
    return AnalysisReport(problem.workflow.name, len(problem.workflow.tasks), 0, describe_cluster(problem.cluster),
                          source, len(problem.cluster), problem.policy, method, "nothing left to simulate", dist, [],
                          [], None, plan, live, 0, ["every task is done: nothing is left to run"],
                          time.perf_counter() - t_start, compile_s, timings, seed)


def _gnn_predict(problem: Problem):
    """The GNN's prediction for the whole workflow (done tasks marked done, running ones with what they have run),
    its per-task gains restricted to the tasks left."""
    try:  # (import_module: a module blocked or missing in sys.modules counts as absent, imported or not)
        gnn = importlib.import_module(f"{__package__}.gnn")
    except ImportError as exc:
        raise AnalysisInputError(f"method 'gnn': the GNN is not available ({exc}); use --method mc") from None
    try:
        model = gnn.OptimizerModel.load()
    except (OSError, ValueError, RuntimeError, OrchestratorError) as exc:
        raise AnalysisInputError(f"method 'gnn': {exc}; or use --method mc") from None
    wf = problem.workflow
    live = problem.done > 0 or bool(problem.running.any())
    pred = model.predict(dag_arrays(wf, problem.all_durations.mean), problem.all_durations, problem.cluster,
                         status=list(problem.all_state) if live else None,
                         elapsed=problem.all_elapsed if live else None, policy=problem.policy,
                         categories=[t.category for t in wf.tasks],
                         input_bytes=np.array([np.nan if t.input_bytes is None else t.input_bytes
                                               for t in wf.tasks], dtype=np.float64))
    return replace(pred, gain=np.asarray(pred.gain, dtype=np.float64)[problem.keep]) if is_dataclass(pred) else \
        _with_gain(pred, np.asarray(pred.gain, dtype=np.float64)[problem.keep])


def _with_gain(pred, gain: np.ndarray):
    pred.gain = gain
    return pred


def _components(dag: DagArrays) -> int:
    if dag.n <= 1:
        return dag.n
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(dag.src)), (dag.src, dag.dst)), shape=(dag.n, dag.n))
    return int(connected_components(graph, directed=True, connection="weak")[0])


def _categories(problem: Problem) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = defaultdict(list)
    tasks = problem.workflow.tasks
    for j, i in enumerate(problem.keep):
        out[tasks[i].category or tasks[i].id].append(j)
    return {c: np.asarray(v, dtype=np.int64) for c, v in out.items()}


def _short_of(problem: Problem, i: int) -> str:
    """Which resource a waiting task is short of: the one it asks the largest share of a node for."""
    big = max(problem.cluster.nodes, key=lambda x: (x.cpus, x.memory))
    c = problem.dag.cpus[i] / big.cpus
    m = problem.dag.memory[i] / big.memory
    g = problem.dag.gpus[i] / big.gpus if big.gpus else 0.0
    return "gpus" if g > max(c, m) else ("memory" if m > c else "cpus")


def _task_bottleneck(problem: Problem, i: int, stats: tuple[float, float | None], crit: np.ndarray,
                     wait: np.ndarray, mean: float, static) -> Bottleneck:
    dag = problem.dag
    g, se = stats
    d = float(problem.predicted[i])
    reasons = []
    if crit[i] >= 0.05:
        reasons.append(f"on the critical path in {crit[i]:.0%} of samples")
    fan_in, fan_out = int(dag.in_degree[i]), int(dag.out_degree[i])
    if fan_in >= 8:
        reasons.append(f"a fan-in of {fan_in} parents that serialises work: it starts only when the last one ends")
    if fan_out >= 8:
        reasons.append(f"a fan-out of {fan_out} children: none of them starts before it ends")
    if wait[i] > max(0.05 * d, 1e-3 * mean, 1e-9):
        reasons.append(f"waits {seconds_text(wait[i])} on average for {_short_of(problem, i)}: the cluster runs out")
    if mean > 0 and d >= 0.1 * mean:
        reasons.append(f"runs {seconds_text(d)} on average, {d / mean:.0%} of the expected makespan")
    if problem.running[i]:
        reasons.append(f"already running for {seconds_text(problem.elapsed[i])}")
    if static.slack[i] == 0 and crit[i] < 0.05 and len(dag.ids) > 1:
        reasons.append("on the critical path of mean durations")
    if not reasons:
        reasons.append("shortening it shortens the schedule" if g > 0 else "off the critical path: no gain")
    return Bottleneck("task", dag.ids[i], g, 100 * g / mean if mean > 0 else 0.0, se, se is not None,
                      float(crit[i]), float(wait[i]), d, 1, reasons)


def _category_bottleneck(problem: Problem, name: str, idx: np.ndarray, stats: tuple[float, float | None],
                         crit: np.ndarray, wait: np.ndarray, mean: float) -> Bottleneck:
    g, se = stats
    work = problem.predicted * problem.dag.cpus
    total_work = float(work.sum())
    share = float((crit[idx] * problem.predicted[idx]).sum()) / mean if mean > 0 else 0.0
    reasons = [f"{len(idx)} task{'s' if len(idx) > 1 else ''}, {float(work[idx].sum()) / total_work:.0%} of the "
               "work" if total_work > 0 else f"{len(idx)} tasks"]
    if share >= 0.02:
        reasons.append(f"{min(share, 1.0):.0%} of the critical path's time, on average")
    w = float(wait[idx].mean())
    d = float(problem.predicted[idx].mean())
    if w > max(0.05 * d, 1e-3 * mean, 1e-9):
        reasons.append(f"its tasks wait {seconds_text(w)} on average for {_short_of(problem, int(idx[0]))}")
    return Bottleneck("category", name, g, 100 * g / mean if mean > 0 else 0.0, se, se is not None,
                      min(share, 1.0), w, d, len(idx), reasons)


def _saturation(problem: Problem, wait: np.ndarray, mean: float) -> str | None:
    """A sentence when tasks wait for room: how long on average and which resource runs out."""
    if mean <= 0 or problem.n == 0:
        return None
    dag = problem.dag
    waited = wait > 1e-9
    if not waited.any() or float((wait * dag.cpus).sum()) < 0.01 * mean:
        return "no task waits for room: the cluster is large enough for this workflow's parallelism"
    cap_c, cap_m, _ = _caps(problem.cluster)
    cpu_share = float(dag.cpus[waited].mean() / cap_c.mean())
    mem_share = float(dag.memory[waited].mean() / cap_m.mean())
    short = "memory" if mem_share > cpu_share else "cpus"
    return (f"{int(waited.sum())} of {problem.n} tasks wait for room, {seconds_text(float(wait[waited].mean()))} on "
            f"average: the cluster runs out of {short} ({describe_cluster(problem.cluster)})")


def _width_over_time(start: np.ndarray, end: np.ndarray, cpus: np.ndarray, points: int = 100) -> list[list[float]]:
    """[time, tasks running, cpus in use] at each change, at most `points` rows (the busiest moment of each slice)."""
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    dc = np.concatenate([cpus, -cpus])
    order = np.lexsort((delta, times))
    times, width, used = times[order], np.cumsum(delta[order]), np.cumsum(dc[order])
    keep = np.append(times[1:] != times[:-1], True)
    times, width, used = times[keep], width[keep], used[keep]
    if len(times) > points and times[-1] > 0:
        bucket = np.minimum((times / times[-1] * points).astype(np.int64), points - 1)
        rows = []
        for b in np.unique(bucket):
            sel = np.flatnonzero(bucket == b)
            k = sel[np.argmax(width[sel])]
            rows.append([float(times[sel[0]]), float(width[k]), float(used[k])])
        return rows
    return [[float(a), float(b), float(c)] for a, b, c in zip(times, width, used)]


def _plan(problem: Problem, ls: ListScheduler, static, mean_run, draws: np.ndarray, makespans: np.ndarray,
          budget: _Budget, deadline: float | None) -> tuple[ParallelPlan, np.ndarray]:
    dag, cluster = problem.dag, problem.cluster
    _, start, end = mean_run
    wot = _width_over_time(start, end, dag.cpus)
    peak = int(max((r[1] for r in wot), default=0))
    work = float((problem.predicted * dag.cpus).sum())
    parallelism = work / static.critical_path_length if static.critical_path_length > 0 else 1.0
    width = static.width_per_level().tolist()
    g = budget.count(0.35, 3, 8, min(len(draws), 64))
    sub = draws[:g]
    unlimited = _longest_paths(sub, static.order, dag.parents_ptr, dag.parents)
    base = makespans[:g]
    big = max(cluster.nodes, key=lambda x: (x.cpus, x.memory, x.gpus))
    node_type = f"{big.cpus:g} cpus, {format_bytes(big.memory)}" + (f", {big.gpus:g} gpus" if big.gpus else "")
    # nodes that hold the whole width of a run on unlimited resources (mean durations), with a margin for variance
    demand_c, demand_m = _peak_demand(dag, static, problem.predicted)
    need = max(demand_c / big.cpus, demand_m / big.memory if big.memory else 0.0, 1.0)
    current = len(cluster)
    top = int(max(current, min(MAX_SWEEP_NODES, math.ceil(1.5 * need) + 1)))
    results: dict[int, np.ndarray] = {current: base}

    def evaluate(counts: set[int]) -> None:
        todo = sorted(c for c in counts if c not in results and c >= 1)
        if not todo:
            return
        fits = []
        for c in todo:
            cl = resized(cluster, c)
            try:
                check_fits(dag, cl, problem.workflow.name)
                fits.append((c, cl))
            except AnalysisInputError:
                results[c] = np.full(g, np.inf)
        if fits:
            out = _run_variants(ls, sub, [[] for _ in fits], [cl for _, cl in fits], list(range(len(fits))))
            for (c, _), row in zip(fits, out):
                results[c] = np.where(row < 0, np.inf, row)

    def another_round() -> bool:  # one round evaluates up to 3 node counts of g samples
        return budget.left() > 3 * g * budget.cost + _CALL_OVERHEAD

    floor = float(unlimited.mean())
    enough_target = (1 + ENOUGH_NODES_GAIN) * floor
    evaluate({top})
    enough, lo = _search(lambda c: results[c].mean() <= enough_target, current, top, evaluate, results,
                         another_round)
    mean_at = {c: float(v.mean()) for c, v in results.items()}
    if enough is None:
        enough_note = (f"even {top} nodes of ({node_type}) stay more than {ENOUGH_NODES_GAIN:.0%} above the "
                       f"unlimited-resources makespan ({seconds_text(floor)}): the cluster size was capped at {top}")
    else:
        within = "" if enough - lo <= 1 else f" (searched to within {lo + 1}-{enough} in the time budget)"
        enough_note = (f"beyond {enough} node{'s' if enough > 1 else ''} of ({node_type}) more nodes gain less than "
                       f"{ENOUGH_NODES_GAIN:.0%}: {seconds_text(mean_at[enough])} expected, against "
                       f"{seconds_text(floor)} with unlimited nodes{within}")
        if enough < current:
            enough_note += f"; the {current} nodes given are more than this workflow can use"
    deadline_nodes, deadline_note = None, None
    if deadline is not None:
        p90_floor = float(np.percentile(unlimited, 90))
        if p90_floor > deadline:
            deadline_note = (f"not reachable: the critical path alone is {seconds_text(static.critical_path_length)} "
                             f"on mean durations, and its P90 with unlimited nodes is {seconds_text(p90_floor)} "
                             f"(deadline {seconds_text(deadline)})")
        else:
            deadline_nodes, lo = _search(lambda c: np.percentile(results[c], 90) <= deadline, current, top, evaluate,
                                         results, lambda: True)
            if deadline_nodes is None:
                deadline_note = (f"more than {top} nodes of ({node_type}) are needed for P90 <= "
                                 f"{seconds_text(deadline)} (searched up to {top})")
            else:
                p = float(np.percentile(results[deadline_nodes], 90))
                who = (f"{deadline_nodes} nodes of ({node_type}) meet" if deadline_nodes > 1 else
                       f"1 node of ({node_type}) meets")
                deadline_note = f"{who} the deadline of {seconds_text(deadline)} with P90 {seconds_text(p)}"
                if deadline_nodes > 1:
                    q = float(np.percentile(results[deadline_nodes - 1], 90))
                    deadline_note += f" ({deadline_nodes - 1}: P90 {seconds_text(q)})"
    curve = [NodePoint(c, float(v.mean()), float(np.percentile(v, 90))) for c, v in sorted(results.items())
             if np.all(np.isfinite(v))]
    plan = ParallelPlan(static.num_levels, width, peak, parallelism, wot, float(end.max(initial=0.0)), curve, g,
                        node_type, enough, enough_note, deadline, deadline_nodes, deadline_note)
    return plan, unlimited


def _search(ok, current: int, top: int, evaluate, results: dict[int, np.ndarray],
            another_round) -> tuple[int | None, int]:
    """The smallest node count in [1, top] for which `ok` holds (assuming more nodes rarely hurt), evaluating up to
    three counts per round in one kernel call while `another_round()` allows. Returns (count, the largest count
    known to fail); (None, top) when even `top` fails."""
    if not ok(top):
        return None, top
    lo, hi = 0, top  # ok(lo) is false (0 nodes never finish), ok(hi) true
    for c in sorted(results):
        if lo < c < hi:
            if ok(c):
                hi = c
            else:
                lo = c
    while hi - lo > 1 and another_round():
        if hi - lo <= 4:
            points = set(range(lo + 1, hi))
        elif lo == 0:
            points = {1, max(hi // 4, 1), max(hi // 2, 1)}
        else:
            points = {int(round(lo * (hi / lo) ** (k / 4))) for k in (1, 2, 3)}
        points = {p for p in points if lo < p < hi} or {(lo + hi) // 2}
        evaluate(points)
        for c in sorted(points):
            if ok(c):
                hi = c
                break
            lo = c
    return hi, lo


def _peak_demand(dag: DagArrays, static, mean: np.ndarray) -> tuple[float, float]:
    """Most cpus and memory in use at once when every task starts as early as possible (mean durations)."""
    start = static.top_level
    end = start + mean
    times = np.concatenate([start, end])
    order = np.lexsort((np.concatenate([np.ones(dag.n), -np.ones(dag.n)]), times))
    c = np.cumsum(np.concatenate([dag.cpus, -dag.cpus])[order])
    m = np.cumsum(np.concatenate([dag.memory, -dag.memory])[order])
    return float(c.max(initial=0.0)), float(m.max(initial=0.0))


# ------------------------------------------------------------------------------------------------ from the store

@dataclass(frozen=True)
class LiveRun:
    """A run as the store knows it now: its workflow, each task's state and how long each running task has run,
    the runtimes its finished tasks took (`finished`: a history for categories without a declared duration), and
    the cluster the store saw (None when no node samples were recorded)."""

    run_id: str
    workflow: Workflow
    status: dict[str, str]
    elapsed: dict[str, float]
    finished: Workflow | None
    cluster: Cluster | None
    at: float

    def history_with(self, history: DurationHistory | None) -> DurationHistory | None:
        """`history` plus the runtimes of this run's finished tasks."""
        if self.finished is None:
            return history
        out = copy.deepcopy(history) if history is not None else DurationHistory()
        out.add_workflow(self.finished)
        return out


def live_run(store, run_id: str, now: float | None = None) -> LiveRun:
    """Read a run from a `Store` (its spec, tasks, executions and node samples) for `analyze(status=, elapsed=)`."""
    now = time.time() if now is None else now
    workflow = store.load_spec(run_id)
    tasks = store.get_tasks(run_id)
    status: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    for t in tasks:
        word = _STATUS_WORDS.get(t.status.value, PENDING)
        status[t.task_id] = word
        if word == RUNNING and t.started_at is not None:
            elapsed[t.task_id] = max(now - t.started_at, 0.0)
    ran: list[dict] = []
    by_id = {t.id: t for t in workflow.tasks}
    for x in store.executions(run_id):
        took = x.duration if x.duration is not None else (
            x.finished_at - x.started_at if x.finished_at and x.started_at else None)
        if x.status == "succeeded" and took is not None and took > 0 and x.task_id in by_id:
            ran.append({"id": f"{x.task_id}.{x.attempt}", "category": by_id[x.task_id].category,
                        "duration": float(took)})
    finished = Workflow(name=f"{workflow.name}-finished", tasks=ran) if ran else None
    record = store.get_workflow(run_id)
    return LiveRun(run_id, workflow, status, elapsed, finished,
                   _store_cluster(store, record.started_at or record.created_at), now)


def _store_cluster(store, since: float) -> Cluster | None:
    """The nodes the store sampled since `since` (latest sample of each), or None."""
    try:
        samples = store.system_samples(since=since)
    except Exception:  # noqa: BLE001 - an old store without samples: the caller falls back to a default cluster
        return None
    latest = {}
    for s in samples:
        if s.node is not None and s.cpus_total > 0 and s.memory_total > 0:
            latest[s.node] = s
    if not latest:
        return None
    return Cluster(tuple(NodeSpec(name, float(s.cpus_total), float(s.memory_total)) for name, s in
                         sorted(latest.items())))


__all__ = ["analyze", "AnalysisReport", "Bottleneck", "Distribution", "ParallelPlan", "NodePoint", "Problem",
           "build_problem", "check_fits", "describe_cluster", "resized", "live_run", "LiveRun", "warm_up",
           "sub_dag", "build_dag", "seconds_text", "MAX_ANALYSIS_TASKS", "DEFAULT_BUDGET_S", "TOP_K"]

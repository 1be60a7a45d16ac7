"""DAG analysis on integer task indices and numpy arrays: topological order, levels, top/bottom levels,
critical path, slack and width over time. Every pass is vectorised level by level (no per-node Python loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import CycleError
from .model import Workflow, find_cycle


@dataclass(frozen=True)
class DagArrays:
    """A workflow's graph as arrays. Task i is `ids[i]`; edge e goes `src[e]` -> `dst[e]` (parent -> child).

    `children_ptr/children` and `parents_ptr/parents` are CSR adjacency lists. Besides the resource requests,
    each task's scheduling attributes: its priority (higher first), retries and retry delay (NaN: the engine's
    default base), and its custom-resource request (`custom`: one mapping per task, empty for none; None when
    no task of the workflow requests any).
    """

    ids: tuple[str, ...]
    src: np.ndarray
    dst: np.ndarray
    children_ptr: np.ndarray
    children: np.ndarray
    parents_ptr: np.ndarray
    parents: np.ndarray
    duration: np.ndarray  # seconds, float64 (0 where unknown)
    cpus: np.ndarray
    memory: np.ndarray  # bytes, float64
    gpus: np.ndarray
    index: dict[str, int] = field(repr=False)
    priority: np.ndarray = field(default=None, repr=False)  # int64 (zeros when not given)
    retries: np.ndarray = field(default=None, repr=False)  # int64 (zeros when not given)
    retry_delay: np.ndarray = field(default=None, repr=False)  # float64 seconds, NaN = the engine's default
    custom: tuple[dict[str, float], ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, fill, dtype in (("priority", 0, np.int64), ("retries", 0, np.int64),
                                  ("retry_delay", np.nan, np.float64)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, fill, dtype=dtype))

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def in_degree(self) -> np.ndarray:
        return np.diff(self.parents_ptr)

    @property
    def out_degree(self) -> np.ndarray:
        return np.diff(self.children_ptr)

    def children_of(self, i: int) -> np.ndarray:
        return self.children[self.children_ptr[i]:self.children_ptr[i + 1]]

    def parents_of(self, i: int) -> np.ndarray:
        return self.parents[self.parents_ptr[i]:self.parents_ptr[i + 1]]

    def descendants(self, i: int) -> list[int]:
        """Every task reachable from task i (not i itself), ascending: what a failure of i skips."""
        ptr, children = self.children_ptr, self.children
        seen: set[int] = set()
        stack = [i]
        while stack:
            t = stack.pop()
            for c in children[ptr[t]:ptr[t + 1]].tolist():
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return sorted(seen)


def _csr(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, values[order].astype(np.int64)


def dag_arrays(wf: Workflow, durations: np.ndarray | None = None) -> DagArrays:
    """Build the array view of a workflow. `durations` overrides the tasks' own `duration` fields."""
    ids = tuple(t.id for t in wf.tasks)
    index = {tid: i for i, tid in enumerate(ids)}
    n = len(ids)
    src_list: list[int] = []
    dst_list: list[int] = []
    for i, t in enumerate(wf.tasks):
        for d in t.depends_on:
            src_list.append(index[d])
            dst_list.append(i)
    src = np.asarray(src_list, dtype=np.int64)
    dst = np.asarray(dst_list, dtype=np.int64)
    children_ptr, children = _csr(src, dst, n)
    parents_ptr, parents = _csr(dst, src, n)
    if durations is None:
        durations = np.array([t.duration or 0.0 for t in wf.tasks], dtype=np.float64)
    return DagArrays(
        ids=ids,
        src=src,
        dst=dst,
        children_ptr=children_ptr,
        children=children,
        parents_ptr=parents_ptr,
        parents=parents,
        duration=np.asarray(durations, dtype=np.float64),
        cpus=np.array([t.resources.cpus for t in wf.tasks], dtype=np.float64),
        memory=np.array([t.resources.memory for t in wf.tasks], dtype=np.float64),
        gpus=np.array([t.resources.gpus for t in wf.tasks], dtype=np.float64),
        index=index,
        priority=np.array([t.priority for t in wf.tasks], dtype=np.int64),
        retries=np.array([t.retries for t in wf.tasks], dtype=np.int64),
        retry_delay=np.array([np.nan if t.retry_delay is None else t.retry_delay for t in wf.tasks],
                             dtype=np.float64),
        custom=(tuple({k: float(v) for k, v in t.resources.custom.items()} for t in wf.tasks)
                if any(t.resources.custom for t in wf.tasks) else None),
    )


@dataclass(frozen=True)
class DagAnalysis:
    """Static properties of a DAG under given task durations (no resource limits)."""

    order: np.ndarray  # a topological order of task indices
    level: np.ndarray  # longest path from a source, in edges
    top_level: np.ndarray  # earliest start time with unlimited resources
    bottom_level: np.ndarray  # longest path from the task's start to a sink, including its own duration (upward rank)
    critical_path_length: float
    critical_path: np.ndarray  # task indices of one critical path, source to sink
    slack: np.ndarray  # how long each task can slip without lengthening the critical path
    total_work: float  # sum of duration x cpus

    @property
    def num_levels(self) -> int:
        return int(self.level.max()) + 1 if len(self.level) else 0

    def width_per_level(self) -> np.ndarray:
        return np.bincount(self.level)


def levels(dag: DagArrays) -> tuple[np.ndarray, np.ndarray]:
    """Level-synchronous Kahn: return (topological order, level of each task). Raise CycleError on a cycle."""
    n = dag.n
    indeg = dag.in_degree.copy()
    level = np.full(n, -1, dtype=np.int64)
    frontier = np.flatnonzero(indeg == 0)
    chunks = []
    depth = 0
    while frontier.size:
        level[frontier] = depth
        chunks.append(frontier)
        # Gather all out-edges of the frontier through the CSR arrays.
        starts = dag.children_ptr[frontier]
        counts = dag.children_ptr[frontier + 1] - starts
        total = int(counts.sum())
        if total == 0:
            break
        offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        kids = dag.children[offsets]
        np.subtract.at(indeg, kids, 1)
        touched = np.unique(kids)
        frontier = touched[indeg[touched] == 0]
        depth += 1
    order = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    if order.size != n:
        raise CycleError(_cycle_ids(dag))
    return order, level


def _cycle_ids(dag: DagArrays) -> list[str]:
    from .model import TaskSpec

    tasks = [
        TaskSpec.model_construct(id=dag.ids[i], depends_on=[dag.ids[p] for p in dag.parents_of(i)])
        for i in range(dag.n)
    ]
    return find_cycle(tasks, dag.index) or []


def topological_order(dag: DagArrays) -> np.ndarray:
    return levels(dag)[0]


@dataclass(frozen=True)
class _Topology:
    """Duration-independent structure, computed once per DagArrays and reused by every analysis."""

    order: np.ndarray
    level: np.ndarray
    down: list[tuple[np.ndarray, np.ndarray]]  # per level (ascending): (src, dst) of edges into that level
    up: list[tuple[np.ndarray, np.ndarray]]  # per level (descending): (src, dst) of edges out of that level


def topology(dag: DagArrays) -> _Topology:
    cached = dag.__dict__.get("_topology")
    if cached is not None:
        return cached
    order, level = levels(dag)
    down: list[tuple[np.ndarray, np.ndarray]] = []
    up: list[tuple[np.ndarray, np.ndarray]] = []
    if dag.src.size:
        max_level = int(level.max())
        edge_level = level[dag.dst]
        e_order = np.argsort(edge_level, kind="stable")
        bounds = np.searchsorted(edge_level[e_order], np.arange(max_level + 2))
        for lvl in range(1, max_level + 1):
            e = e_order[bounds[lvl]:bounds[lvl + 1]]
            down.append((dag.src[e], dag.dst[e]))
        parent_level = level[dag.src]
        p_order = np.argsort(parent_level, kind="stable")
        p_bounds = np.searchsorted(parent_level[p_order], np.arange(max_level + 2))
        for lvl in range(max_level - 1, -1, -1):
            e = p_order[p_bounds[lvl]:p_bounds[lvl + 1]]
            if e.size:
                up.append((dag.src[e], dag.dst[e]))
    topo = _Topology(order, level, down, up)
    object.__setattr__(dag, "_topology", topo)
    return topo


def analyse(dag: DagArrays, durations: np.ndarray | None = None) -> DagAnalysis:
    """Compute levels, top/bottom levels, one critical path and slack, vectorised per level."""
    w = dag.duration if durations is None else np.asarray(durations, dtype=np.float64)
    topo = topology(dag)
    n = dag.n
    top = np.zeros(n)
    bottom = w.copy()
    for src, dst in topo.down:
        np.maximum.at(top, dst, top[src] + w[src])
    for src, dst in topo.up:
        np.maximum.at(bottom, src, w[src] + bottom[dst])
    cp_len = float(bottom.max()) if n else 0.0
    slack = cp_len - (top + bottom)
    slack[np.abs(slack) < 1e-9 * max(cp_len, 1.0)] = 0.0
    return DagAnalysis(
        order=topo.order,
        level=topo.level,
        top_level=top,
        bottom_level=bottom,
        critical_path_length=cp_len,
        critical_path=_trace_critical_path(dag, w, top, bottom, cp_len),
        slack=slack,
        total_work=float((w * dag.cpus).sum()),
    )


def _trace_critical_path(dag: DagArrays, w: np.ndarray, top: np.ndarray, bottom: np.ndarray,
                         cp_len: float) -> np.ndarray:
    if dag.n == 0:
        return np.zeros(0, dtype=np.int64)
    tol = 1e-9 * max(cp_len, 1.0)
    sources = np.flatnonzero((dag.in_degree == 0) & (np.abs(bottom - cp_len) <= tol))
    node = int(sources[0]) if sources.size else int(np.argmax(bottom))
    path = [node]
    while True:
        kids = dag.children_of(node)
        if kids.size == 0:
            break
        target = bottom[node] - w[node]
        match = kids[np.abs(bottom[kids] - target) <= tol]
        if match.size == 0:
            break
        node = int(match[0])
        path.append(node)
    return np.asarray(path, dtype=np.int64)


def critical_path(wf: Workflow) -> list[str]:
    """Ids of one critical path of a workflow under its tasks' durations."""
    dag = dag_arrays(wf)
    return [dag.ids[i] for i in analyse(dag).critical_path]


def width_over_time(dag: DagArrays, analysis: DagAnalysis) -> tuple[np.ndarray, np.ndarray]:
    """Running-task count over time when every task starts as early as possible (unlimited resources).

    Returns (times, width): width[k] tasks run during [times[k], times[k+1]).
    """
    start = analysis.top_level
    end = start + (dag.duration)
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(dag.n, dtype=np.int64), -np.ones(dag.n, dtype=np.int64)])
    order = np.lexsort((delta, times))  # ends before starts at the same instant
    times, delta = times[order], delta[order]
    width = np.cumsum(delta)
    keep = np.append(times[1:] != times[:-1], True)
    return times[keep], width[keep]

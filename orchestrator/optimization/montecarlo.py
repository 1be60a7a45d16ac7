"""Monte Carlo of one workflow on a cluster: the simulator's list scheduling, compiled, run for thousands of
sampled durations at once.

`ListScheduler` runs exactly what `sim.engine.Simulation` runs for a single workflow under a list-scheduling
policy (fifo, job-fifo, srpt-cp, heft): the same queue order (the policy's static key, then the order tasks
became ready), the same walk (first fit, or best fit for heft; a task that fits nowhere counts against the
backfilling depth `scan_limit`; a round stops when no cpu is left), the same batches of simultaneous events (ends
in start order, children in CSR order). tests/test_optimization_montecarlo.py checks that every makespan equals
the engine's on the same durations. Numba compiles it (cached on disk), so 10,000 samples of a 1,000-task
workflow take about a second; gains of every task with common random numbers reuse one set of draws.

What the kernel does not model (the engine does): failures and retries, dispatch ahead, custom resources,
policies that override `schedule` (tetris) — `ListScheduler` refuses those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..dag import DagArrays, analyse
from ..scheduling.interface import EPS
from ..sim.cluster import Cluster
from .durations import AnalysisInputError

# How each supported policy orders its queue: (static key fields, flat queue?, best fit?)
_POLICIES = {
    "fifo": ("priority", True, False),
    "job-fifo": ("priority", False, False),
    "srpt-cp": ("priority-bottom", False, False),
    "heft": ("priority-bottom", True, True),
}
SUPPORTED_POLICIES = tuple(_POLICIES)


@njit(cache=True, nogil=True)
def _heap_push(keys, vals, size, key, val):
    i = size
    keys[i] = key
    vals[i] = val
    while i > 0:
        p = (i - 1) >> 1
        if keys[p] > keys[i] or (keys[p] == keys[i] and vals[p] > vals[i]):
            keys[p], keys[i] = keys[i], keys[p]
            vals[p], vals[i] = vals[i], vals[p]
            i = p
        else:
            break
    return size + 1


@njit(cache=True, nogil=True)
def _heap_pop(keys, vals, size):
    """Remove the least (key, val); the caller read it at index 0 first. Returns the new size."""
    size -= 1
    keys[0] = keys[size]
    vals[0] = vals[size]
    i = 0
    while True:
        l = 2 * i + 1
        if l >= size:
            break
        r = l + 1
        c = l
        if r < size and (keys[r] < keys[l] or (keys[r] == keys[l] and vals[r] < vals[l])):
            c = r
        if keys[c] < keys[i] or (keys[c] == keys[i] and vals[c] < vals[i]):
            keys[c], keys[i] = keys[i], keys[c]
            vals[c], vals[i] = vals[i], vals[c]
            i = c
        else:
            break
    return size


@njit(cache=True, nogil=True)
def _simulate(dur, rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best, scan_limit,
              start, end, cause, trace):
    """One list-scheduling run. Fills start/end (and, with `trace`, `cause`: the task whose end let each task
    start: its last parent, or a task ending at that moment that freed room). Returns the makespan."""
    n = dur.shape[0]
    k = cap_c.shape[0]
    eps = EPS
    two_eps = 2 * EPS
    free_c = cap_c.copy()
    free_m = cap_m.copy()
    free_g = cap_g.copy()
    pending = indeg.copy()
    rmul = np.int64(n + 1)
    # ready heap: key = rank * (n + 1) + seq (the policy's order, then ready order); val = task
    rkeys = np.empty(n, np.int64)
    rvals = np.empty(n, np.int64)
    rsize = 0
    # finish heap: key = end time, val = start order
    fkeys = np.empty(n, np.float64)
    fvals = np.empty(n, np.int64)
    fsize = 0
    started_task = np.empty(n, np.int64)
    node_of = np.empty(n, np.int64)
    ready_at = np.empty(n, np.float64)
    last_parent = np.full(n, -1, np.int64)
    skipped = np.empty(n, np.int64)  # keys of the tasks a walk passed over
    parked = np.empty(n, np.int64)  # and the tasks
    seq = 0
    nstarted = 0
    for t in range(n):
        if pending[t] == 0:
            seq += 1
            rsize = _heap_push(rkeys, rvals, rsize, rank[t] * rmul + seq, t)
            ready_at[t] = 0.0
    now = 0.0
    makespan = 0.0
    batch_first = -1  # first task to end in the current batch
    done = 0
    while True:
        most = free_c[0]
        for i in range(1, k):
            if free_c[i] > most:
                most = free_c[i]
        if rsize > 0 and most > eps and most + eps >= two_eps:
            # the walk
            limit = most + eps
            cutoff = limit + 1e-9
            misses = 0
            nskip = 0
            while rsize > 0:
                t = rvals[0]
                tkey = rkeys[0]
                rsize = _heap_pop(rkeys, rvals, rsize)
                if flat and cpus[t] > cutoff:
                    skipped[nskip] = tkey
                    parked[nskip] = t
                    nskip += 1
                    continue
                node = -1
                if cpus[t] <= limit:
                    c = cpus[t] - eps
                    m = mem[t] - eps
                    g = gpus[t] - eps
                    if best:
                        bl_c = 0.0
                        bl_m = 0.0
                        for i in range(k):
                            if free_c[i] >= c and free_m[i] >= m and free_g[i] >= g:
                                lc = free_c[i] - cpus[t]
                                lm = free_m[i] - mem[t]
                                if node < 0 or lc < bl_c or (lc == bl_c and lm < bl_m):
                                    node = i
                                    bl_c = lc
                                    bl_m = lm
                    else:
                        for i in range(k):
                            if free_c[i] >= c and free_m[i] >= m and free_g[i] >= g:
                                node = i
                                break
                if node < 0:
                    skipped[nskip] = tkey
                    parked[nskip] = t
                    nskip += 1
                    misses += 1
                    if misses >= scan_limit:
                        break
                    continue
                old = free_c[node]
                left = old - cpus[t]
                free_c[node] = left
                free_m[node] -= mem[t]
                free_g[node] -= gpus[t]
                start[t] = now
                node_of[t] = node
                if trace:
                    if last_parent[t] >= 0 and ready_at[t] == now:
                        cause[t] = last_parent[t]
                    else:
                        cause[t] = batch_first
                started_task[nstarted] = t
                fsize = _heap_push(fkeys, fvals, fsize, now + dur[t], nstarted)
                nstarted += 1
                if old >= most or left > most:
                    most = free_c[0]
                    for i in range(1, k):
                        if free_c[i] > most:
                            most = free_c[i]
                    limit = most + eps
                    if limit < two_eps:
                        break
            # the passed-over tasks go back, with their keys
            for j in range(nskip):
                rsize = _heap_push(rkeys, rvals, rsize, skipped[j], parked[j])
        if fsize == 0:
            break
        when = fkeys[0]
        now = when
        batch_first = -1
        # every end at this time, in start order (the heap's ties are broken by start order)
        while fsize > 0 and fkeys[0] == when:
            t = started_task[fvals[0]]
            fsize = _heap_pop(fkeys, fvals, fsize)
            nd = node_of[t]
            free_c[nd] += cpus[t]
            free_m[nd] += mem[t]
            free_g[nd] += gpus[t]
            end[t] = now
            if now > makespan:
                makespan = now
            done += 1
            if batch_first < 0:
                batch_first = t
            for e in range(ptr[t], ptr[t + 1]):
                ch = kids[e]
                pending[ch] -= 1
                if pending[ch] == 0:
                    seq += 1
                    rsize = _heap_push(rkeys, rvals, rsize, rank[ch] * rmul + seq, ch)
                    ready_at[ch] = now
                    last_parent[ch] = t
    if done < n:
        return -1.0  # a task that fits on no node: never started
    return makespan


# One run, for kernels elsewhere that batch many variants in one parallel call (`analysis._variant_makespans`).
simulate_one = _simulate


@njit(parallel=True, cache=True)
def _makespans(durs, rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best, scan_limit):
    s_count, n = durs.shape
    out = np.empty(s_count, np.float64)
    for s in prange(s_count):
        start = np.empty(n, np.float64)
        end = np.empty(n, np.float64)
        cause = np.empty(n, np.int64)
        out[s] = _simulate(durs[s], rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best,
                           scan_limit, start, end, cause, False)
    return out


@njit(parallel=True, cache=True)
def _traced(durs, pptr, parents, rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best,
            scan_limit):
    """Makespans, plus per task and sample: whether it lies on the chain of causes back from the last end (the
    schedule's critical chain, contention included) and its wait between ready and start."""
    s_count, n = durs.shape
    out = np.empty(s_count, np.float64)
    crit = np.zeros((s_count, n), np.uint8)
    wait = np.zeros((s_count, n), np.float32)
    for s in prange(s_count):
        start = np.empty(n, np.float64)
        end = np.empty(n, np.float64)
        cause = np.full(n, -1, np.int64)
        ms = _simulate(durs[s], rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best,
                       scan_limit, start, end, cause, True)
        out[s] = ms
        if ms < 0:
            continue
        last = 0
        for t in range(n):
            if end[t] >= end[last]:
                last = t
        t = last
        guard = 0
        while t >= 0 and guard <= n:
            crit[s, t] = 1
            t = cause[t]
            guard += 1
        for t in range(n):
            r = 0.0
            for e in range(pptr[t], pptr[t + 1]):
                if end[parents[e]] > r:
                    r = end[parents[e]]
            wait[s, t] = start[t] - r
    return out, crit, wait


@njit(parallel=True, cache=True)
def _gains(durs, tasks, factor, rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best,
           scan_limit):
    """Mean makespan with each of `tasks` shortened by `factor` in turn, over the same draws."""
    s_count, n = durs.shape
    m = tasks.shape[0]
    out = np.empty(m, np.float64)
    for j in prange(m):
        t = tasks[j]
        d = np.empty(n, np.float64)
        start = np.empty(n, np.float64)
        end = np.empty(n, np.float64)
        cause = np.empty(n, np.int64)
        total = 0.0
        for s in range(s_count):
            for i in range(n):
                d[i] = durs[s, i]
            d[t] = durs[s, t] * factor
            total += _simulate(d, rank, indeg, ptr, kids, cpus, mem, gpus, cap_c, cap_m, cap_g, flat, best,
                               scan_limit, start, end, cause, False)
        out[j] = total / s_count
    return out


@dataclass
class Trace:
    makespans: np.ndarray  # per sample
    criticality: np.ndarray  # per task: share of samples where it lies on the chain of causes of the last end
    wait: np.ndarray  # per task: mean seconds between ready and start (waiting for room)


class ListScheduler:
    """One workflow, one cluster, one list-scheduling policy, compiled. `predicted` are the durations the policy
    ranks by (its bottom levels); the durations each run takes are given per call."""

    def __init__(self, dag: DagArrays, cluster: Cluster, predicted: np.ndarray, policy: str = "srpt-cp",
                 scan_limit: int = 64):
        if policy not in _POLICIES:
            raise AnalysisInputError(f"policy '{policy}': the Monte Carlo kernel runs {', '.join(_POLICIES)}; "
                                     "other policies run in the event simulator (sim.simulate)")
        if dag.custom is not None:
            raise AnalysisInputError("the Monte Carlo kernel does not model custom resources; "
                                     "use the event simulator (sim.simulate)")
        self.dag, self.cluster, self.policy = dag, cluster, policy
        predicted = np.asarray(predicted, dtype=np.float64)
        keys, self.flat, self.best = _POLICIES[policy]
        prio = -dag.priority.astype(np.float64)
        if keys == "priority":
            cols = (prio,)
        else:
            self.bottom = analyse(dag, predicted).bottom_level
            cols = (prio, -self.bottom)
        # dense rank of the static key, lexicographic (ties keep ready order through the sequence number)
        order = np.lexsort(tuple(reversed(cols)))
        stacked = np.stack(cols, axis=1)[order]
        new = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            new[1:] = np.any(stacked[1:] != stacked[:-1], axis=1)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.cumsum(new) - 1
        self.rank = rank
        self.scan_limit = int(scan_limit)
        nodes = cluster.nodes
        self.cap = (np.array([x.cpus for x in nodes], dtype=np.float64),
                    np.array([x.memory for x in nodes], dtype=np.float64),
                    np.array([x.gpus for x in nodes], dtype=np.float64))
        too_big = [dag.ids[i] for i in range(dag.n)
                   if not any(dag.cpus[i] <= x.cpus + EPS and dag.memory[i] <= x.memory + EPS
                              and dag.gpus[i] <= x.gpus + EPS for x in nodes)]
        if too_big:
            biggest = max(range(len(nodes)), key=lambda i: (nodes[i].cpus, nodes[i].memory))
            raise AnalysisInputError(
                f"{len(too_big)} task(s) fit on no node of the cluster (e.g. '{too_big[0]}' needs "
                f"{dag.cpus[dag.index[too_big[0]]]:g} cpus / {dag.memory[dag.index[too_big[0]]] / 2**30:.3g} GiB; "
                f"the largest node has {nodes[biggest].cpus:g} cpus / {nodes[biggest].memory / 2**30:.3g} GiB)")

    def _args(self):
        d = self.dag
        return (self.rank, d.in_degree.astype(np.int64), d.children_ptr, d.children, d.cpus, d.memory, d.gpus,
                *self.cap, self.flat, self.best, self.scan_limit)

    def makespans(self, durations: np.ndarray) -> np.ndarray:
        durations = np.ascontiguousarray(np.atleast_2d(durations), dtype=np.float64)
        return _makespans(durations, *self._args())

    def run(self, durations: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """One run: (makespan, start, end) per task; makespan -1 when some task could never start."""
        n = self.dag.n
        start, end, cause = np.zeros(n), np.zeros(n), np.full(n, -1, dtype=np.int64)
        ms = _simulate(np.ascontiguousarray(durations, dtype=np.float64), *self._args(), start, end, cause, True)
        return float(ms), start, end

    def trace(self, durations: np.ndarray) -> Trace:
        durations = np.ascontiguousarray(np.atleast_2d(durations), dtype=np.float64)
        d = self.dag
        ms, crit, wait = _traced(durations, d.parents_ptr, d.parents, *self._args())
        return Trace(ms, crit.mean(axis=0), wait.mean(axis=0, dtype=np.float64))

    def gains(self, durations: np.ndarray, tasks: np.ndarray | None = None, speedup: float = 0.3) -> np.ndarray:
        """Drop in mean makespan when each task (all by default) runs `speedup` faster, over the same draws
        (common random numbers: the difference has far less noise than either mean)."""
        durations = np.ascontiguousarray(np.atleast_2d(durations), dtype=np.float64)
        if tasks is None:
            tasks = np.arange(self.dag.n)
        tasks = np.asarray(tasks, dtype=np.int64)
        base = float(self.makespans(durations).mean())
        return base - _gains(durations, tasks, 1.0 - speedup, *self._args())


__all__ = ["ListScheduler", "Trace", "SUPPORTED_POLICIES", "simulate_one"]

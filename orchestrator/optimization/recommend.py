"""Changes that make a workflow finish sooner, each measured in the simulator before it is offered.

Every candidate (raise the priority of the tasks that matter, more cpus for a bottleneck, bigger-memory nodes when
memory is what tasks wait for, split a heavy task into parallel parts, fuse a chain of tiny tasks, add nodes) is
run on the same sampled durations as the workflow as it is (common random numbers: a part of a split task takes
its task's draw / k, a fused task the sum of its chain's draws), and offered only when its gain in expected
makespan is positive and clear of the noise (above 2.5 standard errors of the paired difference). Each offer can
`apply` itself to the workflow: a new, valid Workflow whose task ids are kept except for split and fused tasks.
`best_single_change` tries every candidate of every task (the yardstick for the top recommendation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..dag import DagArrays
from ..model import TaskSpec, Workflow, format_bytes, ref_names
from ..sim.cluster import Cluster, NodeSpec
from .analysis import (AnalysisReport, Problem, analyze, build_dag, build_problem, describe_cluster, resized,
                       seconds_text)
from .durations import AnalysisInputError, DurationHistory
from .montecarlo import ListScheduler

NOISE_SE = 2.5  # a gain must exceed this many standard errors of the paired difference to be offered
MIN_GAIN_SHARE = 1e-3  # and 0.1% of the expected makespan
SPLIT_PARTS = (2, 4)
MAX_FUSE_CHAINS = 20
KINDS = ("priority", "more-cpus", "more-memory", "split", "fuse", "add-nodes")


@dataclass(frozen=True)
class Change:
    """A candidate change: how it alters the arrays the simulator runs (for measuring) and the workflow (to apply).

    `columns[j]` lists the (old task, factor) pairs whose draws sum to the new task j's duration (None: the same
    tasks in the same order)."""

    kind: str
    targets: tuple[str, ...]
    description: str
    dag: DagArrays
    cluster: Cluster
    columns: list[list[tuple[int, float]]] | None
    apply_to: Callable[[Workflow], Workflow] = field(repr=False, compare=False)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recommendation:
    """A change with its effect measured in the Monte Carlo (seconds): before and after, on the same draws."""

    kind: str
    targets: tuple[str, ...]
    description: str
    mean_before: float
    mean_after: float
    gain: float
    gain_pct: float
    stderr: float
    p90_before: float
    p90_after: float
    samples: int
    params: dict[str, Any]
    change: Change = field(repr=False)

    @property
    def offered(self) -> bool:
        """Clearly better: a positive gain above the noise and above 0.1% of the makespan."""
        return self.gain > max(NOISE_SE * self.stderr, MIN_GAIN_SHARE * self.mean_before, 0.0)

    def apply(self, workflow: Workflow) -> Workflow:
        """The workflow with this change: a new valid Workflow (the cluster part of a change is `cluster_after`)."""
        return self.change.apply_to(workflow)

    @property
    def cluster_after(self) -> Cluster:
        return self.change.cluster

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "targets": list(self.targets), "description": self.description,
                "mean_before": self.mean_before, "mean_after": self.mean_after, "gain": self.gain,
                "gain_pct": self.gain_pct, "stderr": self.stderr, "p90_before": self.p90_before,
                "p90_after": self.p90_after, "samples": self.samples, "params": self.params,
                "cluster_after": describe_cluster(self.change.cluster)}


@dataclass
class Recommendations:
    """Offered changes best first, the candidates that were measured and not offered, and the figures before."""

    workflow: str
    cluster: str
    policy: str
    mean: float
    p90: float
    samples: int
    offered: list[Recommendation]
    rejected: list[Recommendation]
    seconds: float
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "cluster": self.cluster, "policy": self.policy, "mean": self.mean,
                "p90": self.p90, "samples": self.samples, "seconds": self.seconds, "notes": self.notes,
                "recommendations": [r.to_dict() for r in self.offered],
                "rejected": [{"kind": r.kind, "targets": list(r.targets), "gain": r.gain, "stderr": r.stderr}
                             for r in self.rejected]}


# ------------------------------------------------------------------------------------------------ measuring

@dataclass
class _Base:
    """The workflow as it is, with the draws every candidate is measured on."""

    problem: Problem
    draws: np.ndarray
    makespans: np.ndarray
    overhead: float

    @property
    def mean(self) -> float:
        return float(self.makespans.mean())


def _base(problem: Problem, samples: int, seed: int, overhead: float) -> _Base:
    draws = problem.draws(samples, seed)
    ls = ListScheduler(problem.dag, problem.cluster, problem.predicted, problem.policy)
    return _Base(problem, draws, ls.makespans(draws + overhead), overhead)


def _mapped(values: np.ndarray, columns: list[list[tuple[int, float]]] | None) -> np.ndarray:
    """values [..., n] -> [..., n'] with column j = sum of factor x values[..., i] over columns[j]."""
    if columns is None:
        return values
    out = np.zeros(values.shape[:-1] + (len(columns),))
    for j, parts in enumerate(columns):
        for i, f in parts:
            out[..., j] += f * values[..., i]
    return out


def measure(base: _Base, change: Change) -> Recommendation:
    """Run the changed workflow on the base's draws: the paired difference gives the gain and its noise."""
    p = base.problem
    predicted = _mapped(p.predicted, change.columns)
    draws = _mapped(base.draws, change.columns) + base.overhead
    ls = ListScheduler(change.dag, change.cluster, predicted, p.policy)
    after = ls.makespans(draws)
    if np.any(after < 0):
        raise AnalysisInputError(f"change {change.kind} {change.targets}: some task no longer fits a node")
    diff = base.makespans - after
    s = len(diff)
    se = float(diff.std(ddof=1) / math.sqrt(s)) if s > 1 else 0.0
    before = base.mean
    gain = float(diff.mean())
    return Recommendation(change.kind, change.targets, change.description, before, float(after.mean()), gain,
                          100 * gain / before if before > 0 else 0.0, se, float(np.percentile(base.makespans, 90)),
                          float(np.percentile(after, 90)), s, dict(change.params), change)


# ------------------------------------------------------------------------------------------------ candidates

class _Builder:
    """Builds candidate changes of one problem (a workflow before it runs)."""

    def __init__(self, problem: Problem):
        if problem.done or problem.running.any():
            raise AnalysisInputError("recommendations are for a workflow before it runs (no status)")
        self.p = problem
        self.wf = problem.workflow
        self.dag = problem.dag
        self.mean = problem.predicted
        self.by_id = {t.id: t for t in self.wf.tasks}
        self.ids = set(self.by_id)
        referenced: set[str] = set()
        for t in self.wf.tasks:
            referenced.update(r for r in ref_names(t.args, t.kwargs) if isinstance(r, str))
        self.referenced = referenced
        self.mean_of = {tid: float(self.mean[i]) for i, tid in enumerate(self.dag.ids)}

    # -- priority
    def priority(self, targets: list[int], why: str) -> Change | None:
        dag = self.dag
        top = int(dag.priority.max(initial=0)) + 1
        if not targets or all(dag.priority[i] >= top for i in targets):
            return None
        prio = dag.priority.copy()
        prio[targets] = top
        names = tuple(dag.ids[i] for i in targets)
        shown = _names(names)

        def apply_to(wf: Workflow) -> Workflow:
            raise_to = max((t.priority for t in wf.tasks), default=0) + 1
            tasks = [t.model_copy(update={"priority": raise_to}) if t.id in names else t for t in wf.tasks]
            return _rebuilt(wf, tasks, f"priority of {len(names)} task(s) raised")

        return Change("priority", names, f"raise the priority of {shown} ({why}) above every other task, so "
                      "they start first whenever they are ready", replace(dag, priority=prio), self.p.cluster, None,
                      apply_to, {"priority": top})

    # -- more cpus
    def more_cpus(self, i: int) -> Change | None:
        dag, tid = self.dag, self.dag.ids[i]
        task = self.by_id[tid]
        old = float(dag.cpus[i])
        room = max(x.cpus for x in self.p.cluster.nodes)
        new = min(max(2 * old, 1.0), room)
        if old <= 0 or new < 1.25 * old or self.mean[i] <= 0:
            return None
        obs = task.observed
        if obs is not None and obs.avg_cpu is not None and obs.avg_cpu < 0.75 * old:
            return None  # it does not use the cpus it has: more would not make it faster
        ratio = old / new
        cpus = dag.cpus.copy()
        cpus[i] = new
        mean = self.mean_of[tid] * ratio

        def apply_to(wf: Workflow) -> Workflow:
            tasks = [t.model_copy(update={"resources": t.resources.model_copy(update={"cpus": new}),
                                          "duration": mean, "observed": None}) if t.id == tid else t
                     for t in wf.tasks]
            return _rebuilt(wf, tasks, f"'{tid}' given {new:g} cpus")

        return Change("more-cpus", (tid,), f"give '{tid}' {new:g} cpus instead of {old:g}, assuming its runtime "
                      f"scales with cpus ({seconds_text(self.mean_of[tid])} -> {seconds_text(mean)}); check that it "
                      "can use them", replace(dag, cpus=cpus),
                      self.p.cluster, [[(j, ratio if j == i else 1.0)] for j in range(dag.n)], apply_to,
                      {"cpus_before": old, "cpus_after": new, "assumes": "runtime inversely proportional to cpus"})

    # -- bigger-memory nodes
    def more_memory(self, waiting: list[int]) -> Change:
        cluster = self.p.cluster
        nodes = tuple(NodeSpec(x.name, x.cpus, 2 * x.memory, x.gpus, x.node_type, x.custom) for x in cluster.nodes)
        names = tuple(self.dag.ids[i] for i in waiting)
        return Change("more-memory", names, f"nodes with twice the memory ({format_bytes(cluster.nodes[0].memory)} -> "
                      f"{format_bytes(nodes[0].memory)} each): memory is what {_names(names) or 'tasks'} wait for",
                      self.dag, Cluster(nodes), None,
                      lambda wf: _rebuilt(wf, list(wf.tasks), "cluster: nodes with twice the memory"),
                      {"memory_factor": 2.0, "cluster_after": describe_cluster(Cluster(nodes))})

    # -- add nodes
    def add_nodes(self, count: int) -> Change | None:
        cluster = self.p.cluster
        if count <= len(cluster):
            return None
        after = resized(cluster, count)
        big = after.nodes[-1]
        k = count - len(cluster)
        return Change("add-nodes", (), f"add {k} node{'s' if k > 1 else ''} of ({big.cpus:g} cpus, "
                      f"{format_bytes(big.memory)}): {len(cluster)} -> {count} nodes", self.dag, after, None,
                      lambda wf: _rebuilt(wf, list(wf.tasks), f"cluster: {describe_cluster(after)}"),
                      {"nodes_before": len(cluster), "nodes_after": count})

    # -- split
    def splittable(self, i: int) -> bool:
        tid = self.dag.ids[i]
        t = self.by_id[tid]
        return (self.mean[i] > 0 and tid not in self.referenced and t.entrypoint_kind != "shell"
                and all(f"{tid}.part{j}" not in self.ids for j in range(max(SPLIT_PARTS))))

    def split(self, i: int, k: int) -> Change | None:
        if not self.splittable(i):
            return None
        dag, tid = self.dag, self.dag.ids[i]
        parts = [f"{tid}.part{j}" for j in range(k)]
        n = dag.n
        # new task order: every other task keeps its place, the parts replace task i (part 0 in its place)
        new_ids = list(dag.ids[:i]) + parts + list(dag.ids[i + 1:])
        pos = {t: j for j, t in enumerate(new_ids)}
        src, dst = [], []
        for a, b in zip(dag.src.tolist(), dag.dst.tolist()):
            for x in (parts if a == i else [dag.ids[a]]):
                for y in (parts if b == i else [dag.ids[b]]):
                    src.append(pos[x])
                    dst.append(pos[y])

        def spread(values: np.ndarray) -> np.ndarray:
            return np.concatenate([values[:i], np.repeat(values[i], k), values[i + 1:]])

        duration = spread(dag.duration)
        duration[i:i + k] /= k
        new_dag = build_dag(tuple(new_ids), np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), duration,
                            spread(dag.cpus), spread(dag.memory), spread(dag.gpus), spread(dag.priority))
        columns = [[(j, 1.0)] for j in range(i)] + [[(i, 1.0 / k)] for _ in range(k)] + \
                  [[(j, 1.0)] for j in range(i + 1, n)]
        mean = self.mean_of[tid] / k
        python = self.by_id[tid].entrypoint_kind == "python"

        def apply_to(wf: Workflow) -> Workflow:
            tasks = []
            for t in wf.tasks:
                if t.id == tid:
                    for j, name in enumerate(parts):
                        extra = {"kwargs": {**t.kwargs, "part": j, "parts": k}} if python else {}
                        tasks.append(TaskSpec.model_validate({**t.model_dump(exclude={"observed"}), "id": name,
                                                              "category": t.category, "duration": mean, **extra}))
                elif tid in t.depends_on:
                    deps = [d for d in t.depends_on if d != tid]
                    at = t.depends_on.index(tid)
                    tasks.append(t.model_copy(update={"depends_on": deps[:at] + parts + deps[at:]}))
                else:
                    tasks.append(t)
            return _rebuilt(wf, tasks, f"'{tid}' split into {k} parts")

        code = (f"; its function gets part=j, parts={k} as keyword arguments and must do its share"
                if python else "")
        return Change("split", (tid,), f"split '{tid}' ({seconds_text(self.mean_of[tid])}) into {k} parallel parts "
                      f"of {seconds_text(mean)} each, with the same parents and children{code}", new_dag,
                      self.p.cluster, columns, apply_to, {"parts": k, "new_tasks": parts})

    # -- fuse
    def chains(self, tiny: float | None) -> list[list[int]]:
        """Maximal chains of at least two tasks linked one to one (single child -> single parent), of tasks whose
        mean duration is at most `tiny` (None: any), without code to merge or results referred to."""
        dag = self.dag
        ind, outd = dag.in_degree, dag.out_degree

        def ok(i: int) -> bool:
            t = self.by_id[dag.ids[i]]
            return (tiny is None or self.mean[i] <= tiny) and t.entrypoint is None and dag.ids[i] not in \
                self.referenced

        def link(i: int) -> int:  # the next task of a one-to-one link, or -1
            if outd[i] != 1:
                return -1
            c = int(dag.children_of(i)[0])
            return c if ind[c] == 1 and ok(c) else -1

        has_prev = np.zeros(dag.n, dtype=bool)
        for i in range(dag.n):
            if ok(i):
                c = link(i)
                if c >= 0:
                    has_prev[c] = True
        out = []
        for i in range(dag.n):
            if not ok(i) or has_prev[i]:
                continue
            chain = [i]
            c = link(i)
            while c >= 0:
                chain.append(c)
                c = link(c)
            if len(chain) >= 2:
                out.append(chain)
        return out

    def fuse(self, chain: list[int]) -> Change | None:
        dag = self.dag
        names = [dag.ids[i] for i in chain]
        fused = f"{names[0]}..{names[-1]}"
        if fused in self.ids or len(fused) > 200:
            fused = f"fused-{names[0]}-{len(names)}"
            if fused in self.ids or len(fused) > 200:
                return None
        first, members = chain[0], set(chain)
        keep = [j for j in range(dag.n) if j not in members or j == first]
        new_ids = tuple(fused if j == first else dag.ids[j] for j in keep)
        pos = {j: k for k, j in enumerate(keep)}
        last = chain[-1]
        src, dst = [], []
        for a, b in zip(dag.src.tolist(), dag.dst.tolist()):
            if a in members and b in members:
                continue
            src.append(pos[first] if a == last else pos[a])
            dst.append(pos[first] if b == first else pos[b])
        sel = np.array(keep)

        def merged(values: np.ndarray, how) -> np.ndarray:
            out = values[sel].astype(values.dtype, copy=True)
            out[pos[first]] = how(values[chain])
            return out

        new_dag = build_dag(new_ids, np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64),
                            merged(dag.duration, np.sum), merged(dag.cpus, np.max), merged(dag.memory, np.max),
                            merged(dag.gpus, np.max), merged(dag.priority, np.max))
        columns = [[(int(j), 1.0) for j in chain] if j == first else [(j, 1.0)] for j in keep]
        total = float(sum(self.mean_of[t] for t in names))
        specs = [self.by_id[t] for t in names]

        def apply_to(wf: Workflow) -> Workflow:
            cats = {t.category for t in specs}
            res = specs[0].resources.model_copy(update={
                "cpus": max(t.resources.cpus for t in specs), "memory": max(t.resources.memory for t in specs),
                "gpus": max(t.resources.gpus for t in specs)})
            timeouts = [t.timeout for t in specs]
            one = TaskSpec(id=fused, category=cats.pop() if len(cats) == 1 else "fused",
                           depends_on=list(specs[0].depends_on), resources=res,
                           retries=max(t.retries for t in specs), priority=max(t.priority for t in specs),
                           timeout=sum(timeouts) if all(x is not None for x in timeouts) else None,
                           input_bytes=specs[0].input_bytes, output_bytes=specs[-1].output_bytes, duration=total)
            tasks = []
            for t in wf.tasks:
                if t.id == names[0]:
                    tasks.append(one)
                elif t.id in names:
                    continue
                elif names[-1] in t.depends_on:
                    tasks.append(t.model_copy(update={"depends_on": [fused if d == names[-1] else d
                                                                     for d in t.depends_on]}))
                else:
                    tasks.append(t)
            return _rebuilt(wf, tasks, f"{len(names)} tasks fused into '{fused}'")

        return Change("fuse", tuple(names), f"fuse the chain of {len(names)} tiny tasks {_names(tuple(names))} "
                      f"({seconds_text(total)} in all) into one task '{fused}': it waits for room once instead of "
                      f"{len(names)} times", new_dag, self.p.cluster, columns, apply_to,
                      {"new_task": fused, "tasks": len(names)})


def _names(names: tuple[str, ...], show: int = 3) -> str:
    shown = ", ".join(f"'{t}'" for t in names[:show])
    return shown + (f" and {len(names) - show} more" if len(names) > show else "")


def _rebuilt(wf: Workflow, tasks: list[TaskSpec], what: str) -> Workflow:
    """A new validated workflow with these tasks; its metadata lists the optimisations applied."""
    done = list(wf.metadata.get("optimizations", [])) + [what]
    return Workflow(name=wf.name, tasks=tasks, family=wf.family, policy=wf.policy,
                    metadata={**wf.metadata, "optimizations": done})


# ------------------------------------------------------------------------------------------------ the entry points

def _problem(workflow: Workflow, cluster: Cluster | None, history: DurationHistory | None,
             policy: str | None) -> Problem:
    return build_problem(workflow, cluster, history=history, policy=policy)[0]


def recommend(workflow: Workflow, cluster: Cluster | None = None, *, history: DurationHistory | None = None,
              policy: str | None = None, samples: int = 400, seed: int = 0, report: AnalysisReport | None = None,
              task_overhead: float = 0.0, top: int = 5) -> Recommendations:
    """Candidate changes guided by the analysis (its bottlenecks, waits and tiny chains), each measured on the
    same `samples` draws; the ones clearly better are offered, best first. `task_overhead` (seconds) is added to
    every task's duration (what the runtime spends per task: it makes fusing measurable)."""
    t0 = time.perf_counter()
    problem = _problem(workflow, cluster, history, policy)
    if report is None or tuple(report.task_ids) != problem.dag.ids or report.policy != problem.policy:
        report = analyze(workflow, problem.cluster, history=history, policy=problem.policy, samples=1000,
                         seed=seed, budget=1.0)
    b = _Builder(problem)
    base = _base(problem, samples, seed, task_overhead)
    dag = problem.dag
    gain = np.asarray(report.task_gain) if report.task_gain is not None else problem.predicted
    index = dag.index
    bottlenecks = [index[x.name] for x in report.task_bottlenecks if x.name in index]
    ranked = bottlenecks + [int(i) for i in np.argsort(-gain, kind="stable") if gain[i] > 0 and i not in bottlenecks]
    ranked = ranked[:top]
    crit = np.asarray(report.criticality) if report.criticality is not None else np.zeros(dag.n)
    wait = np.asarray(report.wait) if report.wait is not None else np.zeros(dag.n)
    changes: list[Change | None] = []
    if ranked:
        changes.append(b.priority(ranked, "the bottlenecks found by the analysis"))
    critical = [int(i) for i in np.flatnonzero(crit >= 0.5)]
    if critical and set(critical) != set(ranked):
        changes.append(b.priority(critical, "on the critical path in at least half of the samples"))
    for i in ranked:
        changes.append(b.more_cpus(i))
    for i in ranked:
        changes.extend(b.split(i, k) for k in SPLIT_PARTS)
    tiny = max(1.0, 0.01 * report.makespan.critical_path)
    chains = sorted(b.chains(tiny), key=len, reverse=True)[:MAX_FUSE_CHAINS]
    changes.extend(b.fuse(c) for c in chains)
    waiting = [int(i) for i in np.argsort(-wait)[:5] if wait[i] > 0]
    if waiting and _memory_bound(problem, waiting):
        changes.append(b.more_memory(waiting))
    n = len(problem.cluster)
    for count in sorted({n + 1, math.ceil(1.25 * n), 2 * n}):
        changes.append(b.add_nodes(count))
    measured = [measure(base, c) for c in changes if c is not None]
    best: dict[tuple[str, tuple[str, ...]], Recommendation] = {}
    rejected = [r for r in measured if not r.offered]
    for r in sorted((r for r in measured if r.offered), key=lambda r: -r.gain):
        key = (r.kind, r.targets if r.kind != "add-nodes" else (str(r.params["nodes_after"]),))
        best.setdefault(key, r)  # one offer per kind and targets: the better of two splits of a task
    offered = list(best.values())
    notes = []
    if not offered:
        notes.append("no change measured clearly better than the workflow as it is")
    return Recommendations(workflow.name, describe_cluster(problem.cluster), problem.policy, base.mean,
                           float(np.percentile(base.makespans, 90)), samples, offered, rejected,
                           time.perf_counter() - t0, notes)


def _memory_bound(problem: Problem, tasks: list[int]) -> bool:
    big = max(problem.cluster.nodes, key=lambda x: (x.cpus, x.memory))
    dag = problem.dag
    return float((dag.memory[tasks] / big.memory).mean()) > float((dag.cpus[tasks] / big.cpus).mean())


def all_changes(problem: Problem, tasks: list[int] | None = None) -> list[Change]:
    """Every candidate change of every task (or of `tasks`): priority, more cpus, split in 2 and 4, fuse each
    maximal chain, bigger-memory nodes, more nodes."""
    b = _Builder(problem)
    dag = problem.dag
    tasks = list(range(dag.n)) if tasks is None else tasks
    changes: list[Change | None] = []
    for i in tasks:
        changes.append(b.priority([i], "one task"))
        changes.append(b.more_cpus(i))
        changes.extend(b.split(i, k) for k in SPLIT_PARTS)
    chains = b.chains(None)
    changes.extend(b.fuse(c) for c in chains)
    changes.append(b.more_memory([]))
    n = len(problem.cluster)
    for count in sorted({n + 1, math.ceil(1.25 * n), 2 * n}):
        changes.append(b.add_nodes(count))
    return [c for c in changes if c is not None]


def best_single_change(workflow: Workflow, cluster: Cluster | None = None, *,
                       history: DurationHistory | None = None, policy: str | None = None, samples: int = 200,
                       seed: int = 0, task_overhead: float = 0.0, kinds: tuple[str, ...] = KINDS,
                       tasks: list[str] | None = None) -> list[Recommendation]:
    """Try every candidate change (`all_changes`; of `tasks` only, when given) on the same draws and return them
    all, best first. Costs one Monte Carlo of `samples` per candidate: about 4 per task, plus the chains and the
    cluster changes."""
    problem = _problem(workflow, cluster, history, policy)
    base = _base(problem, samples, seed, task_overhead)
    unknown = [t for t in tasks or [] if t not in problem.dag.index]
    if unknown:
        raise AnalysisInputError(f"workflow '{workflow.name}' has no task '{unknown[0]}'")
    chosen = None if tasks is None else [problem.dag.index[t] for t in tasks]
    measured = [measure(base, c) for c in all_changes(problem, chosen) if c.kind in kinds]
    return sorted(measured, key=lambda r: -r.gain)


def verify(recommendation: Recommendation, workflow: Workflow, cluster: Cluster | None = None, *,
           history: DurationHistory | None = None, policy: str | None = None, samples: int = 400,
           seed: int = 1, task_overhead: float = 0.0) -> Recommendation:
    """Measure a recommendation again, end to end and on fresh draws (another seed): apply it to the workflow and
    run both workflows, the changed one built from the Workflow `apply` returns. A task keeps its draw by id; a new
    task's draw comes from the tasks it was made of, as in the measurement (a part of a split task: its task's
    draw / k; a fused task: the sum of its chain's draws)."""
    before_problem = _problem(workflow, cluster, history, policy)
    after_wf = recommendation.apply(workflow)
    after_problem = build_problem(after_wf, recommendation.cluster_after, history=history,
                                  policy=before_problem.policy)[0]
    change = recommendation.change
    made_of = {} if change.columns is None else dict(zip(change.dag.ids, change.columns))
    index = before_problem.dag.index
    columns = []
    for t in after_problem.dag.ids:
        if t in made_of:
            columns.append(made_of[t])
        elif t in index:
            columns.append([(index[t], 1.0)])
        else:
            raise AnalysisInputError(f"the changed workflow has a task '{t}' the change did not describe")
    before = before_problem.draws(samples, seed)
    after = _mapped(before, columns)
    ms_before = ListScheduler(before_problem.dag, before_problem.cluster, before_problem.predicted,
                              before_problem.policy).makespans(before + task_overhead)
    ms_after = ListScheduler(after_problem.dag, after_problem.cluster, after_problem.predicted,
                             after_problem.policy).makespans(after + task_overhead)
    diff = ms_before - ms_after
    se = float(diff.std(ddof=1) / math.sqrt(samples)) if samples > 1 else 0.0
    m = float(ms_before.mean())
    return Recommendation(recommendation.kind, recommendation.targets, recommendation.description, m,
                          float(ms_after.mean()), float(diff.mean()), 100 * float(diff.mean()) / m if m > 0 else 0.0,
                          se, float(np.percentile(ms_before, 90)), float(np.percentile(ms_after, 90)), samples,
                          dict(recommendation.params), recommendation.change)


__all__ = ["recommend", "best_single_change", "all_changes", "verify", "measure", "Recommendation",
           "Recommendations", "Change", "KINDS"]

"""Heuristic scheduling policies. Each orders the ready queue by the user's task priority first, then by its rule.

- fifo: tasks in the order they became ready, first node that fits (a plain task queue, as Ray's default).
- job-fifo: whole workflows in arrival order; within one, tasks in ready order.
- srpt-cp: the workflow with the least remaining predicted work first; within it, the task with the longest
  predicted path to the end (critical path first).
- sjf-cp: the workflow with the least total predicted work (fixed at its arrival) first; critical path first within.
- weighted-fair: each workflow gets a cpu share proportional to (its remaining predicted work) ** alpha and starts
  its tasks critical path first within it; what is left goes to the workflows holding the least of their share
  (Decima's tuned weighted-fair baseline, Mao et al., SIGCOMM 2019; alpha from `orchestrator tune heuristics`).
- heft: highest upward rank (bottom level on predicted durations) first, over all workflows; best-fit node.
- tetris: multi-resource packing: among the first tasks by SRPT order, start the (task, node) pair whose demand
  best aligns with the node's free resources, with a bias toward short remaining work (Grandl et al., 2014).
- random: a seeded random order (a sanity floor).
"""

from __future__ import annotations

import heapq
import math
import random as _random
from itertools import groupby
from operator import attrgetter
from typing import Any

import numpy as np

from ..errors import PolicyError
from .interface import (
    EPS,
    TASK_RUNNING,
    Decision,
    JobView,
    NodeView,
    ReadyTask,
    SchedulingPolicy,
    SchedulingState,
    first_fit,
    iter_first,
)
from .tuning import tuned_alpha


_cpus_of = attrgetter("cpus")
_job_of = attrgetter("job")
_priority_of = attrgetter("priority")


class FifoPolicy(SchedulingPolicy):
    name = "fifo"
    description = "tasks in ready order, first node that fits (a plain task queue)"

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, task.ready_time)


class JobFifoPolicy(SchedulingPolicy):
    name = "job-fifo"
    description = "workflows in arrival order; tasks in ready order within a workflow"
    orders_jobs = True

    def job_key(self, job: JobView) -> tuple:
        return (-job.priority, job.arrival)

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, task.ready_time)


class SrptCriticalPathPolicy(SchedulingPolicy):
    name = "srpt-cp"
    description = "least remaining predicted work first; longest path to the end first within a workflow"
    orders_jobs = True

    def job_key(self, job: JobView) -> tuple:
        return (-job.priority, job.remaining_work)

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, -float(job.analysis.bottom_level[task.task]))


def total_predicted_work(job: JobView) -> float:
    """A job's predicted cpu-seconds over all its tasks (its `remaining_work` when it arrives)."""
    return float((job.predicted * job.dag.cpus).sum())


class SjfCriticalPathPolicy(SchedulingPolicy):
    name = "sjf-cp"
    description = ("least total predicted work first (fixed at arrival; ties: earliest arrival); longest path to "
                   "the end first within a workflow")
    orders_jobs = True

    def __init__(self) -> None:
        self._total_work: dict[int, float] = {}  # job id -> its total predicted work, taken at arrival

    def reset(self, seed: int | None = None) -> None:
        self._total_work.clear()

    def on_job_arrival(self, job: JobView) -> None:
        self._total_work[job.id] = total_predicted_work(job)

    def job_key(self, job: JobView) -> tuple:
        work = self._total_work.get(job.id)
        if work is None:  # an engine that did not announce the job: its total now (the same number)
            work = self._total_work[job.id] = total_predicted_work(job)
        return (-job.priority, work, job.arrival)

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, -float(job.analysis.bottom_level[task.task]))


def best_fit(task: ReadyTask, free_cpus: list[float], free_memory: list[float], free_gpus: list[float],
             nodes: NodeView) -> int | None:
    """The fitting node left with the least free cpu (ties: least memory), keeping large holes for large tasks."""
    best, best_left = None, None
    c, m, g = task.cpus - EPS, task.memory - EPS, task.gpus - EPS
    allowed = task.allowed
    for i in range(len(free_cpus)):
        if free_cpus[i] >= c and free_memory[i] >= m and free_gpus[i] >= g and (allowed is None or i in allowed):
            left = (free_cpus[i] - task.cpus, free_memory[i] - task.memory)
            if best_left is None or left < best_left:
                best, best_left = i, left
    return best


class HeftPolicy(SchedulingPolicy):
    name = "heft"
    description = "highest upward rank (predicted bottom level) first across workflows; best-fit node"

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, -float(job.analysis.bottom_level[task.task]), task.ready_time)

    def place(self, task, nodes, free_cpus, free_memory, free_gpus):
        # Nodes run at one speed, so every fitting node gives the same earliest finish; best fit packs.
        return best_fit(task, free_cpus, free_memory, free_gpus, nodes)


class TetrisPolicy(SrptCriticalPathPolicy):
    name = "tetris"
    description = "multi-resource packing: best (task, node) alignment among the first SRPT candidates"
    candidates = 32
    srpt_weight = 0.5

    def schedule(self, state: SchedulingState) -> list[Decision]:
        nodes = state.nodes
        free_c, free_m, free_g = list(nodes.free_cpus), list(nodes.free_memory), list(nodes.free_gpus)
        cap_c = max(nodes.cap_cpus) or 1.0
        cap_m = max(nodes.cap_memory) or 1.0
        pool = list(iter_first(state.ready(), self.candidates))
        if not pool:
            return []
        jobs = state.jobs
        work = [jobs[t.job].remaining_work for t in pool]
        max_work = max(work) or 1.0
        weight = self.srpt_weight
        # Free resources only shrink during this call: a node too full for every candidate now stays so.
        least_c = min(map(_cpus_of, pool)) - EPS
        node_range = [i for i in range(len(free_c)) if free_c[i] >= least_c]
        decisions: list[Decision] = []
        while pool and max(free_c) > EPS:
            best = None
            best_score = -1e300
            most_c, most_m = max(free_c), max(free_m)
            for k, t in enumerate(pool):
                c, m = t.cpus - EPS, t.memory - EPS
                if c > most_c or m > most_m:  # fits on no node
                    continue
                g, allowed = t.gpus - EPS, t.allowed
                dc, dm = t.cpus / cap_c, t.memory / cap_m
                penalty = weight * (work[k] / max_work) * (dc + dm)
                bonus = 1e-6 * t.priority
                for i in node_range:
                    if free_c[i] >= c and free_m[i] >= m and free_g[i] >= g and (allowed is None or i in allowed):
                        score = dc * free_c[i] / cap_c + dm * free_m[i] / cap_m - penalty + bonus
                        if score > best_score:
                            best, best_score = (k, i), score
            if best is None:
                break
            k, i = best
            t = pool.pop(k)
            work.pop(k)
            free_c[i] -= t.cpus
            free_m[i] -= t.memory
            free_g[i] -= t.gpus
            decisions.append(Decision(t, i))
        return decisions


WORK_FLOOR = 1e-6  # cpu-seconds: a job with (almost) no predicted work left weighs as if it had this much


class WeightedFairPolicy(SchedulingPolicy):
    """Decima's weighted fair sharing (Mao et al., SIGCOMM 2019, its tuned heuristic baseline).

    Every active workflow j has a cpu share `total cpus x w_j / sum of w` with `w_j = (remaining predicted
    cpu-seconds of j) ** alpha`: alpha = -1 favours small workflows, 0 shares equally, +1 in proportion to size.
    Each round, per user priority level (highest first): the workflows with ready tasks, by largest deficit
    (share - cpus held by their running tasks), start their ready tasks critical path first (bottom level) as far
    as their share allows; then, work-conserving (no ready task that fits is left waiting), what still fits goes to
    the workflow with the lowest held/share, one task at a time. First-fit placement. `alpha` defaults to the
    tuned value (`tuning.tuned_alpha`: models/scheduler/heuristics.json), else -1.
    """

    name = "weighted-fair"
    description = ("cpu share per workflow in proportion to (remaining predicted work) ** alpha; critical path "
                   "first within a workflow; leftover cpus to the workflow furthest below its share")
    orders_jobs = True  # the queue groups each job's ready tasks, in critical-path order: one pass reads them

    def __init__(self, alpha: float | None = None):
        alpha = tuned_alpha() if alpha is None else alpha
        if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise PolicyError(f"weighted-fair: alpha must be a finite number, got {alpha!r}")
        self.alpha = float(alpha)

    def job_key(self, job: JobView) -> tuple:
        return (-job.priority, job.arrival)

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, -float(job.analysis.bottom_level[task.task]))

    def shares(self, state: SchedulingState) -> dict[int, float]:
        """The cpu share of every active job (they sum to the cluster's cpus)."""
        alpha = self.alpha
        weights = {job_id: max(job.remaining_work, WORK_FLOOR) ** alpha for job_id, job in state.jobs.items()}
        total = sum(weights.values())
        cpus = sum(state.nodes.cap_cpus)
        if not total > 0 or not math.isfinite(total):  # (weights that under- or overflow): equal shares
            return {job_id: cpus / len(weights) for job_id in weights}
        return {job_id: cpus * w / total for job_id, w in weights.items()}

    @staticmethod
    def held_cpus(job: JobView) -> float:
        """Cpus held by the job's running tasks (those committed ahead included)."""
        running = np.frombuffer(job.status, np.int8) == TASK_RUNNING
        return float(job.dag.cpus[running].sum()) if running.any() else 0.0

    def schedule(self, state: SchedulingState) -> list[Decision]:
        nodes = state.nodes
        free_c, free_m, free_g = list(nodes.free_cpus), list(nodes.free_memory), list(nodes.free_gpus)
        if max(free_c, default=0.0) <= EPS:
            return []
        # Each job's ready tasks in its queue order (priority, then bottom level); jobs in the queue's job order.
        by_job = [(job_id, list(tasks)) for job_id, tasks in groupby(state.ready(), _job_of)]
        if not by_job:
            return []
        shares = self.shares(state)
        jobs = state.jobs
        held = {job_id: self.held_cpus(jobs[job_id]) for job_id, _ in by_job}
        decisions: list[Decision] = []
        fill = _Fill(shares, held, free_c, free_m, free_g, decisions)
        for level in self._priority_levels(by_job):
            if not fill.level(level):
                break  # no cpu left
        return decisions

    @staticmethod
    def _priority_levels(by_job: list[tuple[int, list[ReadyTask]]]) -> list[list[tuple[int, list[ReadyTask]]]]:
        """The jobs' ready tasks split by user priority, highest level first (one level when all are equal)."""
        top = by_job[0][1][0].priority
        if all(tasks[0].priority == top and tasks[-1].priority == top for _, tasks in by_job):
            return [by_job]
        levels: dict[int, list[tuple[int, list[ReadyTask]]]] = {}
        for job_id, tasks in by_job:  # a job's tasks come highest priority first
            for priority, same in groupby(tasks, _priority_of):
                levels.setdefault(priority, []).append((job_id, list(same)))
        return [levels[p] for p in sorted(levels, reverse=True)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "alpha": self.alpha}


def _usage(held: float, share: float) -> float:
    """How much of its share a job holds (held/share; a job with no share comes last)."""
    return held / share if share > 0 else math.inf


class _Fill:
    """One `WeightedFairPolicy.schedule` call's placements on tentative free resources (first fit), and the cpus
    each job holds (`held`, updated as tasks start). Work-conserving: once a level is filled, none of its ready
    tasks would fit on a node it may use."""

    __slots__ = ("shares", "held", "free_c", "free_m", "free_g", "most", "decisions", "started")

    def __init__(self, shares: dict[int, float], held: dict[int, float], free_c: list[float],
                 free_m: list[float], free_g: list[float], decisions: list[Decision]):
        self.shares, self.held = shares, held
        self.free_c, self.free_m, self.free_g = free_c, free_m, free_g
        self.most = [max(free_c), max(free_m), max(free_g)]  # larger tasks fit nowhere (these only shrink)
        self.decisions = decisions
        self.started: set[int] = set()  # seq of the tasks started in this call

    def fits_somewhere(self, task: ReadyTask) -> bool:
        most = self.most
        return task.cpus <= most[0] + EPS and task.memory <= most[1] + EPS and task.gpus <= most[2] + EPS

    def start(self, task: ReadyTask) -> bool:
        """Start the task on the first node it fits (True), or find none (False)."""
        free_c, free_m, free_g = self.free_c, self.free_m, self.free_g
        node = first_fit(task, free_c, free_m, free_g)
        if node is None:
            return False
        free_c[node] -= task.cpus
        free_m[node] -= task.memory
        free_g[node] -= task.gpus
        self.most[:] = max(free_c), max(free_m), max(free_g)
        self.decisions.append(Decision(task, node))
        self.started.add(task.seq)
        self.held[task.job] += task.cpus
        return True

    def level(self, level: list[tuple[int, list[ReadyTask]]]) -> bool:
        """Start tasks of one priority level: jobs by largest deficit, each as far as its share allows; then one
        task at a time to the job with the lowest held/share that has one that fits. False once
        no cpu is left anywhere (a zero-cpu task then waits for the next round, as in list scheduling)."""
        shares, held, most, started = self.shares, self.held, self.most, self.started
        order = {job_id: k for k, (job_id, _) in enumerate(level)}
        tasks_of = dict(level)
        least = {job_id: min(map(_cpus_of, tasks)) for job_id, tasks in level}  # each job's smallest request

        def exhausted() -> bool:
            return most[0] <= EPS

        # 1. Within their share, largest deficit first (ties: queue order).
        for job_id in sorted(tasks_of, key=lambda j: (held[j] - shares[j], order[j])):
            share, smallest = shares[job_id] + EPS, least[job_id]
            for task in tasks_of[job_id]:
                if held[job_id] + smallest > share or smallest > most[0] + EPS:
                    break
                if (held[job_id] + task.cpus <= share and self.fits_somewhere(task) and self.start(task)
                        and exhausted()):
                    return False
        # 2. Work conservation: by lowest held/share (ties: queue order), one task at a time.
        heap = [(_usage(held[j], shares[j]), order[j], j, 0) for j in tasks_of]
        heapq.heapify(heap)
        while heap:
            _, k, job_id, i = heapq.heappop(heap)
            tasks = tasks_of[job_id]
            if least[job_id] > most[0] + EPS:
                continue  # none of its tasks fits any more
            while i < len(tasks):
                task = tasks[i]
                i += 1
                if task.seq not in started and self.fits_somewhere(task) and self.start(task):
                    if exhausted():
                        return False
                    heapq.heappush(heap, (_usage(held[job_id], shares[job_id]), k, job_id, i))
                    break
        return True


class RandomPolicy(SchedulingPolicy):
    name = "random"
    description = "seeded random order, first fit (a sanity floor)"

    def __init__(self, seed: int = 0):
        self._rng = _random.Random(seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = _random.Random(seed)

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, self._rng.random())

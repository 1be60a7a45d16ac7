"""Heuristic scheduling policies. Each orders the ready queue by the user's task priority first, then by its rule.

- fifo: tasks in the order they became ready, first node that fits (a plain task queue, as Ray's default).
- job-fifo: whole workflows in arrival order; within one, tasks in ready order.
- srpt-cp: the workflow with the least remaining predicted work first; within it, the task with the longest
  predicted path to the end (critical path first).
- heft: highest upward rank (bottom level on predicted durations) first, over all workflows; best-fit node.
- tetris: multi-resource packing: among the first tasks by SRPT order, start the (task, node) pair whose demand
  best aligns with the node's free resources, with a bias toward short remaining work (Grandl et al., 2014).
- random: a seeded random order (a sanity floor).
"""

from __future__ import annotations

import random as _random
from operator import attrgetter

from .interface import EPS, Decision, JobView, NodeView, ReadyTask, SchedulingPolicy, SchedulingState, iter_first


_cpus_of = attrgetter("cpus")


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


class RandomPolicy(SchedulingPolicy):
    name = "random"
    description = "seeded random order, first fit (a sanity floor)"

    def __init__(self, seed: int = 0):
        self._rng = _random.Random(seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = _random.Random(seed)

    def task_key(self, task: ReadyTask, job: JobView) -> tuple:
        return (-task.priority, self._rng.random())

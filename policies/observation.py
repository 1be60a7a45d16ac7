"""The learned scheduler's observation of a `SchedulingState`, the same in the simulator, the RL environment and
the runtime: padded arrays (RLlib's new stack has no graph space), rebuilt into a graph batch by the RLModule.

What the policy looks at, every time it picks one task to start:

- **Candidates:** the first `TASKS_PER_JOB` ready tasks (longest predicted path to the end first) of each of the
  first `MAX_JOBS` workflows with ready tasks, workflows ordered by least remaining predicted work (the srpt-cp
  order: the candidates' rank in it is the policy's prior, see `module`).
- **Graph:** the candidates and their children (up to `GRAPH_PER_JOB` tasks per workflow) with the dependencies
  among them; each task's features are the shared featurisation's (`optimization.graph.featurize`, computed once
  per workflow when it arrives, on predicted durations: bottom level, slack, path through, the list schedule of the
  means...) plus its status and absolute times.
- **Workflows:** remaining predicted work and tasks, cpus held, age, ready tasks, priority.
- **Cluster:** free and total cpus, memory and gpus of up to `MAX_NODES` nodes (those with the most free cpus),
  the number of active workflows and the recent offered load (an estimate of the arrival rate).
- **Action mask:** candidate x node pairs where the task fits (resources and custom resources).

Only what is known before a task runs: predicted durations (never the actual ones), requests, the DAG.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from orchestrator.optimization.durations import TaskDurations
from orchestrator.optimization.graph import NODE_FEATURES, featurize
from orchestrator.scheduling.interface import EPS, TASK_READY, TASK_RUNNING, ReadyTask
from orchestrator.sim.cluster import Cluster, NodeSpec

MAX_JOBS = 16  # workflows with candidates
TASKS_PER_JOB = 4  # candidates per workflow
MAX_CANDIDATES = MAX_JOBS * TASKS_PER_JOB
GRAPH_PER_JOB = 16  # graph nodes per workflow: its candidates, then their children
MAX_GRAPH = MAX_JOBS * GRAPH_PER_JOB
MAX_EDGES = 2 * MAX_GRAPH
MAX_NODES = 16  # cluster nodes the policy places on (the ones with the most free cpus, when there are more)
NUM_ACTIONS = MAX_CANDIDATES * MAX_NODES
CV = 0.3  # spread assumed around a predicted duration for the shared featurisation
LOAD_WINDOW = 3600.0  # seconds of arrivals the offered-load estimate looks back over

# Columns of the shared featurisation used (its static, structural ones: status columns change every step).
STATIC_COLUMNS = ("mean", "log_mean", "work_share_x_n", "cpus_of_node", "memory_of_node", "gpus", "log_in_degree",
                  "log_out_degree", "is_sink", "depth", "top_level", "bottom_level", "slack", "path_through",
                  "sched_start", "sched_end", "sched_tail", "category_work_share", "mean_vs_category")
_STATIC_IDX = [NODE_FEATURES.index(c) for c in STATIC_COLUMNS]
DYNAMIC_COLUMNS = ("is_candidate", "ready", "pending", "log_predicted_s", "log_bottom_level_s", "candidate_rank",
                   "job_slot_rank")
GRAPH_FEATURES = len(STATIC_COLUMNS) + len(DYNAMIC_COLUMNS)
JOB_COLUMNS = ("log_remaining_work", "log_remaining_tasks", "held_cpus_share", "log_age", "log_ready", "priority",
               "srpt_rank", "log_max_bottom_level", "work_share")
JOB_FEATURES = len(JOB_COLUMNS)
NODE_COLUMNS = ("free_cpus", "free_memory", "free_gpus", "cap_cpus", "cap_memory", "has_gpus")
NODE_FEATURES_N = len(NODE_COLUMNS)
GLOBAL_COLUMNS = ("free_cpus_share", "free_memory_share", "log_active_jobs", "log_ready_tasks", "offered_load",
                  "log_total_cpus", "log_nodes", "log_remaining_work_per_cpu", "more_jobs")
GLOBAL_FEATURES = len(GLOBAL_COLUMNS)


def _log_s(seconds: float) -> float:
    """Seconds on a log scale around a minute (0 at 0 s, 1 at ~1.7 min, ~4.6 at a day)."""
    return math.log1p(max(seconds, 0.0) / 60.0)


def observation_space():
    """The gymnasium Dict space of `ObservationBuilder.build`."""
    from gymnasium import spaces

    def box(*shape, low=-1e6, high=1e6):
        return spaces.Box(low=low, high=high, shape=shape, dtype=np.float32)

    return spaces.Dict({
        "x": box(MAX_GRAPH, GRAPH_FEATURES),
        "node_mask": box(MAX_GRAPH, low=0, high=1),
        "node_job": box(MAX_GRAPH, low=0, high=MAX_JOBS),
        "edge_index": box(2, MAX_EDGES, low=0, high=MAX_GRAPH),
        "edge_mask": box(MAX_EDGES, low=0, high=1),
        "jobs": box(MAX_JOBS, JOB_FEATURES),
        "job_mask": box(MAX_JOBS, low=0, high=1),
        "cand_node": box(MAX_CANDIDATES, low=0, high=MAX_GRAPH),
        "cand_job": box(MAX_CANDIDATES, low=0, high=MAX_JOBS),
        "cand_rank": box(MAX_CANDIDATES, low=0, high=MAX_CANDIDATES),
        "cand_mask": box(MAX_CANDIDATES, low=0, high=1),
        "nodes": box(MAX_NODES, NODE_FEATURES_N),
        "global": box(GLOBAL_FEATURES),
        "action_mask": box(NUM_ACTIONS, low=0, high=1),
    })


class _JobInfo:
    """What is computed once per workflow: its static graph features and plain lists for the step loop."""

    __slots__ = ("static", "children_ptr", "children", "cpus", "bottom", "pred", "total_work")

    def __init__(self, job, cluster: Cluster):
        dag = job.dag
        pred = np.asarray(job.predicted, dtype=np.float64)
        data = featurize(dag, TaskDurations(pred, np.full(dag.n, CV)), cluster, samples=0)
        self.static = data.x.numpy()[:, _STATIC_IDX].astype(np.float32)
        self.children_ptr = dag.children_ptr
        self.children = dag.children
        self.cpus = np.asarray(dag.cpus, dtype=np.float64)
        self.bottom = np.asarray(job.analysis.bottom_level, dtype=np.float64)
        self.pred = pred
        self.total_work = float((pred * self.cpus).sum())


class ObservationBuilder:
    """Builds observations of a scheduling state; keeps per-workflow features across calls (one per engine)."""

    def __init__(self):
        self._info: dict[int, _JobInfo] = {}
        self._arrivals: deque[tuple[float, float]] = deque()  # (arrival time, predicted cpu work) seen recently
        self._cluster: Cluster | None = None
        self._cluster_key: tuple | None = None

    def reset(self) -> None:
        self._info.clear()
        self._arrivals.clear()

    def _cluster_of(self, nodes) -> Cluster:
        key = (tuple(nodes.cap_cpus), tuple(nodes.cap_memory), tuple(nodes.cap_gpus))
        if key != self._cluster_key:
            self._cluster = Cluster(tuple(NodeSpec(name, c, m, g) for name, c, m, g in
                                          zip(nodes.names, nodes.cap_cpus, nodes.cap_memory, nodes.cap_gpus)))
            self._cluster_key = key
            self._info.clear()  # features depend on the cluster
        return self._cluster

    def info(self, job, nodes) -> _JobInfo:
        cluster = self._cluster_of(nodes)
        info = self._info.get(job.id)
        if info is None:
            info = self._info[job.id] = _JobInfo(job, cluster)
        return info

    def note_arrival(self, job) -> None:
        """A workflow arrived (for the offered-load estimate): its arrival time and predicted cpu work."""
        work = float(np.dot(np.asarray(job.predicted, dtype=np.float64), np.asarray(job.dag.cpus, np.float64)))
        self._arrivals.append((float(job.arrival), work))

    def forget(self, active_ids) -> None:
        """Drop the features of workflows no longer active."""
        gone = [k for k in self._info if k not in active_ids]
        for k in gone:
            del self._info[k]

    def offered_load(self, now: float, total_cpus: float) -> float:
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] < now - LOAD_WINDOW:
            arrivals.popleft()
        span = min(LOAD_WINDOW, max(now, 1.0))
        return sum(w for _, w in arrivals) / (span * max(total_cpus, EPS))

    def build(self, state, heads: list[tuple[int, list[ReadyTask]]]
              ) -> tuple[dict[str, np.ndarray], list[ReadyTask], list[int]]:
        """The observation of `state` with the given candidates (`ReadyQueue.job_heads` of an srpt-ordered
        queue); returns it, the candidate tasks by slot and the node index of each node slot."""
        nodes = state.nodes
        jobs = state.jobs
        now = float(state.now)
        x = np.zeros((MAX_GRAPH, GRAPH_FEATURES), np.float32)
        node_mask = np.zeros(MAX_GRAPH, np.float32)
        node_job = np.zeros(MAX_GRAPH, np.float32)
        edges = np.zeros((2, MAX_EDGES), np.float32)
        edge_mask = np.zeros(MAX_EDGES, np.float32)
        jf = np.zeros((MAX_JOBS, JOB_FEATURES), np.float32)
        job_mask = np.zeros(MAX_JOBS, np.float32)
        cand_node = np.zeros(MAX_CANDIDATES, np.float32)
        cand_job = np.zeros(MAX_CANDIDATES, np.float32)
        cand_rank = np.zeros(MAX_CANDIDATES, np.float32)
        cand_mask = np.zeros(MAX_CANDIDATES, np.float32)
        candidates: list[ReadyTask] = []
        cap_cpus = nodes.cap_cpus
        total_cpus = float(sum(cap_cpus)) or 1.0
        all_work = sum(j.remaining_work for j in jobs.values()) or 1.0
        n_static = len(STATIC_COLUMNS)
        g = 0
        e = 0
        for slot, (job_id, tasks) in enumerate(heads[:MAX_JOBS]):
            job = jobs[job_id]
            info = self.info(job, nodes)
            status = np.frombuffer(job.status, np.int8)
            held = float(info.cpus[status == TASK_RUNNING].sum())
            n_ready = int((status == TASK_READY).sum())
            job_mask[slot] = 1.0
            tasks = tasks[:TASKS_PER_JOB]
            jf[slot] = (_log_s(job.remaining_work), math.log1p(job.remaining_tasks), held / total_cpus,
                        _log_s(now - job.arrival), math.log1p(n_ready), float(job.priority), slot / MAX_JOBS,
                        _log_s(float(info.bottom[tasks[0].task])), job.remaining_work / all_work)
            index: dict[int, int] = {}
            members = []
            for t in tasks:
                index[t.task] = g + len(members)
                members.append(t.task)
            ptr, kids = info.children_ptr, info.children
            first_child = len(members)
            for t in tasks:
                for c in kids[ptr[t.task]:ptr[t.task + 1]].tolist():
                    if len(members) >= GRAPH_PER_JOB:
                        break
                    if c not in index:
                        index[c] = g + len(members)
                        members.append(c)
            m = len(members)
            rows = np.asarray(members)
            x[g:g + m, :n_static] = info.static[rows]
            dyn = x[g:g + m, n_static:]
            dyn[:first_child, 0] = 1.0
            dyn[:first_child, 1] = 1.0
            dyn[first_child:, 2] = 1.0
            dyn[:, 3] = np.log1p(info.pred[rows] / 60.0)
            dyn[:, 4] = np.log1p(info.bottom[rows] / 60.0)
            dyn[:first_child, 5] = np.arange(first_child) / TASKS_PER_JOB
            dyn[:, 6] = slot / MAX_JOBS
            node_mask[g:g + m] = 1.0
            node_job[g:g + m] = slot
            for t in tasks:  # dependencies from candidates to their children in the graph
                src = index[t.task]
                for c in kids[ptr[t.task]:ptr[t.task + 1]].tolist():
                    dst = index.get(c)
                    if dst is not None and e < MAX_EDGES:
                        edges[0, e], edges[1, e] = src, dst
                        edge_mask[e] = 1.0
                        e += 1
            for k, t in enumerate(tasks):
                c = len(candidates)
                cand_node[c] = index[t.task]
                cand_job[c] = slot
                cand_rank[c] = c
                cand_mask[c] = 1.0
                candidates.append(t)
            g += m

        # cluster nodes: all of them when they fit the slots, else those with the most free cpus
        n_nodes = len(cap_cpus)
        order = list(range(n_nodes))
        if n_nodes > MAX_NODES:
            order = sorted(order, key=lambda i: (-nodes.free_cpus[i], i))[:MAX_NODES]
            order.sort()
        max_c = max(cap_cpus) or 1.0
        max_m = max(nodes.cap_memory) or 1.0
        nf = np.zeros((MAX_NODES, NODE_FEATURES_N), np.float32)
        for s, i in enumerate(order):
            cg = nodes.cap_gpus[i]
            nf[s] = (nodes.free_cpus[i] / max_c, nodes.free_memory[i] / max_m, nodes.free_gpus[i] / max(cg, 1.0),
                     cap_cpus[i] / max_c, nodes.cap_memory[i] / max_m, float(cg > 0))
        mask = np.zeros((MAX_CANDIDATES, MAX_NODES), np.float32)
        fc, fm, fg = nodes.free_cpus, nodes.free_memory, nodes.free_gpus
        for c, t in enumerate(candidates):
            cc, cm, cgp, allowed = t.cpus - EPS, t.memory - EPS, t.gpus - EPS, t.allowed
            for s, i in enumerate(order):
                if fc[i] >= cc and fm[i] >= cm and fg[i] >= cgp and (allowed is None or i in allowed):
                    mask[c, s] = 1.0
        free_total = sum(nodes.free_cpus)
        glob = np.array([free_total / total_cpus, sum(nodes.free_memory) / (sum(nodes.cap_memory) or 1.0),
                         math.log1p(len(jobs)), math.log1p(state.num_ready),
                         self.offered_load(now, total_cpus), math.log1p(total_cpus), math.log1p(n_nodes),
                         _log_s(all_work / total_cpus), float(len(heads) > MAX_JOBS)], np.float32)
        obs = {"x": x, "node_mask": node_mask, "node_job": node_job, "edge_index": edges, "edge_mask": edge_mask,
               "jobs": jf, "job_mask": job_mask, "cand_node": cand_node, "cand_job": cand_job,
               "cand_rank": cand_rank, "cand_mask": cand_mask, "nodes": nf, "global": glob,
               "action_mask": mask.reshape(-1)}
        return obs, candidates, order

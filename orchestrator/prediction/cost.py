"""Cost optimizer: the cheapest homogeneous cluster (node type x count) that finishes a workflow by a deadline,
each candidate checked by simulating the workflow on it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import PredictionError, SimulationError
from ..model import Workflow
from ..scheduling import get_policy
from ..sim import Cluster, TraceEntry, simulate, single_workload
from .node_types import NodeType


@dataclass(frozen=True)
class ClusterOption:
    node_type: str
    nodes: int
    makespan: float  # seconds (inf when the workflow cannot run on it)
    cost: float  # USD: nodes x price x max(makespan, minimum billed) / 3600
    meets_deadline: bool
    note: str = ""


@dataclass
class CostPlan:
    deadline: float
    policy: str
    best: ClusterOption | None
    options: list[ClusterOption] = field(default_factory=list)


def cheapest_cluster(workflow: Workflow, node_types: list[NodeType], deadline: float, policy: str = "srpt-cp",
                     max_nodes: int = 16, min_billed_seconds: float = 60.0) -> CostPlan:
    """Simulate the workflow (its task durations, as recorded or predicted, no noise) on 1..max_nodes nodes of
    each type and return the cheapest option whose makespan meets `deadline`.

    Per type, counts stop once the makespan reaches the critical path: more nodes cannot finish sooner and
    only cost more. Options where a task does not fit on a node are listed as infeasible."""
    if not math.isfinite(deadline) or deadline <= 0:
        raise PredictionError(f"deadline must be a positive number of seconds, got {deadline}")
    if max_nodes < 1:
        raise PredictionError(f"max_nodes must be >= 1, got {max_nodes}")
    entry = TraceEntry.from_workflow(workflow)
    workload = single_workload(entry, seed=0, noise=0.0)
    critical = entry.analysis.critical_path_length
    options: list[ClusterOption] = []
    for t in node_types:
        for n in range(1, max_nodes + 1):
            cluster = Cluster.homogeneous(n, t.cpus, t.memory_gib, t.gpus, node_type=t.name)
            try:
                makespan = simulate(workload, cluster, get_policy(policy), seed=0, record=False).makespan
            except SimulationError as exc:
                options.append(ClusterOption(t.name, n, math.inf, math.inf, False, str(exc)[:120]))
                break  # a task too large for this type fits no count of it
            cost = n * t.price_per_hour * max(makespan, min_billed_seconds) / 3600.0
            options.append(ClusterOption(t.name, n, makespan, cost, makespan <= deadline + 1e-9))
            if makespan <= critical * (1 + 1e-9):
                break
    feasible = [o for o in options if o.meets_deadline]
    best = min(feasible, key=lambda o: (o.cost, o.makespan)) if feasible else None
    return CostPlan(deadline, policy, best, options)

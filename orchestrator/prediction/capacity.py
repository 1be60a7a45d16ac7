"""Capacity planning: from a demand forecast and a service objective (target utilisation, or a p95 queueing
delay under an M/M/c model) to a node count per step of the horizon and a Ray autoscaler hint."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import PredictionError
from .config import CapacityConfig
from .forecaster import Forecast
from .node_types import NodeType

GiB = 1024**3


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with `servers` servers and offered load `load`
    (= arrival rate x mean service time, in servers). 1 when the queue is unstable (load >= servers)."""
    if load <= 0:
        return 0.0
    if load >= servers:
        return 1.0
    # Erlang B by the stable recursion, then C = B / (1 - rho (1 - B)).
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    rho = load / servers
    return b / (1.0 - rho * (1.0 - b))


def servers_for_wait(load: float, mean_service_s: float, wait_s: float, percentile: float = 0.95) -> int:
    """Fewest servers c with P(wait > wait_s) <= 1 - percentile in M/M/c:
    P(W > t) = C(c, a) exp(-(c - a) t / S)."""
    if load <= 0:
        return 0
    c = max(1, math.floor(load) + 1)
    while True:
        p = erlang_c(c, load) * math.exp(-(c - load) * wait_s / mean_service_s)
        if p <= 1.0 - percentile:
            return c
        c += 1


@dataclass(frozen=True)
class CapacityStep:
    start: pd.Timestamp
    demand_cores: float  # forecast quantile, in cores
    needed_cores: float  # after the objective
    nodes: int


@dataclass
class CapacityPlan:
    """Nodes of one type per step of the horizon, the cost of following it, the objective it meets and the
    forecast method it follows (`Forecast.method`: what `Forecaster.forecast_best` chose)."""

    node_type: NodeType
    steps: list[CapacityStep]
    objective: str
    step_minutes: int
    alternatives: dict[str, float] = field(default_factory=dict)  # node type -> cost over the horizon
    forecast_method: str = "lstm"

    @property
    def cost(self) -> float:
        return sum(s.nodes for s in self.steps) * self.node_type.price_per_hour * self.step_minutes / 60.0

    def schedule(self) -> list[dict[str, Any]]:
        """Changes only: when the node count must become what."""
        out, last = [], None
        for s in self.steps:
            if s.nodes != last:
                out.append({"at": s.start.isoformat(), "node_type": self.node_type.name, "nodes": s.nodes})
                last = s.nodes
        return out

    def autoscaler_hint(self) -> dict[str, Any]:
        """For the Ray cluster launcher / autoscaler: `available_node_types.<type>` with min_workers (what the
        next step needs) and max_workers (the peak of the horizon), plus the schedule."""
        nodes = [s.nodes for s in self.steps]
        t = self.node_type
        return {
            "available_node_types": {
                t.name: {
                    "resources": {"CPU": int(t.cpus), "memory": int(t.memory_gib * GiB)},
                    "min_workers": int(nodes[0]),
                    "max_workers": int(max(nodes)),
                }
            },
            "schedule": self.schedule(),
            "objective": self.objective,
            "forecast_method": self.forecast_method,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.autoscaler_hint(), sort_keys=False)


def plan_capacity(forecast: Forecast, node_types: list[NodeType], cfg: CapacityConfig) -> CapacityPlan:
    """Cheapest single node type whose per-step counts cover the forecast's `cfg.quantile` demand under the
    objective: needed cores = demand / target_utilisation, or (with `p95_wait_seconds`) the M/M/c server count
    meeting that p95 wait for tasks of `mean_task_seconds` using one core each."""
    if not node_types:
        raise PredictionError("Capacity planning needs at least one node type")
    if not 0 < cfg.target_utilisation <= 1:
        raise PredictionError(f"target_utilisation must be in (0, 1], got {cfg.target_utilisation}")
    demand = np.maximum(forecast.quantile(cfg.quantile) * cfg.cores_per_unit, 0.0)
    if not np.isfinite(demand).all():
        raise PredictionError("The forecast holds non-finite values; cannot plan capacity from it")
    if cfg.p95_wait_seconds is not None:
        needed = np.array([servers_for_wait(d, cfg.mean_task_seconds, cfg.p95_wait_seconds) for d in demand], float)
        objective = f"p95 queueing delay <= {cfg.p95_wait_seconds:g} s (M/M/c, {cfg.mean_task_seconds:g} s tasks)"
    else:
        needed = demand / cfg.target_utilisation
        objective = f"utilisation <= {cfg.target_utilisation:.0%} at the p{round(cfg.quantile * 100)} forecast"
    mem_needed = demand * cfg.memory_gib_per_core
    step_minutes = int(round((forecast.index[1] - forecast.index[0]).total_seconds() / 60)) if len(forecast.index) > 1 else 5
    best: CapacityPlan | None = None
    costs = {}
    for t in node_types:
        counts = [max(1, math.ceil(c / t.cpus - 1e-9), math.ceil(m / t.memory_gib - 1e-9)) for c, m in zip(needed, mem_needed)]
        plan = CapacityPlan(t, [CapacityStep(ts, float(d), float(c), int(n))
                                for ts, d, c, n in zip(forecast.index, demand, needed, counts)], objective, step_minutes,
                            forecast_method=forecast.method)
        costs[t.name] = plan.cost
        if best is None or plan.cost < best.cost - 1e-12:
            best = plan
    assert best is not None
    best.alternatives = costs
    return best

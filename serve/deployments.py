"""The model-backed Serve deployments: each loads its model once per replica and scales by replicas (and
autoscaling) in the Serve config. The gateway (`serve.app.ApiGateway`) calls them through deployment handles."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from orchestrator.model import Workflow

from .settings import ApiSettings

# No cpu reserved by default: the replicas mostly wait on the store and on each other, and a 2-core machine
# must still have cpus for the workflows' tasks. Give them cpus in the Serve config on a cluster.
# max_ongoing_requests is above what a replica computes at once, so a burst waits in the replica rather than in
# Serve's router (which backs off and retries when every replica is full); max_queued_requests bounds the rest:
# beyond it Serve answers 503 at once. Both together bound the wait to about a second at these services' speeds.
_LIGHT = {"num_cpus": 0}


@serve.deployment(ray_actor_options=_LIGHT, max_ongoing_requests=16, max_queued_requests=64)
class SchedulerModel:
    """Decisions of any policy for one task (the learned policy's checkpoint loaded once)."""

    def __init__(self, settings: dict[str, Any]):
        from .services import SchedulingService

        self.settings = ApiSettings(**settings)
        self.service = SchedulingService()

    def model_version(self) -> str | None:
        return self.service.model_version

    async def decide(self, workflow: Workflow, cluster, policy: str, task_id: str | None, samples: int) -> dict:
        from .services import parse_cluster

        # On the replica's event loop, one at a time (a decision takes milliseconds; the policy object keeps
        # state between the simulator's calls): no thread hand-off, no lock.
        return self.service.decide(workflow, parse_cluster(cluster, self.settings.default_cluster), policy,
                                   task_id, samples)


@serve.deployment(ray_actor_options=_LIGHT, max_ongoing_requests=8, max_queued_requests=32)
class OptimizerModel:
    """Bottleneck analysis and recommendations (Monte Carlo kernels compiled once)."""

    def __init__(self, settings: dict[str, Any]):
        from .services import OptimizationService

        self.settings = ApiSettings(**settings)
        self.service = OptimizationService()

    async def analyze(self, workflow: Workflow, cluster, policy: str | None, budget: float | None,
                      deadline: float | None, recommend: bool, seed: int) -> dict:
        from .services import parse_cluster

        c = parse_cluster(cluster, self.settings.default_cluster)
        return await asyncio.to_thread(self.service.analyze, workflow, c, policy,
                                       budget or self.settings.analysis_budget_s, deadline, recommend, seed)

    async def apply(self, workflow: Workflow, cluster, policy: str | None, seed: int, kind: str,
                    targets: list[str]) -> dict:
        from .services import parse_cluster

        c = parse_cluster(cluster, self.settings.default_cluster)
        return await asyncio.to_thread(self.service.apply, workflow, c, policy, seed, kind, targets)


@serve.deployment(ray_actor_options=_LIGHT, max_ongoing_requests=16, max_queued_requests=64)
class PredictorModel:
    """Task resource predictions (history from the store), demand forecasts, capacity and cost plans."""

    def __init__(self, settings: dict[str, Any]):
        from orchestrator.store import Store

        from .services import PredictionService

        self.settings = ApiSettings(**settings)
        store = Store.open(self.settings.db_url, data_dir=self.settings.data_dir)
        try:
            self.service = PredictionService(store)
        finally:
            store.close()

    async def predict(self, tasks: list, family: str | None) -> dict:
        return await asyncio.to_thread(self.service.predict, tasks, family)

    async def forecast(self, points: list[dict]) -> dict:
        return await asyncio.to_thread(self.service.forecast, points)

    async def capacity(self, points: list[dict], update: dict[str, float]) -> dict:
        return await asyncio.to_thread(self.service.capacity, points, update)

    async def cheapest(self, workflow: Workflow, deadline: float, policy: str | None, max_nodes: int | None) -> dict:
        return await asyncio.to_thread(self.service.cheapest, workflow, deadline, policy, max_nodes)

"""What the model-backed endpoints compute, apart from HTTP and Serve: a scheduling decision for a task, the
analysis of a workflow with its recommendations, and resource predictions, forecasts and plans. Each service
loads its model once; the Serve deployments in `serve.deployments` hold one each."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from orchestrator.errors import InvalidError, NotFoundError
from orchestrator.model import Workflow
from orchestrator.sim.cluster import GiB, Cluster, NodeSpec

from .schemas import ClusterSpec

FINISHED = {"succeeded", "skipped", "failed", "cancelled"}


def parse_cluster(spec: ClusterSpec | dict | str | None, default: str) -> Cluster:
    """A Cluster from a request's node groups, or from `COUNTxCPUS:MEMORY_GIB[:GPUS]` (the default)."""
    if spec is None:
        count, _, rest = default.partition("x")
        parts = rest.split(":")
        groups = [{"count": int(count), "cpus": float(parts[0]), "memory_gib": float(parts[1]),
                   "gpus": float(parts[2]) if len(parts) > 2 else 0.0}]
    elif isinstance(spec, ClusterSpec):
        groups = [g.model_dump() for g in spec.nodes]
    elif isinstance(spec, dict):
        groups = list(spec.get("nodes") or [])
    else:
        return parse_cluster(None, spec)
    nodes = []
    for g in groups:
        for _ in range(int(g.get("count", 1))):
            nodes.append(NodeSpec(f"node-{len(nodes)}", float(g["cpus"]), float(g["memory_gib"]) * GiB,
                                  float(g.get("gpus", 0.0))))
    if len(nodes) > 10_000:
        raise InvalidError(f"cluster: {len(nodes)} nodes; at most 10000")
    return Cluster(tuple(nodes))


def remaining_workflow(workflow: Workflow, statuses: dict[str, str] | None) -> Workflow:
    """The tasks of a run still to finish (all of them without `statuses`), dependencies on finished tasks dropped.
    A running task counts as not started."""
    if not statuses:
        return workflow
    keep = [t for t in workflow.tasks if statuses.get(t.id, "pending") not in FINISHED]
    if not keep:
        raise InvalidError(f"Every task of '{workflow.name}' has finished: nothing is left to schedule")
    ids = {t.id for t in keep}
    tasks = [t.model_copy(update={"depends_on": [d for d in t.depends_on if d in ids],
                                  "args": [], "kwargs": {}}) for t in keep]
    return Workflow(name=workflow.name, tasks=tasks, family=workflow.family, policy=workflow.policy)


def _durations(workflow: Workflow, default: float) -> np.ndarray:
    return np.array([t.duration if t.duration else (t.observed.runtime if t.observed else default)
                     for t in workflow.tasks], dtype=np.float64)


class SchedulingService:
    """Decisions of any registered policy for one task of a workflow on a given cluster, from the simulator: the
    same policy code the runtime runs. The learned policy's model is loaded once."""

    def __init__(self, default_duration: float = 1.0, load_learned: bool = True):
        from orchestrator.scheduling import available_policies

        self.default_duration = default_duration
        self._learned = None
        self.model_version: str | None = None
        if load_learned and "learned" in available_policies():
            try:
                from policies.learned import LearnedPolicy, latest_model_dir

                model_dir = latest_model_dir()
                if model_dir is not None:
                    self._learned = LearnedPolicy(model_dir)
                    _ = self._learned.net  # load now, once
                    self.model_version = model_dir.name
            except Exception:  # noqa: BLE001 - no usable model: a request for 'learned' says so
                self._learned = None

    def _policy(self, name: str):
        from orchestrator.scheduling import get_policy

        if name == "learned":
            if self._learned is None:
                raise NotFoundError("The learned policy has no model here (train one with "
                                    "`orchestrator train scheduler`)")
            return self._learned
        return get_policy(name)

    def decide(self, workflow: Workflow, cluster: Cluster, policy: str, task_id: str | None = None,
               samples: int = 4, seed: int = 0) -> dict[str, Any]:
        t0 = time.perf_counter()
        if task_id is not None and task_id not in {t.id for t in workflow.tasks}:
            raise NotFoundError(f"Task '{task_id}' is not a task of '{workflow.name}' still to run")
        durations = _durations(workflow, self.default_duration)
        base = self._simulate(workflow, cluster, policy, durations, task_id, seed)
        if base["probability"] is not None:  # a learned policy: its network says how sure it is
            samples = 0
        agree = 0
        rng = np.random.default_rng(seed)
        for _ in range(samples):
            noisy = durations * rng.lognormal(0.0, 0.3, len(durations))
            other = self._simulate(workflow, cluster, policy, noisy, base["task_id"], seed)
            if other["node"] == base["node"] and abs(other["start"] - base["start"]) <= max(1.0, 0.1 * base["start"]):
                agree += 1
        confidence = base["probability"] if base["probability"] is not None else (agree / samples if samples
                                                                                  else None)
        spec = next(t for t in workflow.tasks if t.id == base["task_id"])
        r = spec.resources
        explanation = (f"{policy} starts '{base['task_id']}' on {base['node']} "
                       + ("now" if base["start"] <= 1e-9 else f"after {base['start']:.3g} s")
                       + f": {base['ready']} task(s) ready at that moment, this one predicted to run "
                       f"{durations[workflow.tasks.index(spec)]:.3g} s on {r.cpus:g} cpu(s); the node had "
                       f"{base['free_cpus']:g} cpu(s) free")
        if base["probability"] is not None:
            explanation += f"; the network gave this (task, node) probability {base['probability']:.2f}"
        elif samples:
            explanation += (f"; the same node and start (within 10%) in {agree} of {samples} re-runs with "
                            "durations perturbed by 30%")
        return {"task_id": base["task_id"], "node": base["node"], "start_estimate_s": base["start"],
                "resources": {"cpus": r.cpus, "memory": r.memory, "gpus": r.gpus},
                "confidence": confidence, "policy": policy,
                "model_version": self.model_version if policy == "learned" else None,
                "explanation": explanation, "latency_ms": (time.perf_counter() - t0) * 1e3}

    def _simulate(self, workflow: Workflow, cluster: Cluster, policy_name: str, durations: np.ndarray,
                  task_id: str | None, seed: int) -> dict[str, Any]:
        from orchestrator.dag import dag_arrays
        from orchestrator.sim import Simulation
        from orchestrator.sim.workload import Job, Workload

        dag = dag_arrays(workflow, durations)
        job = Job(id=0, name=workflow.name, family=workflow.family or "api", arrival=0.0, dag=dag,
                  actual=durations, predicted=durations, used_cpus=dag.cpus, used_memory=dag.memory,
                  workflow=workflow)
        policy = self._policy(policy_name)
        sim = Simulation(Workload((job,)), cluster, policy, seed=seed, record=False)
        names = sim.nodes.names
        while sim.advance():
            ready = sim.num_ready
            free = list(sim.nodes.free_cpus)
            decisions = [(t, n) for t, n in policy.schedule(sim)]
            probabilities = getattr(policy, "probabilities", None)
            sim.apply(decisions)
            for j, (t, node) in enumerate(decisions):
                tid = dag.ids[t.task]
                if task_id is None or tid == task_id:
                    p = probabilities[j] if probabilities and len(probabilities) == len(decisions) else None
                    return {"task_id": tid, "node": names[node], "start": float(sim.now), "ready": ready,
                            "free_cpus": float(free[node]), "probability": p}
        raise InvalidError(f"Policy '{policy_name}' never started task '{task_id}' in the simulation")


class OptimizationService:
    """Bottleneck analysis and recommendations (each checked in the simulator before it is offered)."""

    def __init__(self):
        from orchestrator.optimization.analysis import warm_up

        warm_up()  # compile the Monte Carlo kernels once, not in the first request

    def analyze(self, workflow: Workflow, cluster: Cluster, policy: str | None, budget: float,
                deadline: float | None, recommend: bool, seed: int) -> dict[str, Any]:
        from orchestrator.optimization.analysis import analyze
        from orchestrator.optimization.recommend import recommend as recommend_changes

        t0 = time.perf_counter()
        report = analyze(workflow, cluster, policy=policy, samples=100_000, budget=budget, deadline=deadline,
                         seed=seed)
        out: dict[str, Any] = {"analysis": report.to_dict(), "analysis_ms": (time.perf_counter() - t0) * 1e3}
        if recommend:
            t1 = time.perf_counter()
            recs = recommend_changes(workflow, cluster, policy=policy, seed=seed)
            out["recommendations"] = recs.to_dict()
            out["recommend_ms"] = (time.perf_counter() - t1) * 1e3
        return out

    def apply(self, workflow: Workflow, cluster: Cluster, policy: str | None, seed: int, kind: str,
              targets: list[str]) -> dict[str, Any]:
        """Find the recorded recommendation again (the same inputs give the same candidates), measure it once more
        on fresh draws, and return the changed workflow."""
        from orchestrator.errors import ConflictError
        from orchestrator.optimization.recommend import recommend as recommend_changes
        from orchestrator.optimization.recommend import verify

        recs = recommend_changes(workflow, cluster, policy=policy, seed=seed)
        match = next((r for r in recs.offered if r.kind == kind and list(r.targets) == list(targets)), None)
        if match is None:
            raise ConflictError(f"The recommendation ({kind} on {', '.join(targets)}) no longer comes out of the "
                                "analysis of this workflow; analyze it again")
        checked = verify(match, workflow, cluster, policy=policy, seed=seed + 1)
        changed = match.apply(workflow)
        return {"verified_gain": checked.gain, "verified_gain_pct": checked.gain_pct,
                "workflow": changed.model_dump(mode="json", exclude_none=True),
                "cluster_after": checked.to_dict()["cluster_after"], "recommendation": checked.to_dict()}


class PredictionService:
    """Task resource predictions (history from the store's recent runs), demand forecasts, capacity plans and
    the cheapest cluster for a deadline. Models load once."""

    def __init__(self, store=None, history_runs: int = 20):
        from orchestrator.prediction import Execution, History
        from orchestrator.prediction.config import load_config

        self.cfg = load_config()
        self.predictor = None
        self.forecaster = None
        self.errors: dict[str, str] = {}
        try:
            from orchestrator.prediction.predictor import Predictor

            self.predictor = Predictor.load()
        except Exception as exc:  # noqa: BLE001 - named when a request needs it
            self.errors["predictor"] = str(exc)
        try:
            from orchestrator.prediction.forecaster import Forecaster

            self.forecaster, _ = Forecaster.load(self.cfg.models_path("forecaster"), "latest")
        except Exception as exc:  # noqa: BLE001
            self.errors["forecaster"] = str(exc)
        self.history = History()
        if store is not None:
            for rec in reversed(store.list_workflows(limit=history_runs)):
                specs = {t.id: t for t in store.load_spec(rec.run_id).tasks}
                for e in store.executions(rec.run_id):
                    spec = specs.get(e.task_id)
                    if e.status == "succeeded" and spec is not None and e.duration is not None:
                        self.history.add(Execution(spec.category, e.duration, e.cpu,
                                                   float(e.peak_memory) if e.peak_memory else None,
                                                   spec.input_bytes, None, same_run=False))

    def _need(self, what: str):
        model = getattr(self, what)
        if model is None:
            from orchestrator.errors import UnavailableError

            raise UnavailableError(f"No {what} model is loaded: {self.errors.get(what, 'unknown reason')}")
        return model

    def predict(self, tasks: list, family: str | None) -> dict[str, Any]:
        predictor = self._need("predictor")
        rows = []
        for t in tasks:
            p = predictor.predict(t, self.history, family)
            rows.append({"task_id": t.id, **{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                             for k, v in p.as_row().items()}})
        return {"model_version": predictor.version, "selection": predictor.selection, "predictions": rows}

    def _series(self, points: list[dict]):
        import pandas as pd

        from orchestrator.prediction.series import series_from_frame

        forecaster = self._need("forecaster")
        frame = pd.DataFrame(points)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
        return forecaster, series_from_frame(frame, forecaster.cfg.step_minutes, forecaster.cfg.max_gap_steps,
                                             source="<request>")

    def forecast(self, points: list[dict]) -> dict[str, Any]:
        forecaster, series = self._series(points)
        fc = forecaster.forecast_best(series)
        frame = fc.to_frame()
        return {"step_minutes": forecaster.cfg.step_minutes, "method": fc.method, "backtest_mae": fc.backtest,
                "note": fc.note or None,
                "steps": [{"timestamp": ts.isoformat(), **{c: float(v) for c, v in row.items()}}
                          for ts, row in frame.iterrows()]}

    def capacity(self, points: list[dict], update: dict[str, float]) -> dict[str, Any]:
        from orchestrator.prediction.capacity import plan_capacity
        from orchestrator.prediction.node_types import load_node_types

        forecaster, series = self._series(points)
        fc = forecaster.forecast_best(series)
        plan = plan_capacity(fc, load_node_types(None), self.cfg.capacity.model_copy(update=update))
        return {"node_type": plan.node_type.name, "objective": plan.objective, "cost": plan.cost,
                "method": plan.forecast_method, "note": fc.note or None,
                "steps": [{"start": s.start.isoformat(), "demand_cores": s.demand_cores,
                           "needed_cores": s.needed_cores, "nodes": s.nodes} for s in plan.steps],
                "autoscaler_hint": plan.autoscaler_hint(), "alternatives": plan.alternatives}

    def cheapest(self, workflow: Workflow, deadline: float, policy: str | None, max_nodes: int | None) -> dict:
        from orchestrator.prediction.cost import cheapest_cluster
        from orchestrator.prediction.node_types import load_node_types

        cfg = self.cfg.cost
        plan = cheapest_cluster(workflow, load_node_types(None), deadline, policy or cfg.policy,
                                max_nodes or cfg.max_nodes, cfg.min_billed_seconds)

        def option(o):
            return None if o is None else {"node_type": o.node_type, "nodes": o.nodes,
                                           "makespan_s": o.makespan if np.isfinite(o.makespan) else None,
                                           "cost_usd": o.cost if np.isfinite(o.cost) else None,
                                           "meets_deadline": o.meets_deadline, "note": o.note}
        return {"deadline_s": deadline, "policy": plan.policy, "best": option(plan.best),
                "options": [option(o) for o in sorted(plan.options, key=lambda o: o.cost)]}

"""History: what happened around the runs, appended and read back — task attempts (executions), scheduling
decisions, resource predictions and what tasks really used, metrics, system samples and workflow optimisations."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import astuple, fields
from typing import Any

import sqlalchemy as sa

from ..errors import StoreError, StoreNotFoundError
from .database import json_dumps
from .records import (
    DecisionRecord,
    ExecutionRecord,
    MetricRecord,
    OptimizationRecord,
    PredictionActual,
    PredictionRecord,
    SystemSample,
)
from .schema import (
    DecisionRow,
    PerformanceMetricRow,
    ResourcePredictionRow,
    SystemStateSampleRow,
    TaskExecutionRow,
    WorkflowOptimizationRow,
)
from .text import clip
from .transactions import StoreBase

X = TaskExecutionRow.__table__
D = DecisionRow.__table__
P = ResourcePredictionRow.__table__
M = PerformanceMetricRow.__table__
S = SystemStateSampleRow.__table__
O = WorkflowOptimizationRow.__table__

EXECUTION_COLUMNS = tuple(X.c[f.name] for f in fields(ExecutionRecord))  # ExecutionRecord's, in order
DECISION_COLUMNS = ("run_id", "task_id", "policy", "node", "input", "output", "confidence", "latency_us",
                    "model_version", "created_at")  # what `decision_rows` gives


class History(StoreBase):
    """Appending and reading history rows."""

    def record_executions(self, rows: Sequence[ExecutionRecord]) -> None:
        """Record finished (or interrupted) task attempts; captured text keeps its last 64 KiB."""
        if not rows:
            return
        params = _execution_params(rows)

        def unknown_task() -> StoreError:
            return StoreNotFoundError("Cannot record executions: some name a task that is not in the store "
                              f"(first row: run '{rows[0].run_id}', task '{rows[0].task_id}')")

        with self._transaction("record executions", on_conflict=unknown_task) as conn:
            conn.execute(sa.insert(X), params)

    def executions(self, run_id: str, task_id: str | None = None) -> list[ExecutionRecord]:
        query = sa.select(*EXECUTION_COLUMNS).where(X.c.run_id == run_id)
        if task_id is not None:
            query = query.where(X.c.task_id == task_id)
        with self._connection("read executions") as conn:
            return [ExecutionRecord(*row) for row in conn.execute(query.order_by(X.c.id))]

    def record_decisions(self, rows: Sequence[DecisionRecord]) -> None:
        self._insert_records(D, rows, "record decisions")

    def decisions(self, run_id: str, limit: int | None = None) -> list[DecisionRecord]:
        return self._select_records(D, DecisionRecord, D.c.run_id == run_id, limit=limit)

    def record_decision(self, row: DecisionRecord) -> int:
        """Record one decision; returns its id."""
        with self._transaction("record a scheduling decision") as conn:
            values = _record_params(row, time.time(), "created_at")
            values.pop("id", None)
            return conn.execute(sa.insert(D).values(**values).returning(D.c.id)).scalar_one()

    def decision(self, decision_id: int) -> DecisionRecord:
        """One recorded decision by id; StoreNotFoundError when there is none."""
        found = self._select_records(D, DecisionRecord, D.c.id == decision_id, limit=1)
        if not found:
            raise StoreNotFoundError(f"No scheduling decision with id {decision_id}")
        return found[0]

    def record_predictions(self, rows: Sequence[PredictionRecord]) -> None:
        self._insert_records(P, rows, "record predictions")

    def update_prediction_actuals(self, rows: Sequence[PredictionActual]) -> int:
        """Fill what tasks really used into their predictions; returns how many predictions were updated."""
        values = {
            "actual_runtime": sa.func.coalesce(sa.bindparam("v_runtime", type_=sa.Double), P.c.actual_runtime),
            "actual_cpu": sa.func.coalesce(sa.bindparam("v_cpu", type_=sa.Double), P.c.actual_cpu),
            "actual_memory": sa.func.coalesce(sa.bindparam("v_memory", type_=sa.Double), P.c.actual_memory),
        }
        for_task = sa.update(P).where(P.c.run_id == sa.bindparam("k_run_id"),
                                      P.c.task_id == sa.bindparam("k_task_id")).values(**values)
        for_version = for_task.where(P.c.model_version == sa.bindparam("k_version"))
        updated = 0
        with self._transaction("update prediction actuals") as conn:
            for statement, subset in ((for_task, [r for r in rows if r.model_version is None]),
                                      (for_version, [r for r in rows if r.model_version is not None])):
                if subset:
                    params = [{"k_run_id": r.run_id, "k_task_id": r.task_id, "v_runtime": r.runtime,
                               "v_cpu": r.cpu, "v_memory": r.memory,
                               **({"k_version": r.model_version} if r.model_version is not None else {})}
                              for r in subset]
                    updated += conn.execute(statement, params).rowcount
        return updated

    def predictions(self, run_id: str | None = None, category: str | None = None,
                    with_actuals: bool = False, limit: int | None = None) -> list[PredictionRecord]:
        conditions = []
        if run_id is not None:
            conditions.append(P.c.run_id == run_id)
        if category is not None:
            conditions.append(P.c.category == category)
        if with_actuals:
            conditions.append(P.c.actual_runtime.is_not(None))
        return self._select_records(P, PredictionRecord, *conditions, limit=limit)

    def record_metric(self, name: str, value: float, labels: dict[str, Any] | None = None,
                      run_id: str | None = None) -> None:
        self.record_metrics([MetricRecord(name, value, labels or {}, run_id)])

    def record_metrics(self, rows: Sequence[MetricRecord]) -> None:
        self._insert_records(M, rows, "record metrics")

    def metrics(self, name: str | None = None, run_id: str | None = None,
                limit: int | None = None) -> list[MetricRecord]:
        conditions = [c for c in (M.c.name == name if name is not None else None,
                                  M.c.run_id == run_id if run_id is not None else None) if c is not None]
        return self._select_records(M, MetricRecord, *conditions, limit=limit)

    def record_system_samples(self, rows: Sequence[SystemSample]) -> None:
        self._insert_records(S, rows, "record system samples", time_field="ts")

    def system_samples(self, since: float | None = None, node: str | None = None,
                       limit: int | None = None) -> list[SystemSample]:
        conditions = [c for c in (S.c.ts >= since if since is not None else None,
                                  S.c.node == node if node is not None else None) if c is not None]
        return self._select_records(S, SystemSample, *conditions, limit=limit)

    def record_optimization(self, kind: str, description: str, params: dict[str, Any] | None = None,
                            predicted_gain: float | None = None, run_id: str | None = None,
                            workflow: str | None = None) -> int:
        """Record an applied or proposed workflow optimisation; returns its id (for `verify_optimization`)."""
        row = OptimizationRecord(kind, description, params or {}, predicted_gain, None, run_id, workflow)
        with self._transaction("record optimization") as conn:
            params_row = _record_params(row, time.time(), "created_at")
            return conn.execute(sa.insert(O).values(**params_row).returning(O.c.id)).scalar_one()

    def verify_optimization(self, optimization_id: int, verified_gain: float) -> None:
        with self._transaction("verify optimization") as conn:
            if conn.execute(sa.update(O).where(O.c.id == optimization_id)
                            .values(verified_gain=verified_gain)).rowcount == 0:
                raise StoreNotFoundError(f"No workflow optimization with id {optimization_id}")

    def optimization(self, optimization_id: int) -> OptimizationRecord:
        """One recorded optimisation by id; StoreNotFoundError when there is none."""
        found = self._select_records(O, OptimizationRecord, O.c.id == optimization_id, limit=1)
        if not found:
            raise StoreNotFoundError(f"No recorded optimization with id {optimization_id}")
        return found[0]

    def optimizations(self, run_id: str | None = None, workflow: str | None = None) -> list[OptimizationRecord]:
        conditions = [c for c in (O.c.run_id == run_id if run_id is not None else None,
                                  O.c.workflow == workflow if workflow is not None else None) if c is not None]
        return self._select_records(O, OptimizationRecord, *conditions)

    def _insert_records(self, table: sa.Table, rows: Sequence[Any], action: str,
                        time_field: str = "created_at") -> None:
        if not rows:
            return
        now = time.time()
        params = [_record_params(r, now, time_field) for r in rows]
        with self._transaction(action) as conn:
            conn.execute(sa.insert(table), params)

    def _select_records(self, table: sa.Table, record_type: type, *conditions: Any,
                        limit: int | None = None) -> list[Any]:
        query = sa.select(*(table.c[f.name] for f in fields(record_type))).where(*conditions).order_by(table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._connection(f"read {table.name}") as conn:
            return [record_type(*row) for row in conn.execute(query)]


def execution_rows(executions: Sequence[ExecutionRecord]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Execution records as (columns, rows) for a bulk insert; captured text clipped."""
    params = _execution_params(executions)
    return tuple(params[0]), [tuple(p.values()) for p in params]


def decision_rows(decisions: Sequence[DecisionRecord], now: float) -> list[tuple[Any, ...]]:
    """Decision records as rows in `DECISION_COLUMNS` order, JSON fields encoded."""
    return [(d.run_id, d.task_id, d.policy, d.node,
             None if d.input is None else json_dumps(d.input),
             None if d.output is None else json_dumps(d.output),
             d.confidence, d.latency_us, d.model_version,
             now if d.created_at is None else d.created_at) for d in decisions]


def _execution_params(rows: Sequence[ExecutionRecord]) -> list[dict[str, Any]]:
    return [{
        "run_id": r.run_id, "task_id": r.task_id, "attempt": r.attempt, "node": r.node, "status": r.status,
        "started_at": r.started_at, "finished_at": r.finished_at, "exit_info": clip(r.exit_info),
        "error": clip(r.error), "duration": r.duration, "cpu": r.cpu, "peak_memory": r.peak_memory,
        "stdout": clip(r.stdout), "stderr": clip(r.stderr),
    } for r in rows]


def _record_params(record: Any, now: float, time_field: str) -> dict[str, Any]:
    params = {f.name: value for f, value in zip(fields(record), astuple(record)) if f.name != "id"}
    if params.get(time_field) is None:
        params[time_field] = now
    return params

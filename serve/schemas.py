"""Request bodies of the HTTP API (pydantic, strict: an unknown field is an error that names it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.model import Limits

MAX_PRIORITY = Limits().max_priority


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeGroup(Strict):
    count: int = Field(default=1, ge=1, le=10_000)
    cpus: float = Field(gt=0, le=1024, allow_inf_nan=False)
    memory_gib: float = Field(gt=0, le=65_536, allow_inf_nan=False)
    gpus: float = Field(default=0, ge=0, le=64, allow_inf_nan=False)


class ClusterSpec(Strict):
    """Nodes by group; the cluster a decision or an analysis assumes (default: the API's `default_cluster`)."""

    nodes: list[NodeGroup] = Field(min_length=1, max_length=64)


class WorkflowSource(Strict):
    """A workflow given inline (this project's format or WfCommons JSON) or by a recorded run's id."""

    workflow: dict[str, Any] | None = None
    run_id: str | None = Field(default=None, min_length=1, max_length=128)
    policy: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_source(self) -> "WorkflowSource":
        if (self.workflow is None) == (self.run_id is None):
            raise ValueError("give exactly one of 'workflow' (inline) and 'run_id' (a recorded run)")
        return self


class WorkflowInput(WorkflowSource):
    """A workflow and the cluster it is to run on."""

    cluster: ClusterSpec | None = None


class DecideRequest(WorkflowInput):
    """Which node the policy would start `task_id` on, and when (default: the first task it would start)."""

    task_id: str | None = Field(default=None, min_length=1, max_length=200)
    samples: int = Field(default=4, ge=0, le=32)  # perturbed re-runs behind the confidence


class AnalyzeRequest(WorkflowInput):
    budget_s: float | None = Field(default=None, gt=0, le=30)
    deadline_s: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False)
    recommend: bool = True
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class ApplyRequest(Strict):
    optimization_id: int = Field(ge=1, le=2**62)  # the store's ids are 64-bit
    submit: bool = False  # also submit the changed workflow as a new run


class PriorityRequest(Strict):
    priority: int = Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY)


class PredictRequest(Strict):
    """Tasks to predict (task mappings as in a workflow), or a whole workflow."""

    tasks: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=10_000)
    workflow: dict[str, Any] | None = None
    family: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _one_source(self) -> "PredictRequest":
        if (self.tasks is None) == (self.workflow is None):
            raise ValueError("give exactly one of 'tasks' and 'workflow'")
        return self


class Point(Strict):
    timestamp: datetime
    value: float = Field(ge=-1e12, le=1e12, allow_inf_nan=False)


class SeriesRequest(Strict):
    """A usage series (cores, or units turned into cores by `cores_per_unit`) at regular steps."""

    series: list[Point] = Field(min_length=2, max_length=100_000)


class CapacityRequest(SeriesRequest):
    target_utilisation: float | None = Field(default=None, gt=0, le=1)
    p95_wait_seconds: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    cores_per_unit: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)


class CheapestRequest(WorkflowSource):
    deadline_s: float = Field(gt=0, le=1e9, allow_inf_nan=False)
    max_nodes: int | None = Field(default=None, ge=1, le=1000)


class KeyRequest(Strict):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(pattern="^(viewer|operator|admin)$")
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)

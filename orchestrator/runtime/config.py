"""Runtime configuration (pydantic): where state lives, which policy decides, retry backoff, sinks."""

from __future__ import annotations

import os
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ACTOR_NAME = "orchestrator"
NAMESPACE = "orchestrator"


def default_data_dir() -> Path:
    return Path(os.environ.get("ORCHESTRATOR_DATA_DIR", ".orchestrator")).resolve()


class RuntimeConfig(BaseModel):
    """Settings of one orchestrator actor. Environment: ORCHESTRATOR_DB_URL, ORCHESTRATOR_DATA_DIR, REDIS_URL,
    ORCHESTRATOR_MEMORY_REQUESTS."""

    model_config = ConfigDict(extra="forbid")

    db_url: str | None = Field(default_factory=lambda: os.environ.get("ORCHESTRATOR_DB_URL"))
    data_dir: str = Field(default_factory=lambda: str(default_data_dir()))
    default_policy: str = "srpt-cp"
    retry_base: float = 1.0  # seconds; doubled per attempt, with jitter
    retry_cap: float = 300.0
    retry_jitter: float = 0.5
    system_retries: int = 3
    default_duration: float = 1.0  # predicted seconds for a task with no known duration
    node_refresh_s: float = 2.0
    poll_s: float = 0.02  # longest wait for a completion before the loop looks at timeouts and retries
    # Dispatch ahead: short tasks (predicted <= dispatch_ahead_max_s) may be committed to a busy node, up to this
    # many times its resources, so that they start on the worker a finishing task frees (see RuntimeState). A
    # task that becomes ready later then waits at most about dispatch_ahead x dispatch_ahead_max_s longer per
    # slot. 0 turns it off: a task is then handed to Ray only when its node has room.
    dispatch_ahead: float = Field(default=2.0, ge=0.0)
    dispatch_ahead_max_s: float = Field(default=0.25, ge=0.0)
    batch_window_s: float = 0.001  # after a completion, how long to gather more before writing (>= 4 running)
    batch_window_ahead_s: float = 0.004  # the same while tasks wait ahead at their nodes (workers stay busy)
    redis_url: str | None = Field(default_factory=lambda: os.environ.get("REDIS_URL"))
    redis_stream: str = "orchestrator:events"
    webhook_url: str | None = Field(default_factory=lambda: os.environ.get("ORCHESTRATOR_WEBHOOK_URL"))
    webhook_secret: str | None = Field(default_factory=lambda: os.environ.get("ORCHESTRATOR_WEBHOOK_SECRET"))
    # In-process subscribers in the orchestrator's own process: "module:function" (called with each event) or
    # "module:function@type.prefix"; e.g. "orchestrator.store.logs:log_event". Environment: a comma list in
    # ORCHESTRATOR_EVENT_SUBSCRIBERS.
    event_subscribers: list[str] = Field(default_factory=lambda: [
        s.strip() for s in os.environ.get("ORCHESTRATOR_EVENT_SUBSCRIBERS", "").split(",") if s.strip()])
    record_decisions: bool = True
    predict_tasks: bool = True  # predict tasks that have no expected duration (needs a trained predictor)
    models_dir: str | None = None  # default: models/predictor of the project
    # One orchestrator per store: its lease is renewed about once a second and lapses after this long without
    # renewal (an orchestrator that died); a new one waits up to this long for it.
    lease_ttl_s: float = Field(default=10.0, gt=0.0)
    sample_every_s: float = 5.0  # system-state samples (cluster demand history for the forecaster)
    # Memory requests of tasks that declare none (resources.memory 0): "declared" leaves them at 0 (not enforced,
    # nothing reserved); "sized" gives each such task whose (family, category) has recorded peaks (earlier runs in
    # the store, finished tasks since) the input-knn request of `prediction.memory_sizing`: the largest peak of the
    # `memory_sizing_k` executions closest in input size x (1 + `memory_sizing_margin`). It is reserved on the node
    # and enforced; a memory failure doubles it (up to the largest node) without using the task's retries. A
    # declared memory is never changed. The defaults are the evaluation's (k 8, +5% calibrated on earlier runs).
    # Environment: ORCHESTRATOR_MEMORY_REQUESTS.
    memory_requests: Literal["declared", "sized"] = Field(
        default_factory=lambda: os.environ.get("ORCHESTRATOR_MEMORY_REQUESTS", "declared"), validate_default=True)
    memory_sizing_k: int = Field(default=8, ge=1)
    memory_sizing_margin: float = Field(default=0.05, ge=0.0, le=10.0)

    @field_validator("memory_requests", mode="before")
    @classmethod
    def _memory_requests_named(cls, value):
        if value not in ("declared", "sized"):
            raise ValueError(
                f"memory_requests is {value!r}: give 'declared' (a task's memory request is what it declares; 0 is "
                "not enforced) or 'sized' (a task that declares none is sized from the recorded peaks of its "
                "category); set in the runtime config or ORCHESTRATOR_MEMORY_REQUESTS")
        return value

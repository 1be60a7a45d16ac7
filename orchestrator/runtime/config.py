"""Runtime configuration (pydantic): where state lives, which policy decides, retry backoff, sinks."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ACTOR_NAME = "orchestrator"
NAMESPACE = "orchestrator"


def default_data_dir() -> Path:
    return Path(os.environ.get("ORCHESTRATOR_DATA_DIR", ".orchestrator")).resolve()


class RuntimeConfig(BaseModel):
    """Settings of one orchestrator actor. Environment: ORCHESTRATOR_DB_URL, ORCHESTRATOR_DATA_DIR, REDIS_URL."""

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
    batch_window_s: float = 0.001  # after a completion, how long to gather more before writing (>= 4 running)
    redis_url: str | None = Field(default_factory=lambda: os.environ.get("REDIS_URL"))
    redis_stream: str = "orchestrator:events"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    record_decisions: bool = True
    predict_tasks: bool = True  # predict tasks that have no expected duration (needs a trained predictor)
    models_dir: str | None = None  # default: models/predictor of the project
    sample_every_s: float = 5.0  # system-state samples (cluster demand history for the forecaster)

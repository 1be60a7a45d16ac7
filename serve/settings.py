"""Settings of the HTTP API (pydantic): the store, the rate limit, request limits and what tasks may run.

Read from the `api:` section of `configs/serve.yaml` (or a Serve application's `args`), with the environment for
what differs per machine: ORCHESTRATOR_DB_URL, ORCHESTRATOR_DATA_DIR, REDIS_URL.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import InvalidError, RefusedError


class RateLimit(BaseModel):
    """A token bucket per API key: `requests_per_second` on average, bursts of up to `burst` requests."""

    model_config = ConfigDict(extra="forbid")

    requests_per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db_url: str | None = Field(default_factory=lambda: os.environ.get("ORCHESTRATOR_DB_URL"))
    data_dir: str = Field(default_factory=lambda: str(Path(os.environ.get("ORCHESTRATOR_DATA_DIR",
                                                                           ".orchestrator")).resolve()))
    # Redis keeps the rate limit's buckets, shared by every replica; without it each replica counts alone.
    redis_url: str | None = Field(default_factory=lambda: os.environ.get("REDIS_URL"))
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)  # larger request bodies: 413
    key_cache_s: float = Field(default=5.0, ge=0)  # a verified key is trusted this long (a revocation's delay)
    # Python entrypoints (`module:function`) a task submitted over HTTP may name: glob patterns. A task with no
    # entrypoint (a trace replay, a declared duration) is always allowed.
    allowed_entrypoints: list[str] = Field(default_factory=lambda: ["orchestrator.runtime.builtins:*",
                                                                    "examples.*"])
    allow_shell: bool = False  # shell commands as entrypoints (only where an admin enables it)
    default_cluster: str = "4x8:32"  # COUNTxCPUS:MEMORY_GIB of the cluster a decision or analysis assumes
    analysis_budget_s: float = Field(default=0.15, gt=0, le=30)  # wall time one analysis aims at
    max_page: int = Field(default=500, ge=1)
    sse_poll_s: float = Field(default=0.25, gt=0)
    sse_keepalive_s: float = Field(default=15.0, gt=0)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "ApiSettings":
        """The `api:` section of a Serve config file (default: none), with `overrides` on top."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise InvalidError(f"Cannot read the API settings in {path}: {exc}") from None
            section = loaded.get("api", loaded) if isinstance(loaded, dict) else None
            if not isinstance(section, dict):
                raise InvalidError(f"{path}: the `api:` section must be a mapping")
            data.update(section)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidError(f"API setting '{where}': {first['msg']}") from None

    def check_entrypoints(self, workflow) -> None:
        """Refuse (RefusedError, naming the task) a workflow with a task whose entrypoint is not allowed here."""
        for task in workflow.tasks:
            kind = task.entrypoint_kind
            if kind == "none":
                continue
            if kind == "shell":
                if not self.allow_shell:
                    raise RefusedError(f"Task '{task.id}' runs a shell command, which this API does not accept "
                                       "(an admin enables it with `allow_shell: true` in the API settings)")
                continue
            if not any(fnmatch.fnmatchcase(task.entrypoint, pattern) for pattern in self.allowed_entrypoints):
                raise RefusedError(f"Task '{task.id}' names entrypoint '{task.entrypoint}', which is not in the "
                                   f"API's allow-list ({', '.join(self.allowed_entrypoints) or 'empty'})")

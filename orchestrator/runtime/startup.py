"""What the orchestrator actor sets up in its own process as it starts: structured logs, normal scheduling
priority, the event dispatcher that delivers stored events to their sinks, task predictions and memory sizing."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import OrchestratorError
from .config import RuntimeConfig
from .state import RuntimeState

log = logging.getLogger("orchestrator.runtime")


def json_logs(data_dir: str) -> None:
    """Structured logs: JSON lines carrying run and task ids, to stderr (Ray's worker log) and to
    <data-dir>/logs/orchestrator.jsonl."""
    from pathlib import Path

    from ..store.logs import JsonFormatter, configure_json_logging

    root = logging.getLogger("orchestrator")
    if any(getattr(h, "_orchestrator_json", False) for h in root.handlers):
        return
    handler = configure_json_logging(logging.INFO, component="orchestrator-actor")
    handler._orchestrator_json = True
    path = Path(data_dir) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path / "orchestrator.jsonl")
    file_handler.setFormatter(JsonFormatter({"component": "orchestrator-actor"}))
    root.addHandler(file_handler)


def normal_priority() -> str:
    """Ray starts workers (and so this actor) at niceness 15. The orchestrator is the control plane, like the
    raylet and the GCS: run every thread of this process at normal priority where allowed, so that its dispatch
    loop is not starved by the tasks it runs. Without the privilege, say so (RAY_worker_niceness=0 also works)."""
    import os

    try:
        for tid in os.listdir("/proc/self/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), 0)
        return "normal"
    except (OSError, PermissionError) as exc:
        log.warning("orchestrator actor stays at niceness %s (%s); set RAY_worker_niceness=0 for a faster "
                    "dispatch loop", os.getpriority(os.PRIO_PROCESS, 0), exc)
        return "niced"


def start_event_dispatcher(config: RuntimeConfig, store: Any):
    """The dispatcher of stored events to the configured sinks (in-process subscribers, a Redis stream, a
    webhook), started; None when no sink is configured."""
    if not (config.redis_url or config.webhook_url or config.event_subscribers):
        return None
    from ..store import EventDispatcher, RedisStreamSink, WebhookSink

    sinks = []
    if config.event_subscribers:
        import importlib

        from ..store.sinks import InProcessSink

        local = InProcessSink("in-process:orchestrator", durable=True)  # resumes where it stopped
        for spec in config.event_subscribers:
            target, _, prefix = spec.partition("@")
            module, _, name = target.partition(":")
            try:
                callback = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError) as exc:
                raise OrchestratorError(f"Event subscriber '{spec}' cannot be loaded ({exc}); give it as "
                                        "module:function[@type.prefix]") from exc
            local.subscribe(callback, prefix)
        sinks.append(local)
    if config.redis_url:
        sinks.append(RedisStreamSink(config.redis_url, stream=config.redis_stream))
    if config.webhook_url:
        sinks.append(WebhookSink(config.webhook_url, config.webhook_secret))
    if not sinks:
        return None
    dispatcher = EventDispatcher(store, sinks)
    dispatcher.start()
    return dispatcher


def start_predictions(config: RuntimeConfig, store: Any, lock: Any, state: RuntimeState):
    """Task predictions for tasks without an expected duration (a background thread), or None when they are off
    or no trained model is there (said in the log)."""
    if not config.predict_tasks:
        return None
    from .prediction import TaskPredictions

    try:
        predictions = TaskPredictions(store, lock, config.models_dir)
        predictions.on_predicted = state.update_predictions
        return predictions
    except Exception as exc:  # noqa: BLE001 - no trained model: run without predictions, say so
        log.warning("task predictions off: %s", exc)
        return None


def start_memory_sizing(config: RuntimeConfig, store: Any, state: RuntimeState):
    """In "sized" mode (`memory_requests`), the memory sizer of tasks that declare no memory, seeded from the
    recent runs in the store and attached to the run state; None in "declared" mode. A store that cannot be read
    now only leaves the history empty (tasks are sized once peaks are recorded)."""
    if config.memory_requests != "sized":
        return None
    from .memory_requests import MemoryRequests

    sizer = MemoryRequests(config.memory_sizing_k, config.memory_sizing_margin)
    try:
        sizer.seed(store)
    except Exception as exc:  # noqa: BLE001 - advisory history: run on, say so
        log.warning("memory sizing history not seeded from the store: %s", exc)
    state.memory_sizer = sizer
    return sizer

"""Structured logs: a `logging.Formatter` that writes one JSON object per line, with the run and task a
record is about (pass them as `extra={"run_id": ..., "task_id": ...}` or use `task_logger`)."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format records as JSON lines: ts (ISO 8601, UTC), level, logger, message, run_id, task_id, then any
    other `extra` fields, and `exc` with the traceback when there is one."""

    def __init__(self, static_fields: dict[str, Any] | None = None):
        super().__init__()
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": getattr(record, "run_id", None),
            "task_id": getattr(record, "task_id", None),
            **self.static_fields,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=repr, ensure_ascii=False)


def configure_json_logging(level: int | str = logging.INFO, stream: TextIO | None = None,
                           logger: str = "orchestrator", **static_fields: Any) -> logging.Handler:
    """Send `logger` (and its children) to `stream` (stderr) as JSON lines; returns the handler added."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(static_fields))
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(level)
    return handler


def task_logger(logger: logging.Logger | str, run_id: str, task_id: str | None = None) -> logging.LoggerAdapter:
    """A logger whose records all carry `run_id` (and `task_id`)."""
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return _ContextAdapter(base, {"run_id": run_id, "task_id": task_id})


class _ContextAdapter(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


_event_log = logging.getLogger("orchestrator.events")


def log_event(event: Any) -> None:
    """An event subscriber (`RuntimeConfig.event_subscribers`, "orchestrator.store.logs:log_event"): each event
    as a structured log line carrying its id, type, run and task."""
    _event_log.info("event %s", event.type, extra={"run_id": event.run_id, "task_id": event.task_id,
                                                   "event_id": event.id, "payload": event.payload})

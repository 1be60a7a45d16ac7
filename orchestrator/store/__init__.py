"""The durable state store (SQLite or PostgreSQL) and its event outbox; see `Store` and `EventDispatcher`."""

from .database import mask_url
from .events import EventDispatcher
from .records import (
    ApiKeyRecord,
    Change,
    DecisionRecord,
    EventRecord,
    ExecutionRecord,
    MetricRecord,
    OptimizationRecord,
    Page,
    PredictionActual,
    PredictionRecord,
    SystemSample,
    TaskChange,
    TaskRecord,
    WorkflowChange,
    WorkflowRecord,
)
from .runs import new_run_id
from .sinks import DeliveryError, InProcessSink, RedisStreamSink, Sink, WebhookSink
from .store import Store

__all__ = [
    "ApiKeyRecord", "Change", "DecisionRecord", "DeliveryError", "EventDispatcher", "EventRecord",
    "ExecutionRecord", "InProcessSink", "MetricRecord", "OptimizationRecord", "Page", "PredictionActual",
    "PredictionRecord", "RedisStreamSink", "Sink", "Store", "SystemSample", "TaskChange", "TaskRecord",
    "WebhookSink", "WorkflowChange", "WorkflowRecord", "mask_url", "new_run_id",
]

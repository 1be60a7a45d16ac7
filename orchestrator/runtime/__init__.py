"""The Ray runtime: an orchestrator actor that runs workflow DAGs with policy-driven dispatch, durable state,
retries, timeouts, cancellation, resume, events and metrics. Import `ray` lazily: the simulator never needs it."""

from .api import TaskHandle, WorkflowBuilder, task
from .config import RuntimeConfig

__all__ = ["task", "WorkflowBuilder", "TaskHandle", "RuntimeConfig", "run_workflow", "get_orchestrator"]


def __getattr__(name):
    if name in ("run_workflow", "get_orchestrator", "connect_ray", "wait_for"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)

"""The successful attempts of the most recent runs in the store, oldest run first: what the runtime's online
models (task predictions, memory sizing) start from when the orchestrator starts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def recent_successes(store: Any, runs: int = 20) -> Iterator[tuple[Any, Any, Any, Any]]:
    """(run record, workflow spec, task spec, execution record) per successful attempt of a known task."""
    for rec in reversed(store.list_workflows(limit=runs)):  # oldest first
        spec = store.load_spec(rec.run_id)
        tasks = {t.id: t for t in spec.tasks}
        for e in store.executions(rec.run_id):
            task = tasks.get(e.task_id)
            if task is not None and e.status == "succeeded":
                yield rec, spec, task, e

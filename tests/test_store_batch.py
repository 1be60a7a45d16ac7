"""State changes and their history rows (executions, decisions) are written in one transaction: all or nothing."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidTransitionError
from orchestrator.model import Workflow
from orchestrator.states import TaskStatus
from orchestrator.store import Store
from orchestrator.store.records import DecisionRecord, ExecutionRecord, TaskChange


def _store(url, tmp_path):
    return Store.open(url, data_dir=tmp_path)


def test_changes_and_history_commit_together(store_url, tmp_path):
    store = _store(store_url, tmp_path)
    wf = Workflow(name="w", tasks=[{"id": "a"}, {"id": "b", "depends_on": ["a"]}])
    run = store.create_workflow(wf, "fifo")
    store.apply(
        [TaskChange(run, "a", TaskStatus.READY, expected=TaskStatus.PENDING),
         TaskChange(run, "a", TaskStatus.RUNNING, attempt=1, node="n0", expected=TaskStatus.READY)],
        decisions=[DecisionRecord(run_id=run, task_id="a", policy="fifo", node="n0", latency_us=12.0)])
    store.apply([TaskChange(run, "a", TaskStatus.SUCCEEDED, expected=TaskStatus.RUNNING)],
                executions=[ExecutionRecord(run_id=run, task_id="a", attempt=1, status="succeeded", node="n0",
                                            duration=0.5)])
    assert [d.task_id for d in store.decisions(run)] == ["a"]
    assert [(e.task_id, e.status) for e in store.executions(run)] == [("a", "succeeded")]
    # An illegal move rolls back the history rows written with it.
    with pytest.raises(InvalidTransitionError):
        store.apply([TaskChange(run, "b", TaskStatus.SUCCEEDED, expected=TaskStatus.PENDING)],
                    executions=[ExecutionRecord(run_id=run, task_id="b", attempt=1, status="succeeded")],
                    decisions=[DecisionRecord(run_id=run, task_id="b", policy="fifo", node="n0")])
    assert [e.task_id for e in store.executions(run)] == ["a"]
    assert [d.task_id for d in store.decisions(run)] == ["a"]
    assert {t.task_id: t.status for t in store.get_tasks(run)}["b"] == TaskStatus.PENDING
    store.close()

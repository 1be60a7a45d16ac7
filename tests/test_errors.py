"""Every error the store and the validation raise is of one kind an HTTP layer maps to a status code: invalid
(422), not found (404), conflict (409), refused (403), unavailable (503)."""

from __future__ import annotations

import pytest

from orchestrator.errors import (
    ConflictError,
    InvalidError,
    NotFoundError,
    OrchestratorError,
    RefusedError,
    UnavailableError,
)
from orchestrator.loaders import workflow_from_dict
from orchestrator.states import WorkflowStatus
from orchestrator.store import Store, WorkflowChange


def _kind(call) -> tuple[type, int]:
    with pytest.raises(OrchestratorError) as caught:
        call()
    exc = caught.value
    kinds = [k for k in (InvalidError, NotFoundError, ConflictError, RefusedError, UnavailableError)
             if isinstance(exc, k)]
    assert len(kinds) == 1, f"{exc!r} is of {kinds}"
    return kinds[0], exc.http_status


def test_store_errors_have_one_kind_each(sqlite_url):
    store = Store.open(sqlite_url)
    wf = workflow_from_dict({"name": "w", "tasks": [{"id": "a"}]})
    (run_id,) = store.create_workflows([(wf, "fifo", "same")])
    try:
        assert _kind(lambda: store.get_workflow("ghost")) == (NotFoundError, 404)
        assert _kind(lambda: store.load_result("result://same/a")) == (NotFoundError, 404)
        assert _kind(lambda: store.revoke_api_key("nobody")) == (NotFoundError, 404)
        assert _kind(lambda: store.create_workflows([(wf, "fifo", "same")])) == (ConflictError, 409)
        assert _kind(lambda: store.apply([WorkflowChange(run_id, WorkflowStatus.SUCCEEDED)])) == (ConflictError, 409)
        store.create_api_key("ci", "viewer")
        assert _kind(lambda: store.create_api_key("ci", "viewer")) == (ConflictError, 409)
        assert _kind(lambda: store.create_workflows([(wf, "fifo", "a/b")])) == (InvalidError, 422)
        assert _kind(lambda: store.page_runs(limit=0)) == (InvalidError, 422)
        assert _kind(lambda: store.page_runs(cursor="garbage")) == (InvalidError, 422)
        store.acquire_lease("one", ttl=60, wait=0)
        assert _kind(lambda: store.acquire_lease("two", ttl=60, wait=0)) == (RefusedError, 403)
    finally:
        store.close()


def test_an_unreachable_database_is_unavailable():
    assert _kind(lambda: Store.open("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")) == (UnavailableError, 503)


def test_invalid_workflows_are_invalid():
    assert _kind(lambda: workflow_from_dict({"name": "w", "tasks": [{"id": "a", "depends_on": ["x"]}]})) == (
        InvalidError, 422)


def test_a_locked_sqlite_database_is_unavailable_and_the_journal_waits_it_out(tmp_path, monkeypatch):
    """SQLite locked by another writer past the busy timeout: the write is unavailable (retry later), not refused;
    the write journal keeps it and writes it once the lock is gone."""
    import sqlite3

    from orchestrator.runtime.journal import WriteJournal
    from orchestrator.store import database

    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 100)
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    store.acquire_lease("me", ttl=60, wait=0)
    (run_id,) = store.create_workflows([(workflow_from_dict({"name": "w", "tasks": [{"id": "a"}]}), "fifo", None)])
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    journal = WriteJournal(store, "me", first_delay=0.0)
    journal.add([WorkflowChange(run_id, WorkflowStatus.RUNNING)])
    try:
        assert journal.flush() is None and "locked" in journal.last_error
        assert _kind(lambda: store.apply([WorkflowChange(run_id, WorkflowStatus.RUNNING)])) == (UnavailableError, 503)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [c.status for c in journal.flush()] == [WorkflowStatus.RUNNING]
    assert store.get_workflow(run_id).status == WorkflowStatus.RUNNING
    store.close()

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

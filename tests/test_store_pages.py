"""Paged reads (`Store.page_runs`, `page_tasks`, `page_executions`, `page_events`): a walk over every page returns
each row once, in the listing's order, whatever is written between two pages; bad cursors, limits, statuses and
unknown runs each get their own clear error. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import string
from collections.abc import Callable

import pytest

from orchestrator.errors import InvalidError, StoreError, StoreNotFoundError
from orchestrator.model import Workflow
from orchestrator.states import TaskStatus, WorkflowStatus
from orchestrator.store import ExecutionRecord, Page, Store, TaskChange, WorkflowChange
from orchestrator.store.records import RunNote

LIMITS = (1, 2, 3, 7, 1000)


@pytest.fixture
def store(store_url, tmp_path):
    s = Store.open(store_url, data_dir=tmp_path)
    yield s
    s.close()


def _workflow(name: str, n: int) -> Workflow:
    return Workflow(name=name, tasks=[{"id": f"t{i:02d}"} for i in range(n)])


def walk(fetch: Callable[..., Page], between: Callable[[int], None] | None = None, **arguments) -> list:
    """Every item of a listing, page by page; `between(i)` writes something after page i (for the first three
    pages: a listing whose new rows come last would otherwise never end at limit 1)."""
    items, cursor, pages = [], None, 0
    while True:
        page = fetch(cursor=cursor, **arguments)
        assert isinstance(page.items, tuple)
        items.extend(page.items)
        pages += 1
        if page.next_cursor is None:
            assert len(page.items) <= arguments["limit"]
            return items
        assert len(page.items) == arguments["limit"]  # only the last page is short
        if between is not None and pages <= 3:
            between(pages)
        cursor = page.next_cursor


def test_runs_walk_newest_first_once_each_while_runs_are_created(store):
    # Runs created in one batch share their created_at: the run id breaks the tie.
    store.create_workflows([(_workflow("batch", 1), "fifo", f"b-{i}") for i in (3, 1, 4, 0, 2)])
    for i in range(6):
        store.create_workflow(_workflow("single", 1), "fifo", run_id=f"s-{i}")
    for limit in LIMITS:
        expected = store.list_workflows(limit=1000)
        assert [r.run_id for r in expected if r.name == "batch"] == [f"b-{i}" for i in range(5)]

        def create(page: int, limit=limit) -> None:
            store.create_workflows([(_workflow("late", 1), "fifo", f"late-{limit}-{page}-{j}") for j in range(2)])

        walked = walk(store.page_runs, between=create, limit=limit)
        assert walked == expected  # the runs created during the walk are newer: none of them shows


def test_runs_filter_by_status_and_name(store):
    runs = [store.create_workflow(_workflow(name, 1), "fifo", run_id=f"{name}-{i}")
            for i in range(4) for name in ("etl", "ml")]
    store.apply([WorkflowChange(r, WorkflowStatus.RUNNING) for r in runs if r.endswith(("-0", "-1"))])
    running = walk(store.page_runs, status=WorkflowStatus.RUNNING, limit=3)
    assert sorted(r.run_id for r in running) == ["etl-0", "etl-1", "ml-0", "ml-1"]
    assert all(r.status is WorkflowStatus.RUNNING for r in running)
    assert walk(store.page_runs, status="running", limit=3) == running  # the value works as well as the enum
    etl = walk(store.page_runs, name="etl", limit=2)
    assert [r.run_id for r in etl] == [r.run_id for r in store.list_workflows(limit=100) if r.name == "etl"]
    assert [r.run_id for r in walk(store.page_runs, status="pending", name="ml", limit=1)] == \
        [r.run_id for r in store.list_workflows(limit=100) if r.name == "ml" and r.status.value == "pending"]
    assert walk(store.page_runs, name="nothing", limit=5) == []
    assert store.page_runs(name="nothing") == Page((), None)


def test_a_listing_that_ends_on_a_full_page_has_no_empty_page_after_it(store):
    run = store.create_workflow(_workflow("w", 6), "fifo")
    first = store.page_tasks(run, limit=3)
    second = store.page_tasks(run, cursor=first.next_cursor, limit=3)
    assert [t.task_id for t in first.items + second.items] == [f"t{i:02d}" for i in range(6)]
    assert second.next_cursor is None
    assert store.page_tasks(run, limit=6).next_cursor is None


def test_tasks_walk_in_spec_order_while_tasks_move_and_other_runs_are_created(store):
    wf = Workflow(name="w", tasks=[{"id": name} for name in ("zeta", "alpha", "mu", "beta", "omega", "kappa",
                                                             "delta", "eta", "iota", "gamma", "nu")])
    run = store.create_workflow(wf, "fifo")
    for limit in LIMITS:
        def churn(page: int) -> None:
            store.create_workflow(wf, "fifo")  # another run of the same workflow: its tasks never show here
            pending = [t for t in store.get_tasks(run) if t.status is TaskStatus.PENDING]
            store.apply([TaskChange(run, t.task_id, TaskStatus.READY) for t in pending[:2]])

        walked = walk(store.page_tasks, between=churn, run_id=run, limit=limit)
        assert [t.task_id for t in walked] == [t.id for t in wf.tasks]
        assert [t.position for t in walked] == list(range(len(wf.tasks)))
        assert {t.run_id for t in walked} == {run}


def test_tasks_filter_by_status(store):
    run = store.create_workflow(_workflow("w", 10), "fifo")
    store.apply([TaskChange(run, f"t{i:02d}", TaskStatus.READY) for i in (1, 4, 5, 8)])
    ready = walk(store.page_tasks, run_id=run, status=TaskStatus.READY, limit=3)
    assert [t.task_id for t in ready] == ["t01", "t04", "t05", "t08"]
    assert [t.task_id for t in walk(store.page_tasks, run_id=run, status="pending", limit=4)] == \
        ["t00", "t02", "t03", "t06", "t07", "t09"]
    assert walk(store.page_tasks, run_id=run, status="running", limit=4) == []


def test_executions_walk_in_id_order_and_rows_recorded_meanwhile_come_last(store):
    run = store.create_workflow(_workflow("w", 3), "fifo")
    attempt = iter(range(1, 1000))
    store.record_executions([ExecutionRecord(run, f"t{i % 3:02d}", next(attempt), "failed") for i in range(8)])
    for limit in LIMITS:
        def record(page: int) -> None:
            store.record_executions([ExecutionRecord(run, "t01", next(attempt), "failed")])

        walked = walk(store.page_executions, between=record, run_id=run, limit=limit)
        assert walked == store.executions(run)  # every row once, including those recorded during the walk
        assert [e.id for e in walked] == sorted({e.id for e in walked})


def test_executions_filter_by_task(store):
    run = store.create_workflow(_workflow("w", 3), "fifo")
    other = store.create_workflow(_workflow("w", 3), "fifo")
    store.record_executions([ExecutionRecord(r, f"t{i % 3:02d}", i, "failed") for i in range(9) for r in (run, other)])
    walked = walk(store.page_executions, run_id=run, task_id="t02", limit=2)
    assert [(e.run_id, e.task_id, e.attempt) for e in walked] == [(run, "t02", 2), (run, "t02", 5), (run, "t02", 8)]
    assert walked == store.executions(run, "t02")
    assert store.page_executions(run, task_id="t00", limit=10).items == tuple(store.executions(run, "t00"))
    assert walk(store.page_executions, run_id=store.create_workflow(_workflow("w", 1), "fifo"), limit=5) == []


def test_events_walk_in_id_order_and_events_written_meanwhile_come_last(store):
    run = store.create_workflow(_workflow("w", 40), "fifo")
    other = store.create_workflow(_workflow("w", 40), "fifo")
    store.apply([TaskChange(r, f"t{i:02d}", TaskStatus.READY) for r in (run, other) for i in range(3)])
    pending = iter(f"t{i:02d}" for i in range(3, 40))
    for limit in LIMITS:
        def write(page: int) -> None:
            task_id = next(pending)
            store.apply([TaskChange(run, task_id, TaskStatus.READY), RunNote(run, "workflow.note", {"page": page}),
                         TaskChange(other, task_id, TaskStatus.READY)])
            store.record_rejection("bad file", name="x")

        for arguments, everything in (({"run_id": run}, lambda: store.events(run_id=run)),
                                      ({}, lambda: store.events()),
                                      ({"run_id": run, "type_prefix": "task."},
                                       lambda: store.events(run_id=run, type_prefix="task."))):
            walked = walk(store.page_events, between=write, limit=limit, **arguments)
            assert walked == everything()  # every event once, including those written during the walk
            assert [e.id for e in walked] == sorted({e.id for e in walked})


def test_events_filter_by_type_prefix_across_runs(store):
    runs = [store.create_workflow(_workflow("w", 2), "fifo") for _ in range(3)]
    store.apply([TaskChange(r, "t00", TaskStatus.READY) for r in runs])
    store.record_rejection("cycle", name="bad")
    tasks = walk(store.page_events, type_prefix="task.", limit=2)
    assert [(e.run_id, e.task_id) for e in tasks] == [(r, "t00") for r in runs]
    assert [e.type for e in walk(store.page_events, type_prefix="workflow.rejected", limit=2)] == ["workflow.rejected"]
    assert walk(store.page_events, type_prefix="task_", limit=2) == []  # '_' is a character, not a wildcard
    assert walk(store.page_events, type_prefix="", limit=3) == store.events()  # empty prefix: no filter


def _tampered(cursor: str) -> str:
    """The cursor with one character in its middle changed (every bit of a middle character is data)."""
    i = len(cursor) // 2
    alphabet = string.ascii_letters + string.digits + "-_"
    return cursor[:i] + next(c for c in alphabet if c != cursor[i]) + cursor[i + 1:]


def test_bad_and_foreign_cursors_are_refused_naming_the_parameter(store):
    run = store.create_workflow(_workflow("w", 5), "fifo")
    other = store.create_workflow(_workflow("w", 5), "fifo")
    task_cursor = store.page_tasks(run, limit=2).next_cursor
    runs_cursor = store.page_runs(limit=1).next_cursor
    assert task_cursor and runs_cursor
    assert set(task_cursor) <= set(string.ascii_letters + string.digits + "-_")  # safe in a URL as it is
    body = base64.urlsafe_b64decode(task_cursor + "=" * (-len(task_cursor) % 4))
    assert body.endswith(b",[1]]")  # after position 1; the same key edited, checksum left as it was:
    forged = base64.urlsafe_b64encode(body[:-4] + b"3]]").rstrip(b"=").decode()
    cases = [
        (lambda: store.page_tasks(run, cursor="not a cursor"), "not a cursor of this store"),
        (lambda: store.page_tasks(run, cursor="bm90IGEgY3Vyc29y"), "checksum"),  # base64 of something else
        (lambda: store.page_tasks(run, cursor=""), "checksum"),
        (lambda: store.page_tasks(run, cursor=_tampered(task_cursor)), "checksum"),
        (lambda: store.page_tasks(run, cursor=task_cursor[:-8]), "checksum"),  # cut short
        (lambda: store.page_tasks(run, cursor=forged), "checksum"),
        (lambda: store.page_tasks(run, cursor=task_cursor + "é"), "not a cursor of this store"),
        (lambda: store.page_tasks(run, cursor=12), "not a cursor of this store"),
        (lambda: store.page_runs(cursor=task_cursor), "given out by page_tasks, not page_runs"),
        (lambda: store.page_events(cursor=task_cursor), "given out by page_tasks, not page_events"),
        (lambda: store.page_tasks(other, cursor=task_cursor), "other arguments"),
        (lambda: store.page_tasks(run, status="pending", cursor=task_cursor), "other arguments"),
        (lambda: store.page_runs(status="pending", cursor=runs_cursor), "other arguments"),
    ]
    for call, words in cases:
        with pytest.raises(InvalidError, match="cursor") as caught:
            call()
        assert words in str(caught.value)
        assert isinstance(caught.value, StoreError) and caught.value.http_status == 422
    # The cursor itself still works, with the arguments that gave it out.
    assert [t.task_id for t in store.page_tasks(run, cursor=task_cursor, limit=2).items] == ["t02", "t03"]


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, True, 2.5, "10", None])
def test_limit_must_be_a_whole_number_from_1_to_1000(store, limit):
    run = store.create_workflow(_workflow("w", 1), "fifo")
    for call in (lambda: store.page_runs(limit=limit), lambda: store.page_tasks(run, limit=limit),
                 lambda: store.page_executions(run, limit=limit), lambda: store.page_events(limit=limit)):
        with pytest.raises(InvalidError, match="limit must be a whole number from 1 to 1000"):
            call()


def test_unknown_status_is_refused_with_the_known_ones(store):
    run = store.create_workflow(_workflow("w", 1), "fifo")
    with pytest.raises(InvalidError, match="status must be one of pending, running.*not 'runing'"):
        store.page_runs(status="runing")
    with pytest.raises(InvalidError, match="status must be one of pending, ready.*not 'done'"):
        store.page_tasks(run, status="done")


def test_unknown_run_or_task_is_not_found(store):
    run = store.create_workflow(_workflow("w", 1), "fifo")
    for call in (lambda: store.page_tasks("nope"), lambda: store.page_executions("nope"),
                 lambda: store.page_events(run_id="nope"), lambda: store.page_tasks("nope", status="ready")):
        with pytest.raises(StoreNotFoundError, match="no workflow run 'nope'"):
            call()
    with pytest.raises(StoreNotFoundError, match="No task 'x' in workflow run"):
        store.page_executions(run, task_id="x")
    # A run that exists but has nothing to list gives an empty last page.
    assert store.page_executions(run) == Page((), None)
    assert store.page_tasks(run, status="running") == Page((), None)

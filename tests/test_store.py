"""The state store against SQLite and a real PostgreSQL: schema, round trips, all-or-nothing batches, one
outbox event per change in order, concurrent writers, history rows, API keys and clear errors."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InvalidTransitionError, StoreError
from orchestrator.model import Resources, TaskSpec, Workflow
from orchestrator.states import TASK_TRANSITIONS, TaskStatus, WorkflowStatus
from orchestrator.store import (
    DecisionRecord,
    ExecutionRecord,
    PredictionActual,
    PredictionRecord,
    Store,
    SystemSample,
    TaskChange,
    WorkflowChange,
)
from orchestrator.store.database import head_revision
from orchestrator.store.schema import Base

TS = TaskStatus
WS = WorkflowStatus


def diamond(name: str = "diamond") -> Workflow:
    return Workflow(name=name, family="test", tasks=[
        TaskSpec(id="a", resources=Resources(cpus=2, memory=1024)),
        TaskSpec(id="b", depends_on=["a"], priority=3),
        TaskSpec(id="c", depends_on=["a"], resources=Resources(gpus=1)),
        TaskSpec(id="d", depends_on=["b", "c"]),
    ])


@pytest.fixture
def store(store_url):
    with Store.open(store_url) as s:
        yield s


def statuses(store: Store, run_id: str) -> dict[str, TaskStatus]:
    return {t.task_id: t.status for t in store.get_tasks(run_id)}


def snapshot(store: Store, run_id: str):
    """Everything `apply` may change, for before/after comparisons."""
    return store.get_workflow(run_id), store.get_tasks(run_id), store.events(limit=100_000)


# ---------------------------------------------------------------------- schema and opening


def test_migrations_create_every_table_and_match_the_models(store):
    with store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(conn).get_indexes("tasks")}
        assert indexes["ix_tasks_run_id_status"][:2] == ["run_id", "status"]
        if store.dialect == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_reopening_keeps_the_data_and_does_not_migrate_again(store_url):
    with Store.open(store_url) as s:
        run_id = s.create_workflow(diamond(), "fifo")
    with Store.open(store_url) as s:
        assert s.get_workflow(run_id).name == "diamond"
        assert len(s.get_tasks(run_id)) == 4


def test_default_location_is_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "data"))
    with Store.open() as s:
        assert s.dialect == "sqlite"
        assert s.storage_dir == (tmp_path / "data" / "results").resolve()
        s.create_workflow(diamond(), "fifo")
    assert (tmp_path / "data" / "state.db").exists()


@pytest.mark.parametrize("url, named", [
    ("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nowhere", "127.0.0.1:1/nowhere"),
    ("postgresql://postgres:s3cret@127.0.0.1:1/nowhere", "127.0.0.1:1/nowhere"),
    ("mysql://root:s3cret@127.0.0.1/db", "mysql"),
    ("not a url at all", "not a url at all"),
    ("sqlite://", "sqlite://"),
    ("sqlite:////proc/no-such-dir/state.db", "/proc/no-such-dir/state.db"),
])
def test_unusable_database_url_gives_a_store_error_naming_it(url, named):
    with pytest.raises(StoreError) as info:
        Store.open(url)
    message = str(info.value)
    assert named in message
    assert "s3cret" not in message


def test_unreachable_server_error_names_the_cause():
    with pytest.raises(StoreError, match=r"postgres:\*\*\*@127\.0\.0\.1:1/nowhere.*(refused|connect)"):
        Store.open("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nowhere")


# ---------------------------------------------------------------------- workflows: create and read


def test_create_then_read_round_trip(store):
    wf = diamond()
    run_id = store.create_workflow(wf, "heft", run_id="run-1")
    assert run_id == "run-1"

    rec = store.get_workflow(run_id)
    assert (rec.name, rec.family, rec.policy, rec.status) == ("diamond", "test", "heft", WS.PENDING)
    assert rec.started_at is None and rec.finished_at is None and rec.created_at > 0

    tasks = store.get_tasks(run_id)
    assert [t.task_id for t in tasks] == wf.task_ids()  # spec order
    assert all(t.status is TS.PENDING and t.attempt == 0 for t in tasks)
    a, b, c, _ = tasks
    assert (a.cpus, a.memory, b.priority, c.gpus) == (2.0, 1024, 3, 1.0)

    assert store.load_spec(run_id) == wf
    assert store.task_counts(run_id) == {s.value: (4 if s is TS.PENDING else 0) for s in TS}
    assert store.unfinished_workflows() == [run_id]
    with store.engine.connect() as conn:
        deps = {tuple(r) for r in conn.execute(sa.text("SELECT task_id, depends_on FROM task_dependencies"))}
    assert deps == {("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")}

    [event] = store.events()
    assert (event.type, event.run_id, event.task_id) == ("workflow.submitted", run_id, None)
    assert event.payload["tasks"] == 4 and event.payload["policy"] == "heft"


def test_run_ids_are_unique_and_a_duplicate_or_malformed_one_is_refused(store):
    generated = {store.create_workflow(diamond("My Flow!"), "fifo") for _ in range(5)}
    assert len(generated) == 5 and all(i.startswith("My-Flow-") for i in generated)

    store.create_workflow(diamond(), "fifo", run_id="same")
    before = snapshot(store, "same")
    with pytest.raises(StoreError, match="'same' already exists"):
        store.create_workflow(diamond("other"), "fifo", run_id="same")
    with pytest.raises(StoreError, match="Run id 'a/b'"):
        store.create_workflow(diamond(), "fifo", run_id="a/b")
    assert snapshot(store, "same") == before
    assert store.get_workflow("same").name == "diamond"


def test_unknown_run_is_named(store):
    for read in (store.get_workflow, store.get_tasks, store.task_counts, store.load_spec):
        with pytest.raises(StoreError, match="no workflow run 'ghost'"):
            read("ghost")
    with pytest.raises(StoreError, match="No workflow run 'ghost'"):
        store.apply([WorkflowChange("ghost", WS.RUNNING)])
    with pytest.raises(StoreError, match=r"No workflow run 'ghost' \(change 1 of 1\)"):
        store.apply([TaskChange("ghost", "a", TS.READY, expected=TS.PENDING)])


def test_large_workflow_is_created_in_bulk(store):
    n = 10_000
    wf = Workflow(name="big", tasks=[TaskSpec(id=f"t{i}", depends_on=[f"t{i - 1}"] if i % 10 else [])
                                     for i in range(n)])
    run_id = store.create_workflow(wf, "fifo")
    assert store.task_counts(run_id)["pending"] == n
    store.apply([TaskChange(run_id, f"t{i}", TS.READY) for i in range(0, 1000)])
    assert store.task_counts(run_id)["ready"] == 1000
    assert len(store.events(run_id=run_id, limit=5000)) == 1001


# ---------------------------------------------------------------------- apply: transitions and timestamps


def test_lifecycle_sets_fields_and_timestamps(store):
    run_id = store.create_workflow(diamond(), "fifo")
    store.apply([WorkflowChange(run_id, WS.RUNNING, at=100.0), TaskChange(run_id, "a", TS.READY, at=101.0)])
    store.apply([TaskChange(run_id, "a", TS.RUNNING, attempt=1, node="n1", at=102.0, expected=TS.READY)])
    store.apply([TaskChange(run_id, "a", TS.RETRYING, error="boom", at=103.0, next_attempt_at=110.0)])
    a = store.get_tasks(run_id)[0]
    assert (a.status, a.attempt, a.node, a.error, a.next_attempt_at) == (TS.RETRYING, 1, "n1", "boom", 110.0)
    assert (a.ready_at, a.started_at, a.finished_at) == (101.0, 102.0, None)

    store.apply([TaskChange(run_id, "a", TS.READY, at=110.0),
                 TaskChange(run_id, "a", TS.RUNNING, attempt=2, node="n2", at=111.0)])
    store.apply([TaskChange(run_id, "a", TS.SUCCEEDED, result_ref="result://x/a", at=115.0)])
    a = store.get_tasks(run_id)[0]
    assert (a.status, a.attempt, a.node, a.result_ref) == (TS.SUCCEEDED, 2, "n2", "result://x/a")
    assert a.error is None  # success clears the error of the failed attempt
    assert (a.ready_at, a.started_at, a.finished_at) == (110.0, 111.0, 115.0)

    store.apply([TaskChange(run_id, t, TS.SKIPPED) for t in "bcd"]
                + [WorkflowChange(run_id, WS.FAILED, error="a downstream failure", at=120.0)])
    rec = store.get_workflow(run_id)
    assert (rec.status, rec.error, rec.started_at, rec.finished_at) == (WS.FAILED, "a downstream failure",
                                                                      100.0, 120.0)
    assert store.unfinished_workflows() == []
    assert [r.run_id for r in store.list_workflows(WS.FAILED)] == [run_id]
    assert store.list_workflows(WS.RUNNING) == []


def test_illegal_transition_rolls_back_the_whole_batch(store):
    run_id = store.create_workflow(diamond(), "fifo")
    store.apply([WorkflowChange(run_id, WS.RUNNING), TaskChange(run_id, "a", TS.READY)])
    before = snapshot(store, run_id)

    with pytest.raises(InvalidTransitionError, match=r"Task 'c' .* from 'pending' to 'running' \(change 3 of 3\)"):
        store.apply([TaskChange(run_id, "a", TS.RUNNING, attempt=1),
                     TaskChange(run_id, "b", TS.READY),
                     TaskChange(run_id, "c", TS.RUNNING)])
    assert snapshot(store, run_id) == before

    with pytest.raises(InvalidTransitionError, match="Workflow run .* from 'running' to 'pending'"):
        store.apply([TaskChange(run_id, "a", TS.RUNNING), WorkflowChange(run_id, WS.PENDING)])
    assert snapshot(store, run_id) == before

    with pytest.raises(StoreError, match="No task 'zz'"):
        store.apply([TaskChange(run_id, "a", TS.RUNNING), TaskChange(run_id, "zz", TS.READY)])
    assert snapshot(store, run_id) == before

    store.apply([])  # an empty batch is no change at all
    assert snapshot(store, run_id) == before


def test_wrong_expected_status_is_caught_by_the_database_and_rolls_back(store):
    """`expected` skips the read; the guarded update still refuses a task that is not in that status."""
    run_id = store.create_workflow(diamond(), "fifo")
    store.apply([TaskChange(run_id, "a", TS.READY)])
    before = snapshot(store, run_id)
    with pytest.raises(InvalidTransitionError, match=r"Task 'b' .* is 'pending', not the expected 'ready'"):
        store.apply([TaskChange(run_id, "a", TS.RUNNING, expected=TS.READY),
                     TaskChange(run_id, "b", TS.RUNNING, expected=TS.READY)])
    assert snapshot(store, run_id) == before
    with pytest.raises(StoreError, match="No task 'ghost'"):
        store.apply([TaskChange(run_id, "ghost", TS.RUNNING, expected=TS.READY)])
    assert snapshot(store, run_id) == before


# Random batches of moves, legal or not, checked against a model that uses the transition table.
_moves = st.lists(
    st.tuples(st.sampled_from("abcd"), st.sampled_from(list(TS)), st.booleans(), st.booleans()),
    min_size=1, max_size=8,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_moves, min_size=1, max_size=6))
def test_every_batch_is_all_or_nothing_with_one_event_per_change_in_order(store, batches):
    run_id = store.create_workflow(diamond(), "fifo")
    model = {t: TS.PENDING for t in "abcd"}
    last_event = store.latest_event_id()
    for batch in batches:
        changes, legal, trial = [], True, dict(model)
        for task_id, new, give_expected, wrong_expected in batch:
            expected = None
            if give_expected:
                expected = trial[task_id]
                if wrong_expected:
                    expected = next(s for s in TS if s is not trial[task_id])
                    legal = False
            legal = legal and (trial[task_id], new) in TASK_TRANSITIONS
            trial[task_id] = new
            changes.append(TaskChange(run_id, task_id, new, attempt=len(changes), expected=expected))
        if legal:
            store.apply(changes)
            model = trial
        else:
            with pytest.raises(InvalidTransitionError):
                store.apply(changes)
        assert statuses(store, run_id) == model
        new_events = store.events(after_id=last_event)
        if legal:
            assert [(e.task_id, e.type, e.payload["status"], e.payload["attempt"]) for e in new_events] == [
                (c.task_id, TASK_TRANSITIONS[(TS(e.payload["previous"]), c.status)], c.status.value, c.attempt)
                for c, e in zip(changes, new_events)]
            assert len(new_events) == len(changes)
            assert [e.id for e in new_events] == sorted(e.id for e in new_events)
            last_event = new_events[-1].id
        else:
            assert new_events == []


def test_several_changes_of_one_task_in_a_batch_fold_in_order(store):
    run_id = store.create_workflow(diamond(), "fifo")
    store.apply([
        TaskChange(run_id, "a", TS.READY, at=1.0),
        TaskChange(run_id, "a", TS.RUNNING, attempt=1, node="n1", at=2.0),
        TaskChange(run_id, "a", TS.RETRYING, error="e1", next_attempt_at=5.0, at=3.0),
        TaskChange(run_id, "a", TS.READY, at=5.0),
        TaskChange(run_id, "a", TS.RUNNING, attempt=2, at=6.0),
        TaskChange(run_id, "a", TS.FAILED, error="e2", at=7.0),
    ])
    a = store.get_tasks(run_id)[0]
    assert (a.status, a.attempt, a.node, a.error) == (TS.FAILED, 2, "n1", "e2")
    assert (a.ready_at, a.started_at, a.finished_at, a.next_attempt_at) == (5.0, 6.0, 7.0, 5.0)
    assert [e.type for e in store.events(run_id=run_id)][1:] == [
        "task.ready", "task.started", "task.retrying", "task.ready", "task.started", "task.failed"]


def test_concurrent_writers_never_apply_the_same_move_twice(store):
    """Racing threads each try to start the same ready tasks: every task is started exactly once."""
    run_id = store.create_workflow(diamond(), "fifo")
    store.apply([TaskChange(run_id, t, TS.READY) for t in "abcd"])
    wins: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def racer(node: str, use_expected: bool) -> None:
        barrier.wait()
        for t in "abcd":
            try:
                store.apply([TaskChange(run_id, t, TS.RUNNING, node=node,
                                        expected=TS.READY if use_expected else None)])
                wins.append(t)
            except InvalidTransitionError:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=racer, args=(f"n{i}", i % 2 == 0)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sorted(wins) == list("abcd")
    started = [e for e in store.events(run_id=run_id) if e.type == "task.started"]
    assert sorted(e.task_id for e in started) == list("abcd")


def test_mixed_concurrent_batches_on_one_run_do_not_deadlock(store):
    """A batch that starts a run and readies a task races one that readies the same task: one wins cleanly."""
    runs = [store.create_workflow(diamond(f"w{i}"), "fifo") for i in range(6)]
    outcomes: dict[str, list[str]] = {r: [] for r in runs}

    def expect(run_id: str) -> TaskStatus | None:  # half the runs check against `expected`, half read
        return TS.PENDING if runs.index(run_id) % 2 else None

    def racer(batch_for, barrier: threading.Barrier) -> None:
        for r in runs:
            barrier.wait()
            try:
                store.apply(batch_for(r))
                outcomes[r].append("applied")
            except InvalidTransitionError:
                outcomes[r].append("refused")
            except StoreError as exc:  # a deadlock would surface here
                outcomes[r].append(f"error: {exc}")

    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(target=racer, args=(lambda r: [WorkflowChange(r, WS.RUNNING),
                                                        TaskChange(r, "a", TS.READY, expected=expect(r))], barrier)),
        threading.Thread(target=racer, args=(lambda r: [TaskChange(r, "a", TS.READY, expected=expect(r))], barrier)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for r in runs:
        assert sorted(outcomes[r]) == ["applied", "refused"]
        assert statuses(store, r)["a"] is TS.READY


def test_concurrent_batches_all_land_with_increasing_event_ids(store):
    runs = [store.create_workflow(Workflow(name=f"w{i}", tasks=[TaskSpec(id=f"t{j}") for j in range(50)]), "fifo")
            for i in range(4)]
    first = store.latest_event_id()

    def work(run_id: str) -> None:
        for j in range(50):
            store.apply([TaskChange(run_id, f"t{j}", TS.READY)])

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    events = store.events(after_id=first, limit=10_000)
    assert len(events) == 200
    assert [e.id for e in events] == sorted({e.id for e in events})
    for r in runs:
        assert [e.task_id for e in events if e.run_id == r] == [f"t{j}" for j in range(50)]


# ---------------------------------------------------------------------- history rows


def test_executions_round_trip_with_captured_text_truncated(store):
    run_id = store.create_workflow(diamond(), "fifo")
    noisy = "x" * 100_000 + "\x00" + "the end"
    store.record_executions([
        ExecutionRecord(run_id, "a", 1, "failed", node="n1", started_at=1.0, finished_at=2.0, error="boom",
                        exit_info="exit 1", duration=1.0, cpu=0.5, peak_memory=2**20, stdout=noisy, stderr="warn"),
        ExecutionRecord(run_id, "a", 2, "succeeded", node="n2", duration=0.8),
        ExecutionRecord(run_id, "b", 1, "succeeded"),
    ])
    rows = store.executions(run_id, "a")
    assert [(r.attempt, r.status, r.node) for r in rows] == [(1, "failed", "n1"), (2, "succeeded", "n2")]
    first = rows[0]
    assert (first.duration, first.cpu, first.peak_memory, first.stderr) == (1.0, 0.5, 2**20, "warn")
    assert len(first.stdout.encode()) <= 64 * 1024
    assert first.stdout.endswith("\ufffdthe end") and "truncated" in first.stdout
    assert len(store.executions(run_id)) == 3
    with pytest.raises(StoreError, match="not in the store"):
        store.record_executions([ExecutionRecord(run_id, "ghost", 1, "failed")])


def test_decisions_predictions_metrics_samples_and_optimizations_round_trip(store):
    run_id = store.create_workflow(diamond(), "fifo")
    store.record_decisions([
        DecisionRecord(run_id, "a", "gnn", "n1", input={"features": np.arange(3, dtype=np.float32),
                                                        "nan": math.nan},
                       output={"scores": [0.1, 0.9]}, confidence=0.9, latency_us=120.0, model_version="v3"),
        DecisionRecord(run_id, "b", "gnn", "n2"),
    ])
    d1, d2 = store.decisions(run_id)
    assert d1.input == {"features": [0.0, 1.0, 2.0], "nan": None}  # numpy and NaN made JSON-safe
    assert (d1.output, d1.confidence, d1.model_version, d2.node) == ({"scores": [0.1, 0.9]}, 0.9, "v3", "n2")
    assert d1.id < d2.id and d1.created_at > 0

    store.record_predictions([
        PredictionRecord(run_id, "a", "a", "m1", predicted_runtime=10.0, runtime_lower=8.0, runtime_upper=12.0),
        PredictionRecord(run_id, "a", "a", "m2", predicted_runtime=11.0),
        PredictionRecord(run_id, "b", "b", "m1", predicted_runtime=5.0),
    ])
    assert store.update_prediction_actuals([PredictionActual(run_id, "a", runtime=9.5, cpu=1.0, memory=1e6)]) == 2
    assert store.update_prediction_actuals([PredictionActual(run_id, "b", runtime=4.0, model_version="m9")]) == 0
    done = store.predictions(run_id=run_id, with_actuals=True)
    assert [(p.model_version, p.actual_runtime, p.actual_memory) for p in done] == [("m1", 9.5, 1e6),
                                                                                    ("m2", 9.5, 1e6)]
    assert len(store.predictions(category="b")) == 1

    store.record_metric("makespan_s", 12.5, {"policy": "heft"}, run_id=run_id)
    store.record_metric("throughput", 3.0)
    [m] = store.metrics(name="makespan_s")
    assert (m.value, m.labels, m.run_id) == (12.5, {"policy": "heft"}, run_id)

    store.record_system_samples([SystemSample(8, 3.5, 2**34, 2**33, 4, 3, node="n1", ts=50.0),
                                 SystemSample(16, 7.0, 2**35, 2**34, 9, 6, ts=60.0)])
    assert [(s.node, s.cpus_used) for s in store.system_samples(since=55.0)] == [(None, 7.0)]
    assert len(store.system_samples(node="n1")) == 1

    oid = store.record_optimization("merge-small-tasks", "merged 12 tasks", {"group": 12}, predicted_gain=0.2,
                                    workflow="diamond")
    store.verify_optimization(oid, 0.15)
    [o] = store.optimizations(workflow="diamond")
    assert (o.id, o.params, o.predicted_gain, o.verified_gain) == (oid, {"group": 12}, 0.2, 0.15)
    with pytest.raises(StoreError, match="No workflow optimization with id"):
        store.verify_optimization(oid + 100, 0.1)


# ---------------------------------------------------------------------- API keys


def test_api_keys_verify_and_revoke(store):
    key = store.create_api_key("ci", "operator")
    rec = store.verify_api_key(key)
    assert (rec.name, rec.role, rec.active) == ("ci", "operator", True)
    assert rec.last_used_at is None and store.verify_api_key(key).name == "ci"
    assert store.verify_api_key(key + "x") is None and store.verify_api_key("") is None
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash, last_used_at FROM api_keys")).one()
    assert key not in stored.key_hash and len(stored.key_hash) == 64  # only the sha256 is kept
    assert stored.last_used_at is not None

    with pytest.raises(StoreError, match="active API key named 'ci' already exists"):
        store.create_api_key("ci", "admin")
    store.revoke_api_key("ci")
    assert store.verify_api_key(key) is None
    with pytest.raises(StoreError, match="No active API key named 'ci'"):
        store.revoke_api_key("ci")
    new_key = store.create_api_key("ci", "admin")  # the name is free again
    assert store.verify_api_key(new_key).role == "admin" and new_key != key
    assert [(k.name, k.active) for k in store.list_api_keys(include_revoked=True)] == [("ci", False), ("ci", True)]


def test_sqlite_wal_is_checkpointed_in_the_background_not_at_commit(tmp_path):
    """Commits never checkpoint (no fsync stall inside the orchestrator's write); the checkpointer thread copies
    committed data into the database file on its own, and the file alone then holds it."""
    import sqlite3
    import time

    store = Store.open(None, data_dir=tmp_path)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        before = store._checkpointer.checkpoints
        run_id = store.create_workflow(diamond(), "fifo")
        deadline = time.time() + 10
        while store._checkpointer.checkpoints < before + 2 and time.time() < deadline:
            time.sleep(0.1)
        # immutable=1 ignores the WAL: only what was checkpointed into the file is visible.
        db = sqlite3.connect(f"file:{tmp_path / 'state.db'}?mode=ro&immutable=1", uri=True)
        try:
            assert db.execute("SELECT count(*) FROM tasks WHERE run_id = ?", (run_id,)).fetchone()[0] == 4
        finally:
            db.close()
    finally:
        store.close()


def test_one_lease_per_store_lapses_and_requests_cancel(store):
    from orchestrator.errors import StoreError

    store.acquire_lease("a", ttl=5.0, wait=0.0, host="h", pid=1)
    with pytest.raises(StoreError, match=r"Another orchestrator \(pid 1 on h"):
        store.acquire_lease("b", ttl=5.0, wait=0.3)
    assert store.renew_lease("a")
    store.acquire_lease("a", ttl=5.0, wait=0.0)  # the holder may take it again
    store.release_lease("a")
    store.acquire_lease("b", ttl=0.2, wait=0.0)
    assert not store.renew_lease("a")
    time.sleep(0.3)  # b stops renewing: its lease lapses and a takes the store over
    store.acquire_lease("a", ttl=0.2, wait=0.0)
    assert not store.renew_lease("b") and store.renew_lease("a")
    # Cancel requests: only unfinished runs, once.
    wf = Workflow(name="w", tasks=[{"id": "t"}])
    run_id = store.create_workflow(wf, "fifo")
    assert store.cancel_requests() == []
    store.request_cancel(run_id)
    store.request_cancel(run_id)
    assert store.cancel_requests() == [run_id]
    assert [e.type for e in store.events(run_id)].count("workflow.cancel_requested") == 1
    with pytest.raises(StoreError, match="no workflow run 'nope'"):
        store.request_cancel("nope")

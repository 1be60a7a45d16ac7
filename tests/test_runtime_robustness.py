"""Nothing stalls the orchestrator and nothing recorded is lost: database outages (PostgreSQL refusing
connections, connections cut again and again) are ridden out with no finished attempt run again and exactly one
execution row per attempt; a stored run that cannot be resumed fails on its own; a refused workflow leaves the
others running; the write journal never applies a batch twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import ray
import sqlalchemy as sa

from orchestrator.errors import StoreUnavailableError
from orchestrator.loaders import workflow_from_dict
from orchestrator.runtime.actor import OrchestratorActor
from orchestrator.runtime.client import wait_for
from orchestrator.runtime.config import RuntimeConfig
from orchestrator.runtime.journal import WriteJournal
from orchestrator.states import TaskStatus, WorkflowStatus
from orchestrator.store import Store, TaskChange, WorkflowChange

from conftest import POSTGRES_URL

B = "orchestrator.runtime.builtins"


@pytest.fixture
def actor(ray_cluster, tmp_path):
    handles = []

    def start(**overrides):
        settings = {"data_dir": str(tmp_path / "state"), "redis_url": None, "retry_base": 0.05, "lease_ttl_s": 3.0,
                    "node_refresh_s": 0.5, "predict_tasks": False, **overrides}
        handle = OrchestratorActor.options(num_cpus=0, resources={"head": 0.001}).remote(
            RuntimeConfig(**settings).model_dump())
        ray.get(handle.ping.remote())
        handles.append(handle)
        return handle

    yield start
    for h in handles:
        try:
            ray.get(h.shutdown.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - already dead
            pass
        ray.kill(h)


def _side_effect_workflow(out_dir, n: int = 40, seconds: float = 0.05) -> dict:
    """A fan-out/fan-in of tasks that each append their id to their own file (a re-run shows as two lines)."""
    tasks = [{"id": "root", "entrypoint": f"{B}:append_line", "args": [str(out_dir / "root"), "root", seconds]}]
    for k in range(n):
        tasks.append({"id": f"t{k}", "entrypoint": f"{B}:append_line",
                      "args": [str(out_dir / f"t{k}"), f"t{k}", seconds], "depends_on": ["root"]})
    tasks.append({"id": "join", "entrypoint": f"{B}:append_line", "args": [str(out_dir / "join"), "join", seconds],
                  "depends_on": [f"t{k}" for k in range(n)]})
    return {"name": "side-effects", "tasks": tasks}


def _wait_until_succeeded(handle, run_id: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ray.get(handle.progress.remote(run_id))["counts"].get("succeeded", 0) < n:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def _admin():
    return sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _terminate(conn, name: str) -> int:
    return len(conn.execute(sa.text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
        {"n": name}).all())


def _check_each_ran_once(store, run_id: str, out_dir, ids: list[str]) -> None:
    for tid in ids:
        assert (out_dir / tid).read_text().splitlines() == [tid], f"task {tid} ran more than once"
    execs = store.executions(run_id)
    per_attempt = Counter((e.task_id, e.attempt) for e in execs)
    assert all(n == 1 for n in per_attempt.values()), [k for k, n in per_attempt.items() if n > 1]
    assert sorted(e.task_id for e in execs) == sorted(ids)  # one attempt each, all recorded
    assert all(e.status == "succeeded" and e.attempt == 1 for e in execs)
    events = store.events(run_id)
    for tid in ids:
        assert [e.type for e in events if e.task_id == tid] == ["task.ready", "task.started", "task.succeeded"]
    assert not [e for e in events if "restart" in ((e.payload or {}).get("error") or "")]


def test_postgres_refusing_connections_for_3s_delays_the_run_and_loses_nothing(actor, postgres_url, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    h = actor(db_url=postgres_url)
    run_id = ray.get(h.submit.remote(workflow_from_dict(_side_effect_workflow(out, 40, 0.1)).model_dump()))
    name = _database(postgres_url)
    admin = _admin()
    _wait_until_succeeded(h, run_id, 2)  # workers are up and writes are flowing
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        _terminate(conn, name)
        pings = []
        for _ in range(12):
            time.sleep(0.25)
            pings.append(ray.get(h.ping.remote()))
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()
    # The outage is reported while it lasts.
    assert any(not p["ok"] and "unreachable" in p["error"] for p in pings), pings
    final = wait_for(h, [run_id], poll=0.1, timeout=120)[run_id]
    assert final["status"] == "succeeded"
    assert ray.get(h.ping.remote())["ok"]
    store = Store.open(postgres_url)
    try:
        assert store.get_workflow(run_id).status == WorkflowStatus.SUCCEEDED
        _check_each_ran_once(store, run_id, out, ["root", *[f"t{k}" for k in range(40)], "join"])
    finally:
        store.close()


def test_connections_cut_every_100ms_rerun_nothing_and_keep_every_row(actor, postgres_url, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    h = actor(db_url=postgres_url)
    name = _database(postgres_url)
    stop = threading.Event()
    cut = [0]

    def cutter():
        admin = _admin()
        with admin.connect() as conn:
            while not stop.wait(0.1):
                cut[0] += _terminate(conn, name)
        admin.dispose()

    thread = threading.Thread(target=cutter, daemon=True)
    (out / "a").mkdir()
    run_ids = [ray.get(h.submit.remote(workflow_from_dict(_side_effect_workflow(out / "a", 30, 0.1)).model_dump()))]
    _wait_until_succeeded(h, run_ids[0], 2)
    thread.start()
    try:
        time.sleep(4.0)
    finally:
        stop.set()
        thread.join()
    (out / "b").mkdir()
    run_ids.append(ray.get(h.submit.remote(workflow_from_dict(_side_effect_workflow(out / "b", 10, 0.0)).model_dump())))
    finals = wait_for(h, run_ids, poll=0.1, timeout=120)
    assert cut[0] > 5  # connections really were cut
    assert [finals[r]["status"] for r in run_ids] == ["succeeded", "succeeded"]
    store = Store.open(postgres_url)
    try:
        _check_each_ran_once(store, run_ids[0], out / "a", ["root", *[f"t{k}" for k in range(30)], "join"])
        _check_each_ran_once(store, run_ids[1], out / "b", ["root", *[f"t{k}" for k in range(10)], "join"])
    finally:
        store.close()


def test_a_stored_run_that_cannot_be_resumed_fails_alone(actor, tmp_path):
    """A run whose stored workflow is no longer valid is failed with its cause by the next orchestrator, once;
    the other unfinished run of the store is resumed and finishes."""
    data_dir = tmp_path / "state"
    store = Store.open(None, data_dir=data_dir)
    good = workflow_from_dict({"name": "good", "tasks": [{"id": "a", "entrypoint": f"{B}:add", "args": [1, 2]}]})
    bad_id, good_id = store.create_workflows([(good.model_copy(update={"name": "bad"}), "fifo", None),
                                              (good, "fifo", None)])
    with store.engine.begin() as conn:  # as if written by a version that accepted it
        conn.execute(sa.text("UPDATE workflows SET spec = :s WHERE run_id = :r"),
                     {"s": '{"name": "bad", "tasks": [{"id": "a", "args": [{"$ref": "ghost"}]}]}', "r": bad_id})
    store.close()
    h = actor()
    assert wait_for(h, [good_id], poll=0.05, timeout=60)[good_id]["status"] == "succeeded"
    store = Store.open(None, data_dir=data_dir)
    try:
        rec = store.get_workflow(bad_id)
        assert rec.status == WorkflowStatus.FAILED and "cannot be resumed" in rec.error and "ghost" in rec.error
        assert [t.status for t in store.get_tasks(bad_id)] == [TaskStatus.CANCELLED]
        assert bad_id not in store.unfinished_workflows()
    finally:
        store.close()


def test_a_refused_reference_leaves_the_store_usable(actor, tmp_path):
    """A workflow with a $ref to no task is refused at submission (recorded as workflow.rejected); a valid one
    submitted to the same orchestrator right after runs."""
    h = actor()
    bad = {"name": "bad", "tasks": [{"id": "a", "entrypoint": f"{B}:identity", "args": [{"$ref": "ghost"}]}]}
    with pytest.raises(Exception, match="ghost"):
        ray.get(h.submit.remote(bad))
    ok = workflow_from_dict({"name": "ok", "tasks": [{"id": "a", "entrypoint": f"{B}:add", "args": [1, 2]}]})
    run_id = ray.get(h.submit.remote(ok.model_dump()))
    assert wait_for(h, [run_id], poll=0.05, timeout=60)[run_id]["status"] == "succeeded"
    store = Store.open(None, data_dir=tmp_path / "state")
    try:
        assert [r.payload["name"] for r in store.rejections()] == ["bad"]
        assert store.unfinished_workflows() == []
    finally:
        store.close()


class _CutAfterCommit(Store):
    """A real store whose next `cut` writes commit and then lose their connection before the answer arrives."""

    cut = 0
    refuse = 0

    def apply(self, *args, **kwargs):
        if self.refuse:
            self.refuse -= 1
            raise StoreUnavailableError("connection refused (test)")
        super().apply(*args, **kwargs)
        if self.cut:
            self.cut -= 1
            raise StoreUnavailableError("server closed the connection unexpectedly (test)")


def _journal_store(tmp_path) -> _CutAfterCommit:
    store = _CutAfterCommit.open(f"sqlite:///{tmp_path / 'j.db'}")
    store.acquire_lease("me", ttl=10, wait=0)
    return store


def test_journal_writes_a_batch_cut_off_in_its_commit_once(tmp_path):
    store = _journal_store(tmp_path)
    wf = workflow_from_dict({"name": "w", "tasks": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]})
    (run_id,) = store.create_workflows([(wf, "fifo", None)])
    journal = WriteJournal(store, "me", first_delay=0.0)
    journal.add([WorkflowChange(run_id, WorkflowStatus.RUNNING),
                 TaskChange(run_id, "a", TaskStatus.READY, expected=TaskStatus.PENDING)])
    store.cut = 1
    assert journal.flush() is None and journal.blocked  # committed, but the answer was lost
    journal.add([TaskChange(run_id, "a", TaskStatus.RUNNING, attempt=1, expected=TaskStatus.READY)])
    written = journal.flush()
    assert [c.status for c in written] == [WorkflowStatus.RUNNING, TaskStatus.READY, TaskStatus.RUNNING]
    assert not journal.blocked and len(journal) == 0
    types = [e.type for e in store.events(run_id)]
    assert types.count("task.ready") == 1 and types.count("workflow.started") == 1 and "task.started" in types
    store.close()


def test_journal_keeps_everything_while_the_store_refuses(tmp_path):
    store = _journal_store(tmp_path)
    wf = workflow_from_dict({"name": "w", "tasks": [{"id": "a"}]})
    (run_id,) = store.create_workflows([(wf, "fifo", None)])
    journal = WriteJournal(store, "me", first_delay=0.0)
    journal.add([WorkflowChange(run_id, WorkflowStatus.RUNNING)])
    store.refuse = 3
    for _ in range(3):
        assert journal.flush() is None
    assert journal.failures == 3 and len(journal) == 1
    assert [c.status for c in journal.flush()] == [WorkflowStatus.RUNNING]
    assert store.get_workflow(run_id).status == WorkflowStatus.RUNNING
    store.close()


def test_a_write_after_the_lease_was_taken_over_is_refused(tmp_path):
    from orchestrator.errors import LeaseLostError

    store = _journal_store(tmp_path)
    wf = workflow_from_dict({"name": "w", "tasks": [{"id": "a"}]})
    (run_id,) = store.create_workflows([(wf, "fifo", None)])
    store.acquire_lease(f"other-{uuid.uuid4().hex[:6]}", ttl=0.0, wait=0)  # ours lapsed; another took it
    with pytest.raises(LeaseLostError, match="no longer holds the lease"):
        store.apply([WorkflowChange(run_id, WorkflowStatus.RUNNING)], batch=("me", 1))
    assert store.get_workflow(run_id).status == WorkflowStatus.PENDING
    store.close()

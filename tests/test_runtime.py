"""The Ray runtime on a real two-node Ray cluster: data flow, durable state, retries with backoff, timeouts,
memory limits, failure propagation, cancellation, placement, resume after the actor is killed, node loss."""

from __future__ import annotations

import json
import time

import pytest
import ray

from orchestrator.errors import StoreError
from orchestrator.loaders import workflow_from_dict
from orchestrator.runtime.client import wait_for
from orchestrator.states import TaskStatus, WorkflowStatus

from conftest import actor_factory

B = "orchestrator.runtime.builtins"


@pytest.fixture
def orch(ray_cluster, tmp_path):
    """An orchestrator actor with its own SQLite store; killed after the test."""
    start, stop = actor_factory(tmp_path)
    yield start
    stop()


def _run(handle, spec: dict, timeout: float = 90, **kw) -> dict:
    wf = workflow_from_dict(spec)
    run_id = ray.get(handle.submit.remote(wf.model_dump(), *([kw["policy"]] if "policy" in kw else [])))
    return wait_for(handle, [run_id], poll=0.05, timeout=timeout)[run_id]


def _tasks(store, run_id):
    return {t.task_id: t for t in store.get_tasks(run_id)}


def test_results_flow_and_everything_is_recorded(orch):
    h = orch()
    final = _run(h, {"name": "flow", "tasks": [
        {"id": "a", "entrypoint": f"{B}:add", "args": [1, 2]},
        {"id": "b", "entrypoint": f"{B}:add", "args": [{"$ref": "a"}, 10], "depends_on": ["a"]},
        {"id": "c", "entrypoint": f"{B}:add", "args": [{"$ref": "a"}, {"$ref": "b"}], "depends_on": ["a", "b"]},
        {"id": "say", "entrypoint": "echo hello from the shell", "depends_on": ["a"]},
    ]})
    assert final["status"] == "succeeded"
    store = orch.store()
    tasks = _tasks(store, final["run_id"])
    assert store.load_result(tasks["c"].result_ref) == 16
    assert store.load_result(tasks["say"].result_ref) == "hello from the shell"
    # Every task: ready, started, succeeded, in that order; the workflow: submitted, started, succeeded.
    events = store.events(final["run_id"])
    for tid in tasks:
        assert [e.type for e in events if e.task_id == tid] == ["task.ready", "task.started", "task.succeeded"]
    assert [e.type for e in events if e.task_id is None] == ["workflow.submitted", "workflow.started",
                                                              "workflow.succeeded"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    execs = store.executions(final["run_id"])
    assert sorted(e.task_id for e in execs) == sorted(tasks) and all(e.status == "succeeded" for e in execs)
    assert next(e for e in execs if e.task_id == "say").stdout.strip() == "hello from the shell"
    decisions = store.decisions(final["run_id"])
    assert len(decisions) == 4 and all(d.latency_us is not None and d.policy == "srpt-cp" for d in decisions)


def test_many_runs_submitted_at_once_are_all_recorded_and_a_refused_one_records_nothing(orch):
    h = orch()
    store = orch.store()

    def chain(k):
        return workflow_from_dict({"name": f"chain-{k}", "tasks": [
            {"id": "a", "entrypoint": f"{B}:add", "args": [k]},
            {"id": "b", "entrypoint": f"{B}:add", "args": [{"$ref": "a"}, 1], "depends_on": ["a"]}]})

    # One call, one transaction: every run recorded, ids in order.
    batch = ray.get(h.submit_many.remote([chain(k) for k in range(12)]))
    assert len(set(batch)) == 12
    assert [store.get_workflow(r).name for r in batch] == [f"chain-{k}" for k in range(12)]
    # Concurrent single submits (each its own actor call), one of them with a run id that is already taken:
    # that one alone is refused; the others, recorded in the same loop iteration, all run.
    taken = ray.get(h.submit.remote(chain(99), None, "taken-id"))
    refs = [h.submit.remote(chain(k), None, "taken-id" if k == 5 else None) for k in range(20)]
    single, refused = [], []
    for ref in refs:
        try:
            single.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - the expected refusal
            refused.append(str(exc))
    assert len(single) == 19 and len(refused) == 1 and "'taken-id' already exists" in refused[0]
    final = wait_for(h, batch + single + [taken], timeout=120)
    assert {p["status"] for p in final.values()} == {"succeeded"}
    assert all(p["counts"] == {"succeeded": 2} for p in final.values())
    for run_id in batch + single:
        assert [e.type for e in store.events(run_id)][:2] == ["workflow.submitted", "workflow.started"]
    # A workflow that cannot run is refused before anything of the batch is recorded.
    before = len(store.list_workflows(limit=1000))
    too_big = workflow_from_dict({"name": "too-big", "tasks": [{"id": "x", "resources": {"cpus": 64}}]})
    with pytest.raises(Exception, match=r"Workflow 2 of 2 \(too-big\) was refused, so none was recorded"):
        ray.get(h.submit_many.remote([chain(1), too_big]))
    assert len(store.list_workflows(limit=1000)) == before
    (rejected,) = store.rejections()  # ... and the refusal is recorded
    assert rejected.payload["name"] == "too-big" and "requests" in rejected.payload["error"]


def test_failure_skips_downstream_and_names_the_cause(orch):
    h = orch()
    final = _run(h, {"name": "fails", "tasks": [
        {"id": "ok", "entrypoint": f"{B}:add", "args": [1]},
        {"id": "boom", "entrypoint": f"{B}:fail", "args": ["disk on fire"]},
        {"id": "after", "entrypoint": f"{B}:add", "args": [1], "depends_on": ["boom"]},
        {"id": "later", "entrypoint": f"{B}:add", "args": [1], "depends_on": ["after"]},
        {"id": "side", "entrypoint": f"{B}:add", "args": [2], "depends_on": ["ok"]},
    ]})
    assert final["status"] == "failed"
    assert "boom" in final["error"] and "disk on fire" in final["error"]
    tasks = _tasks(orch.store(), final["run_id"])
    assert tasks["boom"].status == TaskStatus.FAILED and "RuntimeError: disk on fire" in tasks["boom"].error
    for tid in ("after", "later"):
        assert tasks[tid].status == TaskStatus.SKIPPED and tasks[tid].error == "upstream task 'boom' failed"
    assert tasks["side"].status == TaskStatus.SUCCEEDED  # an independent branch still runs


def test_retries_with_exponential_backoff(orch, tmp_path):
    h = orch()
    marker = tmp_path / "count"
    final = _run(h, {"name": "flaky", "tasks": [
        {"id": "flaky", "entrypoint": f"{B}:fail_times", "args": [str(marker), 2, "finally"], "retries": 3,
         "retry_delay": 0.3}]})
    assert final["status"] == "succeeded"
    store = orch.store()
    execs = sorted(store.executions(final["run_id"], "flaky"), key=lambda e: e.attempt)
    assert [e.status for e in execs] == ["failed", "failed", "succeeded"] and [e.attempt for e in execs] == [1, 2, 3]
    # Backoff: at least 0.3 s before attempt 2 and 0.6 s before attempt 3 (base x 2^(n-1), jitter on top).
    assert execs[1].started_at - execs[0].finished_at >= 0.3 - 0.02
    assert execs[2].started_at - execs[1].finished_at >= 0.6 - 0.02
    types = [e.type for e in store.events(final["run_id"]) if e.task_id == "flaky"]
    assert types.count("task.retrying") == 2 and types[-1] == "task.succeeded"


def test_retries_exhausted_fail(orch, tmp_path):
    h = orch()
    final = _run(h, {"name": "hopeless", "tasks": [
        {"id": "t", "entrypoint": f"{B}:fail_times", "args": [str(tmp_path / "c"), 10], "retries": 1,
         "retry_delay": 0.05}]})
    assert final["status"] == "failed"
    assert len(orch.store().executions(final["run_id"], "t")) == 2


def test_timeout_memory_and_bad_entrypoints_each_named(orch):
    h = orch()
    final = _run(h, {"name": "bad", "tasks": [
        {"id": "hangs", "entrypoint": f"{B}:hang", "timeout": 1.0},
        {"id": "greedy", "entrypoint": f"{B}:allocate", "args": [1024], "resources": {"memory": "64MiB"}},
        {"id": "nomodule", "entrypoint": "no_such_module_xyz:run", "retries": 3},
        {"id": "noattr", "entrypoint": f"{B}:no_such_function"},
        {"id": "exit3", "entrypoint": "echo going down >&2; exit 3"},
    ]}, timeout=120)
    assert final["status"] == "failed"
    tasks = _tasks(orch.store(), final["run_id"])
    assert "timed out after 1 s" in tasks["hangs"].error
    assert "exceeded its memory request of 64 MiB" in tasks["greedy"].error
    assert "cannot import module 'no_such_module_xyz'" in tasks["nomodule"].error
    assert tasks["nomodule"].attempt == 1  # an import error is not retried
    assert "has no attribute 'no_such_function'" in tasks["noattr"].error
    assert "exited with code 3" in tasks["exit3"].error and "going down" in tasks["exit3"].error
    assert all(t.status == TaskStatus.FAILED for t in tasks.values())


def _wait_until(condition, timeout: float, what: str) -> None:
    """Poll `condition` every 0.05 s; fail naming `what` if it is still false after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def test_cancel_stops_running_and_never_starts_pending(orch):
    h = orch()
    idle = _free_cpus()
    wf = workflow_from_dict({"name": "long", "tasks": [
        {"id": f"s{i}", "entrypoint": f"{B}:hang", "args": [3600]} for i in range(2)] + [
        {"id": "after", "entrypoint": f"{B}:add", "args": [1], "depends_on": ["s0", "s1"]}]})
    run_id = ray.get(h.submit.remote(wf.model_dump()))
    _wait_until(lambda: ray.get(h.progress.remote(run_id))["counts"].get("running", 0) == 2, 30, "never both running")
    _wait_until(lambda: _free_cpus() <= idle - 2, 30, "the two attempts never held their cpus in Ray")
    assert ray.get(h.cancel.remote(run_id)) is True
    answered = time.time()
    final = wait_for(h, [run_id], timeout=30)[run_id]
    assert final["status"] == "cancelled"  # the tasks hang for an hour: the run did not wait for them
    store = orch.store()
    tasks = _tasks(store, run_id)
    assert all(t.status == TaskStatus.CANCELLED for t in tasks.values())
    # The two running attempts were stopped (each has its execution row, written when the cancel was carried out);
    # "after" never started (no row).
    execs = store.executions(run_id)
    assert sorted((e.task_id, e.status) for e in execs) == [("s0", "cancelled"), ("s1", "cancelled")]
    assert all(e.started_at <= e.finished_at <= answered for e in execs)
    assert store.get_workflow(run_id).status == WorkflowStatus.CANCELLED
    # Stopped in Ray too: their workers are gone and the cluster has its cpus back (else held for an hour).
    _wait_until(lambda: _free_cpus() >= idle, 60, "the cancelled attempts still hold their cpus in Ray")


def test_tasks_run_where_the_policy_placed_them(orch, ray_cluster):
    h = orch()
    final = _run(h, {"name": "placed", "tasks": [
        {"id": f"w{i}", "entrypoint": f"{B}:sleep", "args": [0.2], "resources": {"custom": {"worker": 0.1}}}
        for i in range(3)] + [{"id": f"any{i}", "entrypoint": f"{B}:sleep", "args": [0.2]} for i in range(4)]})
    assert final["status"] == "succeeded"
    store = orch.store()
    worker_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"] and "worker" in n["Resources"]}
    execs = store.executions(final["run_id"])
    decisions = {d.task_id: d.node for d in store.decisions(final["run_id"])}
    for e in execs:
        # The node the policy chose (recorded before dispatch) is the node Ray ran the task on.
        assert e.node == decisions[e.task_id]
    node_of = {e.task_id: e.node for e in execs}
    for i in range(3):
        assert node_of[f"w{i}"].split("/")[-1] in {w[:8] for w in worker_ids}


def test_dispatch_ahead_queues_short_tasks_without_oversubscribing_a_node(orch):
    h = orch(dispatch_ahead=2.0, dispatch_ahead_max_s=0.5)
    wf = workflow_from_dict({"name": "short", "tasks": [
        {"id": f"s{i}", "entrypoint": f"{B}:sleep", "args": [0.05], "duration": 0.05} for i in range(40)]})
    run_id = ray.get(h.submit.remote(wf.model_dump()))
    assert wait_for(h, [run_id], timeout=60)[run_id]["status"] == "succeeded"
    stats = ray.get(h.stats.remote())
    assert stats["queued_ahead"] == 0 and stats["free_cpus"] == 4.0  # every slot accounted back
    store = orch.store()
    execs = store.executions(run_id)
    decisions = {d.task_id: d.node for d in store.decisions(run_id)}
    assert len(execs) == 40 and all(e.node == decisions[e.task_id] for e in execs)
    # The recorded moves, in order: tasks dispatched (started) and not yet ended, per node. Beyond the cluster's 4
    # slots means tasks waited ahead at their nodes; never beyond a node's 2 slots plus its allowance (2.0 x 2).
    dispatched: dict[str, int] = {}
    most = 0
    for e in store.events(run_id):
        if e.type in ("task.started", "task.succeeded"):
            node = decisions[e.task_id]
            dispatched[node] = dispatched.get(node, 0) + (1 if e.type == "task.started" else -1)
            assert 0 <= dispatched[node] <= 2 + 2.0 * 2
            most = max(most, sum(dispatched.values()))
    assert most > 4, "no task was dispatched ahead"
    for node in {e.node for e in execs}:  # at no instant more tasks ran on a node than its 2 cpus
        edges = sorted([(e.started_at, 1) for e in execs if e.node == node]
                       + [(e.finished_at, -1) for e in execs if e.node == node], key=lambda x: (x[0], x[1]))
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        assert peak <= 2


def test_kill_the_actor_mid_run_and_resume(orch):
    """Kill the orchestrator while tasks run; a new one resumes the run, does not re-run finished tasks and
    loses no record."""
    h = orch()
    tasks = [{"id": f"a{i}", "entrypoint": f"{B}:sleep", "args": [0.3]} for i in range(4)]
    tasks += [{"id": f"b{i}", "entrypoint": f"{B}:sleep", "args": [1.5], "depends_on": [f"a{i}"]} for i in range(4)]
    tasks += [{"id": "c", "entrypoint": f"{B}:add", "args": [1, 2], "depends_on": [f"b{i}" for i in range(4)]}]
    wf = workflow_from_dict({"name": "resumable", "tasks": tasks})
    run_id = ray.get(h.submit.remote(wf.model_dump()))
    store = orch.store()
    deadline = time.time() + 30
    while time.time() < deadline:
        counts = store.task_counts(run_id)
        if counts.get("succeeded", 0) >= 2 and counts.get("running", 0) >= 1:
            break
        time.sleep(0.05)
    done_before = {t.task_id for t in store.get_tasks(run_id) if t.status == TaskStatus.SUCCEEDED}
    events_before = [(e.id, e.type, e.task_id) for e in store.events(run_id)]
    ray.kill(h)  # no shutdown, no goodbye
    assert done_before and store.get_workflow(run_id).status == WorkflowStatus.RUNNING

    h2 = orch()  # a new orchestrator on the same store resumes every unfinished run
    final = wait_for(h2, [run_id], timeout=60)[run_id]
    assert final["status"] == "succeeded"
    execs = store.executions(run_id)
    for tid in done_before:
        # A task that had completed before the kill has exactly one (successful) execution: never re-run.
        assert [e.status for e in execs if e.task_id == tid] == ["succeeded"]
    assert {t.status for t in store.get_tasks(run_id)} == {TaskStatus.SUCCEEDED}
    assert store.load_result(_tasks(store, run_id)["c"].result_ref) == 3
    events_after = [(e.id, e.type, e.task_id) for e in store.events(run_id)]
    assert events_after[:len(events_before)] == events_before  # nothing recorded was lost or rewritten
    requeued = [e for e in events_after[len(events_before):] if e[1] == "task.requeued"]
    assert all(e[2] not in done_before for e in requeued)
    # Every attempt has its execution row, the interrupted ones too: attempts 1..n of each task, no gap.
    running_at_kill = {e[2] for e in requeued}
    assert running_at_kill, "some task was running when the actor was killed"
    for tid in running_at_kill:
        mine = sorted((e.attempt, e.status, e.exit_info) for e in execs if e.task_id == tid)
        assert [a for a, _, _ in mine] == list(range(1, len(mine) + 1))
        assert mine[0][1:] == ("cancelled", "interrupted") and mine[-1][1] == "succeeded"


def test_one_orchestrator_per_store_and_cancel_through_the_store(orch):
    """A second orchestrator on the same store is refused while the first renews its lease (it would run the
    first one's tasks again); a cancel request written to the store is carried out by the running one."""
    h = orch(lease_ttl_s=1.0)
    with pytest.raises(ray.exceptions.ActorDiedError, match="Another orchestrator .* owns the store"):
        orch(lease_ttl_s=1.0)
    idle = _free_cpus()
    tasks = [{"id": f"s{i}", "entrypoint": f"{B}:hang", "args": [3600]} for i in range(2)]
    tasks.append({"id": "after", "entrypoint": f"{B}:add", "args": [1], "depends_on": ["s0"]})
    run_id = ray.get(h.submit.remote(workflow_from_dict({"name": "long", "tasks": tasks}).model_dump()))
    store = orch.store()
    _wait_until(lambda: store.task_counts(run_id).get("running", 0) == 2, 20, "never both running")
    assert store.request_cancel(run_id).status == WorkflowStatus.RUNNING  # recorded, not yet carried out
    final = wait_for(h, [run_id], timeout=20)[run_id]
    assert final["status"] == "cancelled"  # the tasks hang for an hour: the run did not wait for them
    _wait_until(lambda: _free_cpus() >= idle, 60, "the cancelled attempts still hold their cpus in Ray")
    assert {t.task_id: t.status for t in store.get_tasks(run_id)} == {
        "s0": TaskStatus.CANCELLED, "s1": TaskStatus.CANCELLED, "after": TaskStatus.CANCELLED}
    assert "workflow.cancel_requested" in [e.type for e in store.events(run_id)]
    # Stopped cleanly, the lease is given back (its row is gone, not merely old): the next orchestrator need not
    # wait for it to lapse.
    with pytest.raises(StoreError, match="owns the store"):
        store.refuse_if_leased(within_s=3600)
    ray.get(h.shutdown.remote())
    store.refuse_if_leased(within_s=3600)
    orch(lease_ttl_s=1.0)
    with pytest.raises(StoreError, match="owns the store"):
        store.refuse_if_leased(within_s=3600)  # and the new one holds it


def test_worker_node_lost_tasks_retried_elsewhere(orch, ray_cluster):
    h = orch(system_retries=3)
    doomed = ray_cluster.add_node(num_cpus=4, resources={"doomed": 1})
    ray_cluster.wait_for_nodes()
    deadline = time.time() + 10
    while ray.get(h.stats.remote())["nodes"] < 3 and time.time() < deadline:
        time.sleep(0.2)
    wf = workflow_from_dict({"name": "survivor", "tasks": [
        {"id": f"t{i}", "entrypoint": f"{B}:sleep", "args": [4]} for i in range(8)]})
    run_id = ray.get(h.submit.remote(wf.model_dump(), "fifo"))
    store = orch.store()
    doomed_id = doomed.node_id
    deadline = time.time() + 20
    while time.time() < deadline:
        on_doomed = [d for d in store.decisions(run_id) if d.node and d.node.endswith(doomed_id[:8])]
        if on_doomed and store.task_counts(run_id).get("running", 0) >= 4:
            break
        time.sleep(0.1)
    assert on_doomed, "the policy placed nothing on the new node"
    ray_cluster.remove_node(doomed, allow_graceful=False)
    final = wait_for(h, [run_id], timeout=150)[run_id]
    assert final["status"] == "succeeded"
    execs = store.executions(run_id)
    lost = [e for e in execs if e.status == "lost"]
    assert lost, "no attempt was recorded as lost with the node"
    for e in lost:
        later = [x for x in execs if x.task_id == e.task_id and x.status == "succeeded"]
        assert later and not later[0].node.endswith(doomed_id[:8])


def test_events_reach_redis_streams_in_order(orch):
    import uuid

    import redis

    from conftest import REDIS_URL

    stream = f"orchestrator:test:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        h = orch(redis_url=REDIS_URL, redis_stream=stream)
        final = _run(h, {"name": "evented", "tasks": [
            {"id": "a", "entrypoint": f"{B}:add", "args": [1]},
            {"id": "b", "entrypoint": f"{B}:add", "args": [2], "depends_on": ["a"]}]})
        assert final["status"] == "succeeded"
        stored = orch.store().events(final["run_id"])
        deadline = time.time() + 15
        while time.time() < deadline and client.xlen(stream) < len(stored):
            time.sleep(0.1)
        entries = client.xrange(stream)
        assert len(entries) == len(stored)  # every event delivered once
        assert [f[b"type"].decode() for _, f in entries] == [e.type for e in stored]
        assert [int(f[b"event_id"]) for _, f in entries] == [e.id for e in stored]
        assert json.loads(entries[-1][1][b"payload"])["status"] == "succeeded"
    finally:
        client.delete(stream)


def test_structured_logs_carry_run_and_task_ids(orch, tmp_path):
    h = orch()
    final = _run(h, {"name": "logged", "tasks": [{"id": "bad", "entrypoint": f"{B}:fail", "args": ["nope"]}]})
    assert final["status"] == "failed"
    path = tmp_path / "state" / "logs" / "orchestrator.jsonl"
    deadline = time.time() + 10
    records = []
    while time.time() < deadline:
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if any(r.get("task_id") == "bad" for r in records) and any(r["message"] == "workflow run failed"
                                                                   for r in records):
            break
        time.sleep(0.2)
    mine = [r for r in records if r.get("run_id") == final["run_id"]]
    assert any(r.get("task_id") == "bad" and "RuntimeError: nope" in r["message"] for r in mine)
    assert {r["message"] for r in mine} >= {"workflow run submitted", "workflow run failed"}


def test_waiting_tasks_are_predicted_again_as_their_siblings_finish(orch):
    """A chain of tasks of one category that this run makes much slower than the earlier run: once siblings
    finish, the tasks still waiting are predicted again from them, closer to what they take."""
    h = orch()

    def chain(seconds, n):
        return {"name": "refreshed", "tasks": [
            {"id": f"c{i}", "category": "slowing", "entrypoint": f"{B}:sleep", "args": [seconds],
             "input_bytes": 1000, **({"depends_on": [f"c{i - 1}"]} if i else {})} for i in range(n)]}

    assert _run(h, chain(0.02, 3))["status"] == "succeeded"
    slow = _run(h, chain(0.3, 10))
    assert slow["status"] == "succeeded"
    store = orch.store()
    deadline = time.time() + 20
    rows = []
    while time.time() < deadline:
        rows = store.predictions(run_id=slow["run_id"], with_actuals=True)
        if sum(r.task_id == "c9" for r in rows) >= 5 and all(r.actual_runtime is not None for r in rows):
            break
        time.sleep(0.2)
    last = sorted((r for r in rows if r.task_id == "c9"), key=lambda r: (r.created_at, r.id))
    # at admission, then after 1, 2, 4 and 8 siblings finished (the last only if c9 has not started by then)
    assert len(last) >= 4, len(last)
    first, latest = last[0].predicted_runtime, last[-1].predicted_runtime
    assert first < 0.1 and latest > 0.15, (first, latest)  # from the earlier run's 0.02 s to this run's 0.3 s
    assert abs(latest - last[-1].actual_runtime) < abs(first - last[-1].actual_runtime)


def test_tasks_without_duration_are_predicted_and_tracked_against_actuals(orch, tmp_path):
    h = orch()
    spec = {"name": "predicted", "tasks": [
        {"id": f"s{i}", "category": "sleeper", "entrypoint": f"{B}:sleep", "args": [0.05 * (i + 1)],
         "input_bytes": 1000 * (i + 1)} for i in range(6)]}
    first = _run(h, spec)
    second = _run(h, spec)  # the second run is predicted from the first one's history
    assert first["status"] == second["status"] == "succeeded"
    store = orch.store()
    deadline = time.time() + 20
    rows = []
    while time.time() < deadline:
        rows = store.predictions(run_id=second["run_id"], with_actuals=True)
        if len({r.task_id for r in rows}) == 6 and all(r.actual_runtime is not None for r in rows):
            break
        time.sleep(0.2)
    assert len({r.task_id for r in rows}) == 6, "every task without a duration gets a stored prediction"
    for r in rows:
        assert r.model_version.startswith("predictor/")
        assert r.runtime_lower <= r.predicted_runtime <= r.runtime_upper
        assert r.actual_runtime is not None and r.actual_runtime >= 0.05
    # Predictions from a history of the same tasks are in the right range (seconds, not minutes).
    assert all(r.predicted_runtime < 5.0 for r in rows)
    # A new orchestrator on the same store (after this one stopped) starts with that history (12 successful
    # attempts).
    ray.get(h.shutdown.remote())
    ray.kill(h)
    orch()
    log_path = tmp_path / "state" / "logs" / "orchestrator.jsonl"
    deadline = time.time() + 15
    seeded = []
    while time.time() < deadline and not seeded:
        seeded = [json.loads(x)["message"] for x in log_path.read_text().splitlines()
                  if "history seeded" in x]
        seeded = [m for m in seeded if not m.endswith(" 0 executions")]
        time.sleep(0.2)
    assert seeded == ["prediction history seeded with 12 executions"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_overhead_benchmark_loses_no_record(ray_cluster, tmp_path, request, backend):
    from orchestrator.runtime.benchmark import measure_overhead

    db_url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    r = measure_overhead(num_tasks=60, task_seconds=0.005, slots=4, repeats=2, db_url=db_url,
                         data_dir=str(tmp_path / "bench"))
    assert r.store == backend
    assert r.events_recorded == r.events_expected == 2 * (3 + 3 * 60)
    assert r.executions_recorded == 2 * 60
    assert r.ratio == r.orchestrated_s / r.raw_ray_s and r.raw_median_s >= r.raw_ray_s


def test_in_process_event_subscribers_and_performance_metrics(orch, tmp_path):
    h = orch(event_subscribers=["orchestrator.store.logs:log_event@workflow."])
    final = _run(h, {"name": "observed", "tasks": [
        {"id": "a", "entrypoint": f"{B}:add", "args": [1]},
        {"id": "b", "entrypoint": f"{B}:add", "args": [{"$ref": "a"}, 1], "depends_on": ["a"]}]})
    assert final["status"] == "succeeded"
    store = orch.store()
    wanted = [(e.id, e.type) for e in store.events(final["run_id"]) if e.type.startswith("workflow.")]
    log_path = tmp_path / "state" / "logs" / "orchestrator.jsonl"
    deadline, seen = time.time() + 15, []
    while time.time() < deadline and len(seen) < len(wanted):
        seen = [(r["event_id"], r["message"].removeprefix("event ")) for r in
                map(json.loads, log_path.read_text().splitlines()) if r.get("logger") == "orchestrator.events"
                and r.get("run_id") == final["run_id"]]
        time.sleep(0.2)
    assert seen == wanted  # every workflow event, once, in order; no task events (the prefix)
    ray.get(h.shutdown.remote())  # writes the metrics still buffered
    metrics = {m.name: m for m in store.metrics(run_id=final["run_id"])}
    assert metrics["workflow_tasks"].value == 2 and metrics["workflow_tasks_succeeded"].value == 2
    assert metrics["workflow_attempts"].value == 2 and metrics["workflow_jct_s"].value > 0
    assert metrics["workflow_jct_s"].labels == {"policy": "srpt-cp", "status": "succeeded", "workflow": "observed"}
    with pytest.raises(ray.exceptions.ActorDiedError, match="Event subscriber 'nope:x' cannot be loaded"):
        orch(event_subscribers=["nope:x"])

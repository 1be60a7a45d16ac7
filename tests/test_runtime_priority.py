"""Changing the priority of a task of a running workflow: the store (row and event, in one transaction, refused
for a task that is running or ended), the runtime's queues (re-keyed at once), the actor (store first, then
memory) and recovery (a stored priority survives a restart)."""

from __future__ import annotations

import time

import pytest
import ray

from orchestrator.errors import StoreConflictError, StoreInvalidError, StoreNotFoundError
from orchestrator.loaders import workflow_from_dict
from orchestrator.model import Workflow, get_limits
from orchestrator.runtime.client import wait_for
from orchestrator.runtime.recovery import Recovery, with_stored_priorities
from orchestrator.runtime.state import RetryPolicy, RuntimeState
from orchestrator.scheduling.interface import NodeView
from orchestrator.states import TaskStatus, WorkflowStatus
from orchestrator.store import Store
from orchestrator.store.records import TaskChange, WorkflowChange

from conftest import actor_factory

S = TaskStatus
B = "orchestrator.runtime.builtins"
# Every policy that orders its queue by the user's priority first (tetris packs, learned learns).
ORDERED_BY_PRIORITY = ["fifo", "job-fifo", "srpt-cp", "sjf-cp", "heft", "weighted-fair", "random"]


def _state(cpus=1.0, policy="fifo"):
    return RuntimeState(NodeView(["n0"], [cpus], [64e9], [0.0]), default_policy=policy,
                        retry=RetryPolicy(base=1.0, cap=100.0, jitter=0.0))


def _fan(n, name="f", **kw):
    return Workflow(name=name, tasks=[{"id": f"t{i}", "duration": 1.0, **kw} for i in range(n)])


def _drain(st, t=0.0):
    """Run everything to the end, one task at a time on a one-cpu node; the (run id, task id)s in start order."""
    order = []
    while True:
        made = st.schedule(t)
        if not made:
            return order
        for run, d in made:
            order.append((run.run_id, run.dag.ids[d.task.task]))
            t += 1.0
            st.succeeded(run, d.task.task, d.node, None, t)


# ---- RuntimeState ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ORDERED_BY_PRIORITY)
def test_raising_a_ready_tasks_priority_makes_it_start_next(policy):
    st = _state(policy=policy)
    run = st.admit("r", _fan(5), 0.0)
    (first,) = st.schedule(0.0)  # holds the one slot
    waiting = [i for i in range(5) if i != first[1].task.task]
    raised = waiting[-1]
    assert st.set_priority(run, raised, 7) == 0  # the previous priority
    assert run.task_priority[raised] == 7 and run.ready_tasks[raised].priority == 7
    assert run.priority == 7 and run.specs[raised].priority == 7 and run.dag.priority[raised] == 7
    st.succeeded(run, first[1].task.task, first[1].node, None, 1.0)
    (nxt,) = st.schedule(1.0)
    assert nxt[1].task.task == raised
    assert st.num_ready() == 3


def test_lowering_a_priority_moves_the_task_last_and_the_job_priority_is_its_highest_tasks():
    st = _state()
    run = st.admit("r", Workflow(name="p", tasks=[{"id": "a", "priority": 3}, {"id": "b", "priority": 3},
                                                  {"id": "c"}]), 0.0)
    assert run.priority == 3
    st.set_priority(run, 0, -2)
    assert run.priority == 3  # b still has 3
    st.set_priority(run, 1, 1)
    assert run.priority == 1
    assert st.set_priority(run, 1, 1) == 1  # unchanged: nothing moves
    assert [tid for _, tid in _drain(st)] == ["b", "c", "a"]


def test_a_priority_change_in_a_long_queue_takes_effect_wherever_the_task_sits():
    # 3000 ready tasks: most of them sit in the queue's heap, not its sorted front. A task re-keyed there must
    # leave its old place (the queue forgets removed heap entries by their tie-breaker).
    st = _state()
    n = 3000
    run = st.admit("r", Workflow(name="long", tasks=[{"id": f"t{i}", "priority": 0 if i < 2048 else -5}
                                                     for i in range(n)]), 0.0)
    for i in (2500, 2600):
        st.set_priority(run, i, -1)
    order = [t.task for t in st.views["fifo"].queue.iter()]
    assert len(order) == len(set(order)) == n
    assert order[2048:2050] == [2500, 2600]
    st.set_priority(run, 2999, 1)
    assert next(iter(st.views["fifo"].queue.iter())).task == 2999


def test_raising_a_task_of_a_later_run_puts_its_run_first_under_a_policy_that_orders_runs():
    st = _state(policy="job-fifo")
    early = st.admit("early", _fan(3, "early"), 0.0)
    late = st.admit("late", _fan(3, "late"), 1.0)
    st.set_priority(late, 2, 4)
    assert late.priority == 4 and early.priority == 0
    # The late run's raised task first, then its other tasks (the run now has the higher priority), then the early run.
    assert _drain(st, 1.0) == [("late", "t2"), ("late", "t0"), ("late", "t1"),
                               ("early", "t0"), ("early", "t1"), ("early", "t2")]


def test_a_task_not_ready_yet_takes_its_new_priority_when_it_becomes_ready():
    st = _state()
    wf = Workflow(name="w", tasks=[{"id": "root"}, {"id": "x", "depends_on": ["root"]},
                                   {"id": "y", "depends_on": ["root"]}, {"id": "z", "depends_on": ["root"]}])
    run = st.admit("r", wf, 0.0)
    st.set_priority(run, 3, 2)  # z is pending
    assert 3 not in run.ready_tasks
    assert [tid for _, tid in _drain(st)] == ["root", "z", "x", "y"]


def test_a_retrying_task_comes_back_with_its_new_priority():
    st = _state()
    run = st.admit("r", _fan(3, retries=1), 0.0)
    (first,) = st.schedule(0.0)
    i = first[1].task.task
    assert st.failed(run, i, first[1].node, "boom", 0.5) == "retrying"
    st.set_priority(run, i, 9)
    due = run.next_attempt_at[i]
    assert st.promote_due_retries(due) == 1
    assert run.ready_tasks[i].priority == 9
    (nxt,) = st.schedule(due)
    assert nxt[1].task.task == i


# ---- the store ---------------------------------------------------------------------------------------------------

@pytest.fixture
def store(store_url):
    s = Store.open(store_url)
    yield s
    s.close()


def test_the_store_records_the_priority_and_its_event_in_one_transaction(store):
    run_id = store.create_workflow(_fan(3), "fifo")
    rec = store.set_task_priority(run_id, "t1", 5)
    assert rec.task_id == "t1" and rec.priority == 5 and rec.status == S.PENDING
    assert {t.task_id: t.priority for t in store.get_tasks(run_id)} == {"t0": 0, "t1": 5, "t2": 0}
    (event,) = store.events(run_id, type_prefix="task.priority_changed")
    assert event.task_id == "t1" and event.payload["priority"] == 5 and event.payload["previous"] == 0
    assert store.change_task_priority(run_id, "t1", -3)[1] == 5
    # The same priority again: nothing to record.
    assert store.change_task_priority(run_id, "t1", -3)[1] == -3
    assert [(e.payload["previous"], e.payload["priority"])
            for e in store.events(run_id, type_prefix="task.priority_changed")] == [(0, 5), (5, -3)]


def test_the_store_refuses_unknown_tasks_started_or_ended_tasks_and_priorities_out_of_range(store):
    run_id = store.create_workflow(_fan(3), "fifo")
    with pytest.raises(StoreNotFoundError, match="no workflow run 'nope'"):
        store.set_task_priority("nope", "t0", 1)
    with pytest.raises(StoreNotFoundError, match=f"No task 'ghost' in workflow run '{run_id}'"):
        store.set_task_priority(run_id, "ghost", 1)
    limit = get_limits().max_priority
    with pytest.raises(StoreInvalidError, match=rf"priority {limit + 1} .* between {-limit} and {limit}"):
        store.set_task_priority(run_id, "t0", limit + 1)
    with pytest.raises(StoreInvalidError, match="whole number"):
        store.set_task_priority(run_id, "t0", True)
    with pytest.raises(StoreInvalidError, match="whole number"):
        store.set_task_priority(run_id, "t0", 1.5)
    store.apply([WorkflowChange(run_id, WorkflowStatus.RUNNING),
                 TaskChange(run_id, "t0", S.READY), TaskChange(run_id, "t0", S.RUNNING, attempt=1),
                 TaskChange(run_id, "t1", S.READY), TaskChange(run_id, "t1", S.RUNNING, attempt=1),
                 TaskChange(run_id, "t1", S.SUCCEEDED)])
    with pytest.raises(StoreConflictError, match="Task 't0' .* is running"):
        store.set_task_priority(run_id, "t0", 1)
    with pytest.raises(StoreConflictError, match="Task 't1' .* is succeeded"):
        store.set_task_priority(run_id, "t1", 1)
    assert store.set_task_priority(run_id, "t2", 4).priority == 4  # a ready task's may change
    assert {t.task_id: t.priority for t in store.get_tasks(run_id)} == {"t0": 0, "t1": 0, "t2": 4}
    assert len(store.events(run_id, type_prefix="task.priority_changed")) == 1  # the refusals recorded nothing


# ---- recovery ----------------------------------------------------------------------------------------------------

def test_a_stored_priority_is_used_when_the_run_is_resumed(store):
    wf = Workflow(name="resumed", tasks=[{"id": "a", "priority": 2}, {"id": "b"}, {"id": "c"}, {"id": "d"}])
    run_id = store.create_workflow(wf, "fifo")
    store.set_task_priority(run_id, "d", 5)
    store.set_task_priority(run_id, "a", -1)
    assert with_stored_priorities(wf, store.get_tasks(run_id)).task("d").priority == 5
    assert with_stored_priorities(wf, store.get_tasks(run_id)).task("a").priority == -1
    unchanged = store.create_workflow(wf, "fifo")
    assert with_stored_priorities(wf, store.get_tasks(unchanged)) is wf

    st = _state()
    flushed = []
    recovery = Recovery(store, st, nodes=None, journal=None, launcher=None, predictions=None,
                        flush=lambda force=False: flushed.append(force) or True, written=lambda changes: None)
    assert recovery.resume_all(only=run_id) == [run_id]
    run = st.by_run[run_id]
    assert run.task_priority == [-1, 0, 0, 5] and run.priority == 5
    assert [tid for _, tid in _drain(st)] == ["d", "b", "c", "a"]


# ---- the actor on Ray ------------------------------------------------------------------------------------------

@pytest.fixture
def orch(ray_cluster, tmp_path):
    """An orchestrator actor with its own SQLite store; killed after the test."""
    start, stop = actor_factory(tmp_path, dispatch_ahead=0.0, predict_tasks=False)
    yield start
    stop()


def _one_slot_workflow(name, blocker_s=1.5, n=4):
    """A blocker, then `n` waiting tasks, each needing all of the worker node: one at a time."""
    one_slot = {"cpus": 2, "custom": {"worker": 1}}  # all of the worker node's cpus
    return workflow_from_dict({"name": name, "tasks": [
        {"id": "blocker", "entrypoint": f"{B}:sleep", "args": [blocker_s], "priority": 1, "resources": one_slot},
        *[{"id": f"low{i}", "entrypoint": f"{B}:sleep", "args": [0.1], "resources": one_slot} for i in range(n)]]})


def _until(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_actor_reorders_a_running_workflow_and_refuses_what_cannot_change(orch):
    h = orch()
    store = orch.store()
    run_id = ray.get(h.submit.remote(_one_slot_workflow("reorder").model_dump(), "fifo"))
    _until(lambda: {t.task_id: t.status for t in store.get_tasks(run_id)}["blocker"] == S.RUNNING)

    answer = ray.get(h.set_priority.remote(run_id, "low3", 5))
    assert answer == {"run_id": run_id, "task_id": "low3", "priority": 5, "previous": 0}
    with pytest.raises(StoreNotFoundError, match=f"No task 'ghost' in workflow run '{run_id}'"):
        ray.get(h.set_priority.remote(run_id, "ghost", 5))
    with pytest.raises(StoreConflictError, match="Task 'blocker' .* is running"):
        ray.get(h.set_priority.remote(run_id, "blocker", 5))
    with pytest.raises(StoreInvalidError, match="out of range"):
        ray.get(h.set_priority.remote(run_id, "low1", 10**12))

    final = wait_for(h, [run_id], poll=0.05, timeout=60)[run_id]
    assert final["status"] == "succeeded"
    tasks = {t.task_id: t for t in store.get_tasks(run_id)}
    assert tasks["low3"].priority == 5
    later = [tasks[f"low{i}"].started_at for i in range(3)]
    assert tasks["blocker"].started_at < tasks["low3"].started_at < min(later)
    (event,) = store.events(run_id, type_prefix="task.priority_changed")
    assert event.task_id == "low3" and event.payload["priority"] == 5 and event.payload["previous"] == 0
    with pytest.raises(StoreConflictError, match="Task 'low0' .* is succeeded"):
        ray.get(h.set_priority.remote(run_id, "low0", 5))
    with pytest.raises(StoreNotFoundError, match="no workflow run 'nope'"):
        ray.get(h.set_priority.remote("nope", "low0", 5))
    assert len(store.events(run_id, type_prefix="task.priority_changed")) == 1


def test_a_run_not_tracked_takes_the_stored_priority_when_it_is_resumed(orch):
    h = orch()
    store = orch.store()
    # Recorded in the store but not (yet) run by this orchestrator: the store alone changes.
    run_id = store.create_workflow(_one_slot_workflow("later", blocker_s=0.5), "fifo")
    answer = ray.get(h.set_priority.remote(run_id, "low2", 3))
    assert answer["previous"] == 0 and ray.get(h.stats.remote())["active_runs"] == 0
    assert ray.get(h.resume.remote(run_id)) == [run_id]
    final = wait_for(h, [run_id], poll=0.05, timeout=60)[run_id]
    assert final["status"] == "succeeded"
    tasks = {t.task_id: t for t in store.get_tasks(run_id)}
    # low2 (3) before the blocker (1), then the others (0) in order.
    starts = sorted(tasks, key=lambda tid: tasks[tid].started_at)
    assert starts == ["low2", "blocker", "low0", "low1", "low3"]

"""The runtime's bookkeeping without Ray: every move is legal and recorded, counts stay consistent, retries back
off, failures skip descendants, cancellation and resume restore a consistent state."""

from __future__ import annotations

import random

import pytest

from orchestrator.errors import InvalidTransitionError
from orchestrator.model import Workflow
from orchestrator.runtime.state import RetryPolicy, RuntimeState
from orchestrator.scheduling.heuristics import FifoPolicy
from orchestrator.scheduling.interface import NodeView
from orchestrator.states import TaskStatus, WorkflowStatus
from orchestrator.store.records import TaskChange, WorkflowChange

S = TaskStatus


def _state(cpus=4.0, policy="srpt-cp"):
    return RuntimeState(NodeView(["n0"], [cpus], [64e9], [0.0]), default_policy=policy,
                        retry=RetryPolicy(base=1.0, cap=100.0, jitter=0.5))


def _diamond(**kw):
    return Workflow(name="d", tasks=[{"id": "a", **kw}, {"id": "b", "depends_on": ["a"]},
                                     {"id": "c", "depends_on": ["a"]}, {"id": "d", "depends_on": ["b", "c"]}])


def _check_counts(run):
    counts = {}
    for s in run.detail:
        counts[s.value] = counts.get(s.value, 0) + 1
    assert run.counts() == counts


def test_success_path_records_every_move_in_order():
    st = _state()
    run = st.admit("r1", _diamond(), 0.0)
    node_of = {}
    t = 0.0
    while run.wf_status == WorkflowStatus.RUNNING:
        made = st.schedule(t)
        for _, d in made:
            node_of[d.task.task] = d.node
        assert made, "nothing runnable while the run is unfinished"
        for _, d in made:
            t += 1
            st.succeeded(run, d.task.task, node_of[d.task.task], None, t)
            _check_counts(run)
    assert run.wf_status == WorkflowStatus.SUCCEEDED
    changes = st.take_changes()
    per_task = {}
    for c in changes:
        if isinstance(c, TaskChange):
            per_task.setdefault(c.task_id, []).append(c.status)
    assert all(v == [S.READY, S.RUNNING, S.SUCCEEDED] for v in per_task.values())
    assert [c.status for c in changes if isinstance(c, WorkflowChange)] == [WorkflowStatus.RUNNING,
                                                                           WorkflowStatus.SUCCEEDED]
    assert st.nodes.free_cpus == [4.0]  # everything released


def test_retries_back_off_exponentially_then_fail_and_skip():
    st = _state()
    run = st.admit("r1", _diamond(retries=2, retry_delay=1.0), 0.0)
    delays = []
    now = 0.0
    for attempt in (1, 2, 3):
        made = st.schedule(now)
        assert [d.task.task for _, d in made] == [0] and run.attempts[0] == attempt
        outcome = st.failed(run, 0, made[0][1].node, "boom", now)
        if attempt < 3:
            assert outcome == "retrying" and run.detail[0] == S.RETRYING
            due = run.next_attempt_at[0]
            delays.append(due - now)
            assert st.schedule(now) == []  # not before its backoff
            now = due
            assert st.promote_due_retries(now) == 1
        else:
            assert outcome == "failed"
    assert 1.0 <= delays[0] <= 1.5 and 2.0 <= delays[1] <= 3.0  # base x 2^(n-1) x (1 + jitter)
    assert [run.detail[i] for i in range(4)] == [S.FAILED, S.SKIPPED, S.SKIPPED, S.SKIPPED]
    assert run.wf_status == WorkflowStatus.FAILED and st.nodes.free_cpus == [4.0]
    _check_counts(run)


def test_system_failures_do_not_use_up_retries():
    st = _state()
    run = st.admit("r1", _diamond(), 0.0)
    made = st.schedule(0.0)
    assert st.failed(run, 0, made[0][1].node, "node died", 0.0, system=True) == "retrying"
    assert run.next_attempt_at[0] == 0.0
    assert (run.attempts[0], run.failures[0], run.system_failures[0]) == (1, 0, 1)
    # The retry is a new attempt with its own number (a number names one attempt), and the task keeps all
    # of its own retries: a task with retries=0 still gets its retry after a lost worker.
    st.promote_due_retries(0.0)
    st.take_changes()
    st.schedule(0.0)
    started = [c for c in st.take_changes() if c.task_id == "a" and c.status == S.RUNNING]
    assert [c.attempt for c in started] == [2]


def test_cancel_moves_everything_and_late_results_are_ignored():
    st = _state()
    run = st.admit("r1", _diamond(), 0.0)
    made = st.schedule(0.0)
    running = st.cancel(run, 1.0)
    assert running == [0]
    assert set(run.detail) == {S.CANCELLED} and run.wf_status == WorkflowStatus.CANCELLED
    st.succeeded(run, 0, made[0][1].node, None, 2.0)  # the worker finished anyway
    assert run.detail[0] == S.CANCELLED and st.nodes.free_cpus == [4.0]


def test_illegal_move_is_refused():
    st = _state()
    run = st.admit("r1", _diamond(), 0.0)
    with pytest.raises(InvalidTransitionError, match="from 'pending' to 'succeeded'"):
        st._move(run, 3, S.SUCCEEDED)


def test_resume_requeues_running_and_keeps_finished():
    st = _state()
    wf = _diamond()
    stored = {"a": (S.SUCCEEDED, 1, "result://r/a", None), "b": (S.RUNNING, 1, None, None),
              "c": (S.PENDING, 0, None, None), "d": (S.PENDING, 0, None, None)}
    run = st.admit("r1", wf, 0.0, stored=stored, stored_status=WorkflowStatus.RUNNING)
    assert run.detail == [S.SUCCEEDED, S.READY, S.READY, S.PENDING]
    changes = st.take_changes()
    assert [(c.task_id, c.status) for c in changes] == [("b", S.READY), ("c", S.READY)]
    assert {d.task.task for _, d in st.schedule(1.0)} == {1, 2}
    _check_counts(run)


@pytest.mark.parametrize("seed", range(5))
def test_random_outcomes_keep_counts_and_resources_consistent(seed):
    rng = random.Random(seed)
    st = _state(cpus=3.0)
    tasks = [{"id": f"t{i}", "retries": rng.randint(0, 2), "retry_delay": 0.1,
              "depends_on": [f"t{j}" for j in range(i) if rng.random() < 0.2]} for i in range(25)]
    run = st.admit("r", Workflow(name="r", tasks=tasks), 0.0)
    running: dict[int, int] = {}
    now = 0.0
    for _ in range(500):
        now += 0.05
        st.promote_due_retries(now)
        for _, d in st.schedule(now):
            running[d.task.task] = d.node
        if not running:
            if run.wf_status.terminal:
                break
            continue
        i = rng.choice(sorted(running))
        node = running.pop(i)
        if rng.random() < 0.3:
            st.failed(run, i, node, "x", now)
        else:
            st.succeeded(run, i, node, None, now)
        _check_counts(run)
        assert abs(st.nodes.free_cpus[0] - (3.0 - len(running))) < 1e-9
    assert run.wf_status.terminal


def _fan(n, duration, **kw):
    return Workflow(name="fan", tasks=[{"id": f"t{i}", "duration": duration, **kw} for i in range(n)])


def test_dispatch_ahead_commits_short_tasks_in_policy_order_and_promotes_them_as_slots_free():
    st = RuntimeState(NodeView(["n0"], [2.0], [64e9], [0.0]), default_policy="fifo", ahead=1.0, ahead_max_s=0.5)
    run = st.admit("r", _fan(7, 0.1), 0.0)
    made = st.schedule(1.0)
    order = [d.task.task for _, d in made]
    assert order == [0, 1, 2, 3]  # two take the free slots, two wait ahead (1.0 x 2 cpus), in FIFO order
    assert run.ahead == {2, 3} and st.num_ahead() == 2
    assert st.nodes.free_cpus == [0.0]  # the ahead ones hold no slot yet
    assert st.schedule(1.5) == []  # the allowance is used up
    st.succeeded(run, 0, 0, None, 2.0)
    assert st.take_promoted() == [(run, 2)] and run.ahead == {3} and st.nodes.free_cpus == [0.0]
    # Dispatch refills the allowance with the next task in order.
    assert [d.task.task for _, d in st.schedule(2.0)] == [4]
    assert run.ahead == {3, 4}
    # A task cancelled or lost while it waits ahead gives back its allowance, never a slot it did not hold.
    st.failed(run, 3, 0, "lost", 2.5, system=True)
    assert run.ahead == {4} and st.nodes.free_cpus == [0.0] and st.num_ahead() == 1
    for i in (1, 2):
        st.succeeded(run, i, 0, None, 3.0)
    assert [i for _, i in st.take_promoted()] == [4]
    assert st.nodes.free_cpus == [1.0] and st.num_ahead() == 0


def test_dispatch_ahead_leaves_long_tasks_for_free_slots_only():
    st = RuntimeState(NodeView(["n0"], [2.0], [64e9], [0.0]), default_policy="fifo", ahead=2.0, ahead_max_s=0.5)
    st.admit("r", _fan(6, 5.0), 0.0)
    assert len(st.schedule(1.0)) == 2 and st.num_ahead() == 0
    off = RuntimeState(NodeView(["n0"], [2.0], [64e9], [0.0]), default_policy="fifo", ahead=0.0)
    off.admit("r", _fan(6, 0.01), 0.0)
    assert len(off.schedule(1.0)) == 2 and off.num_ahead() == 0


def test_dispatch_ahead_keeps_accounting_consistent_under_random_outcomes():
    rng = random.Random(7)
    st = RuntimeState(NodeView(["n0", "n1"], [3.0, 2.0], [64e9, 64e9], [0.0, 0.0]), default_policy="srpt-cp",
                      ahead=1.5, ahead_max_s=1.0, retry=RetryPolicy(base=0.0, cap=0.0, jitter=0.0))
    runs = [st.admit(f"r{k}", _fan(12, rng.choice([0.1, 2.0]), retries=1), 0.0) for k in range(3)]
    running: list = []
    t = 0.0
    while any(r.wf_status == WorkflowStatus.RUNNING for r in runs):
        t += 1.0
        st.promote_due_retries(t)
        running += [(run, d.task.task, d.node) for run, d in st.schedule(t)]
        for node in (0, 1):
            held = sum(1 for run, i, n in running if n == node and i not in run.ahead)
            waiting = sum(1 for run, i, n in running if n == node and i in run.ahead)
            assert held <= st.nodes.cap_cpus[node] and waiting <= 1.5 * st.nodes.cap_cpus[node] + 1e-9
            assert abs(st.nodes.free_cpus[node] - (st.nodes.cap_cpus[node] - held)) < 1e-9
        assert running, "nothing running while runs are unfinished"
        run, i, node = running.pop(rng.randrange(len(running)))
        if rng.random() < 0.2:
            st.failed(run, i, node, "boom", t)
        else:
            st.succeeded(run, i, node, None, t)
    assert st.nodes.free_cpus == [3.0, 2.0] and st.num_ahead() == 0


# ---- the semantics shared with the simulator ------------------------------------------------------------------

def test_retry_delays_are_a_function_of_seed_job_task_and_attempt():
    retry = RetryPolicy(base=1.0, cap=100.0, jitter=0.5)
    d = retry.delay(2, None, seed=3, job=1, task=4)
    assert 2.0 <= d < 3.0
    assert retry.delay(2, None, seed=3, job=1, task=4) == d  # no shared random stream: the same call, the same delay
    assert len({retry.delay(2, None, seed=s, job=1, task=4) for s in range(20)}) == 20
    assert retry.delay(1, 0.5, seed=3, job=1, task=4) < 0.75  # the task's retry_delay as the base
    assert retry.delay(1, float("nan")) >= 1.0  # NaN (the simulator's "not given"): the default base
    assert RetryPolicy(base=1.0, jitter=0.0).delay(30) == 300.0  # capped
    # The runtime keys the jitter by (its seed, the run's index, the task, the task's own failures).
    st = RuntimeState(NodeView(["n0"], [4.0], [64e9], [0.0]), default_policy="fifo", retry=retry, seed=3)
    st.admit("r0", _diamond(), 0.0)
    run = st.admit("r1", _diamond(retries=2), 0.0)
    made = [d for r, d in st.schedule(0.0) if r is run]
    st.failed(run, 0, made[0].node, "boom", 5.0)
    assert run.next_attempt_at[0] == 5.0 + retry.delay(1, None, seed=3, job=run.id, task=0)


def test_retries_due_together_become_ready_in_the_order_they_were_scheduled():
    st = RuntimeState(NodeView(["n0"], [4.0], [64e9], [0.0]), default_policy="fifo",
                      retry=RetryPolicy(base=0.0, cap=0.0, jitter=0.0))
    run = st.admit("r", _fan(3, 1.0, retries=1), 0.0)
    st.schedule(0.0)
    for i in (2, 0, 1):
        assert st.failed(run, i, 0, "x", 1.0) == "retrying"
    assert st.promote_due_retries(1.0) == 3
    assert [t.task for t in sorted(run.ready_tasks.values(), key=lambda t: t.seq)] == [2, 0, 1]


def test_custom_resources_are_matched_against_the_node_list():
    nodes = NodeView(["plain", "gpu-box"], [4.0, 4.0], [64e9, 64e9], [0.0, 0.0], custom=[{}, {"worker": 2.0}])
    st = RuntimeState(nodes, default_policy="fifo")
    wf = Workflow(name="c", tasks=[{"id": "w", "resources": {"custom": {"worker": 1}}}, {"id": "p"},
                                   {"id": "x", "resources": {"custom": {"worker": 3}}}])
    run = st.admit("r", wf, 0.0)
    assert run.ready_tasks[0].allowed == frozenset({1}) and run.ready_tasks[1].allowed is None
    assert run.ready_tasks[2].allowed == frozenset()  # no node offers 3
    assert {d.task.task: d.node for _, d in st.schedule(0.0)} == {0: 1, 1: 0}
    nodes.custom[1] = {}  # the node left (the runtime empties a gone node's custom resources)
    assert st.allowed({"worker": 1}) == frozenset()


def test_failed_and_skipped_tasks_leave_no_remaining_work():
    st = _state()
    run = st.admit("r", Workflow(name="d", tasks=[{"id": "a", "duration": 2}, {"id": "b", "depends_on": ["a"],
                                                                                "duration": 3},
                                                  {"id": "c", "duration": 5}]), 0.0)
    assert run.remaining_work == 10.0
    st.schedule(0.0)
    st.failed(run, 0, 0, "boom", 1.0)
    assert run.remaining_work == 5.0  # a failed, b skipped: only c's work is left
    st.update_predictions(run, {2: 4.0})
    assert run.remaining_work == 4.0 and run.pred[2] == 4.0


def test_dispatch_ahead_never_commits_a_task_to_a_node_too_small_for_it():
    nodes = NodeView(["small", "big"], [1.0, 4.0], [64e9, 64e9], [0.0, 0.0])
    st = RuntimeState(nodes, default_policy="fifo", ahead=4.0, ahead_max_s=1.0)
    st.admit("r", Workflow(name="f", tasks=[{"id": f"t{i}", "duration": 0.1, "resources": {"cpus": 2}}
                                            for i in range(6)]), 0.0)
    made = st.schedule(0.0)
    assert [d.node for _, d in made] == [1, 1, 1, 1]  # two hold the big node's slots, two wait ahead there
    assert st.num_ahead() == 2


def test_a_task_committed_ahead_to_a_node_with_room_takes_it_at_once():
    class OneFirst(FifoPolicy):
        """Starts a single task per round on the free resources, then fills the allowance."""

        def schedule(self, state):
            decisions = super().schedule(state)
            return decisions if state.max_predicted is not None else decisions[:1]

    from orchestrator import scheduling

    scheduling._REGISTRY["one-first"] = OneFirst
    try:
        st = RuntimeState(NodeView(["n0", "n1"], [1.0, 1.0], [64e9, 64e9], [0.0, 0.0]), default_policy="one-first",
                          ahead=1.0, ahead_max_s=1.0)
        run = st.admit("r", _fan(3, 0.1), 0.0)
        made = [(d.task.task, d.node) for _, d in st.schedule(0.0)]
        assert made == [(0, 0), (1, 0), (2, 1)]  # t2 is committed ahead to n1, which is idle: it starts there
        assert st.take_promoted() == [(run, 2)] and run.ahead == {1} and st.nodes.free_cpus == [0.0, 0.0]
    finally:
        del scheduling._REGISTRY["one-first"]

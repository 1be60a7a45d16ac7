"""A policy's fault delays only its own runs, and predictions that arrive late do not make the policy's order drift:
a policy that raises, returns an invalid decision or cannot take a run hands its runs to the fallback policy (and
each run records why); re-keyed predictions give the order the new predictions give from scratch."""

from __future__ import annotations

import pytest

from orchestrator.model import Workflow
from orchestrator.runtime.state import RuntimeState
from orchestrator.scheduling import register_policy
from orchestrator.scheduling.heuristics import FifoPolicy
from orchestrator.scheduling.interface import NodeView
from orchestrator.states import TaskStatus, WorkflowStatus
from orchestrator.store.records import RunNote


class _Raises(FifoPolicy):
    name = "test-raises"

    def schedule(self, state):
        raise RuntimeError("model server down")


class _Invalid(FifoPolicy):
    name = "test-invalid"

    def schedule(self, state):
        decisions = super().schedule(state)
        return [(t, 99) for t, _ in decisions]  # a node that does not exist


class _Overcommits(FifoPolicy):
    name = "test-overcommits"

    def schedule(self, state):
        return [(t, 0) for t in state.ready()]  # every ready task on node 0, whatever fits


class _BadArrival(FifoPolicy):
    name = "test-bad-arrival"

    def on_job_arrival(self, job):
        raise ValueError("cannot featurise this DAG")


@pytest.fixture(autouse=True)
def _broken_policies():
    """Registered only while a test of this file runs (other suites, e.g. conformance, iterate every policy)."""
    from orchestrator.scheduling import _REGISTRY

    for cls in (_Raises, _Invalid, _Overcommits, _BadArrival):
        register_policy(cls.name, cls)
    yield
    for cls in (_Raises, _Invalid, _Overcommits, _BadArrival):
        _REGISTRY.pop(cls.name, None)


def _fan(n: int, name: str = "fan", policy: str | None = None) -> Workflow:
    tasks = [{"id": "root"}] + [{"id": f"t{k}", "depends_on": ["root"]} for k in range(n)]
    return Workflow(name=name, policy=policy, tasks=tasks)


def _state(cpus: float = 4.0) -> RuntimeState:
    return RuntimeState(NodeView(["n0"], [cpus], [64e9], [0.0]), default_policy="srpt-cp")


def _drain(st: RuntimeState, *runs) -> None:
    """Run everything to the end: schedule, then finish each started task."""
    t = 0.0
    for _ in range(1000):
        if all(r.wf_status.terminal for r in runs):
            return
        made = st.schedule(t)
        assert made or st.num_ready() == 0
        for run, d in made:
            t += 1.0
            st.succeeded(run, d.task.task, d.node, None, t)
    raise AssertionError("the runs did not finish")


@pytest.mark.parametrize("bad", ["test-raises", "test-invalid", "test-overcommits", "test-bad-arrival"])
def test_a_failing_policy_hands_its_runs_to_the_fallback_and_the_others_go_on(bad):
    st = _state()
    bad_run = st.admit("bad", _fan(6, policy=bad), 0.0)
    good_run = st.admit("good", _fan(6, policy="fifo"), 0.0)
    _drain(st, bad_run, good_run)
    assert bad_run.wf_status == good_run.wf_status == WorkflowStatus.SUCCEEDED
    assert bad_run.policy_name == "srpt-cp" and good_run.policy_name == "fifo"
    notes = [c for c in st.take_changes() if isinstance(c, RunNote)]
    assert [(n.run_id, n.type, n.detail["policy"], n.detail["fallback"]) for n in notes] == [
        ("bad", "workflow.policy_fallback", bad, "srpt-cp")]
    assert notes[0].detail["reason"]  # says why
    assert st.nodes.free_cpus == [4.0]


def test_an_invalid_decision_starts_nothing_of_that_call():
    """The whole call is refused before anything is reserved (no task half-started, no resource held); the next
    round decides under the fallback, within capacity."""
    st = _state(cpus=2.0)
    run = st.admit("r", _fan(4, policy="test-overcommits"), 0.0)
    st.schedule(0.0)  # root alone: fits, so even this policy is right
    (root,) = [i for i, s in enumerate(run.detail) if s == TaskStatus.RUNNING]
    st.succeeded(run, root, 0, None, 1.0)
    assert st.schedule(1.0) == []  # four tasks on a 2-cpu node: refused whole
    assert st.nodes.free_cpus == [2.0] and run.counts() == {"succeeded": 1, "ready": 4}
    assert run.policy_name == "srpt-cp"
    made = st.schedule(2.0)
    assert len(made) == 2 and st.nodes.free_cpus == [0.0]


def test_the_fallback_failing_too_is_an_error_not_a_loop():
    st = RuntimeState(NodeView(["n0"], [4.0], [64e9], [0.0]), default_policy="test-raises")
    st.admit("r", _fan(2, policy="fifo"), 0.0)
    st.admit("s", _fan(2), 0.0)  # under the default, which raises: falls back to fifo
    made = st.schedule(0.0)
    assert made  # fifo decided for both runs


def test_a_run_no_policy_can_schedule_fails_with_its_cause():
    """The default policy and FIFO both broken: the run fails (tasks skipped, the cause recorded) instead of being
    handed back and forth or stalling; a run that no longer waits on a policy decision is left alone."""
    from orchestrator.scheduling import _REGISTRY

    fifo = _REGISTRY["fifo"]
    register_policy("fifo", _Raises)
    try:
        st = RuntimeState(NodeView(["n0"], [4.0], [64e9], [0.0]), default_policy="test-raises")
        run = st.admit("r", _fan(2), 0.0)
        for t in range(3):
            assert st.schedule(float(t)) == []
        assert run.wf_status == WorkflowStatus.FAILED and "no scheduling policy could schedule it" in run.error
        assert set(run.detail) == {TaskStatus.SKIPPED} and run.failed_policies == {"test-raises", "fifo"}
        notes = [c for c in st.take_changes() if isinstance(c, RunNote)]
        assert [(n.detail["policy"], n.detail["fallback"]) for n in notes] == [("test-raises", "fifo")]
    finally:
        register_policy("fifo", fifo)


def _order(st: RuntimeState) -> list[tuple[str, str]]:
    view = next(iter(st.views.values()))
    return [(st.jobs[t.job].run_id, st.jobs[t.job].dag.ids[t.task]) for t in view.queue.iter()]


def test_late_predictions_rekey_the_queue_and_the_remaining_work():
    """Predictions that arrive after admission give the same queue order and remaining work as if they had been
    known at admission (no mix of 1 s defaults and new values, no stale keys)."""
    wf_a = Workflow(name="a", tasks=[{"id": "x"}, {"id": "y"}, {"id": "z", "depends_on": ["x"]}])
    wf_b = Workflow(name="b", tasks=[{"id": "p"}, {"id": "q", "depends_on": ["p"]}])
    late = _state(cpus=0.5)  # nothing fits: the queue keeps everything
    a, b = late.admit("a", wf_a, 0.0), late.admit("b", wf_b, 0.0)
    late.update_predictions(a, {0: 9.0, 1: 1.0, 2: 30.0})
    late.update_predictions(b, {0: 2.0, 1: 2.0})
    known = _state(cpus=0.5)
    with_durations = [
        wf_a.model_copy(update={"tasks": [t.model_copy(update={"duration": d}) for t, d in zip(wf_a.tasks, (9, 1, 30))]}),
        wf_b.model_copy(update={"tasks": [t.model_copy(update={"duration": d}) for t, d in zip(wf_b.tasks, (2, 2))]}),
    ]
    ka, kb = known.admit("a", with_durations[0], 0.0), known.admit("b", with_durations[1], 0.0)
    assert _order(late) == _order(known) == [("b", "p"), ("a", "x"), ("a", "y")]  # b: less work; x: longer path
    assert (a.remaining_work, b.remaining_work) == (ka.remaining_work, kb.remaining_work) == (40.0, 4.0)
    assert list(a.analysis.bottom_level) == list(ka.analysis.bottom_level)
    # After a task finished, a prediction for the rest counts only unfinished work.
    st = _state(cpus=4.0)
    run = st.admit("r", wf_a, 0.0)
    made = {run.dag.ids[d.task.task]: d for _, d in st.schedule(0.0)}
    st.succeeded(run, made["x"].task.task, made["x"].node, None, 1.0)
    st.update_predictions(run, {2: 5.0})
    assert run.remaining_work == 1.0 + 5.0  # y (default 1 s, running) + z; x is done

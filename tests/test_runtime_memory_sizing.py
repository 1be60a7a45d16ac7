"""Memory requests sized by input-knn in the runtime (`RuntimeConfig.memory_requests = "sized"`): the request of a
task that declares none is the input-knn size of its category's recorded peaks, reserved on the node and enforced;
a memory failure doubles it (up to the largest node) without using the task's retries; "declared" changes nothing.
Pure parts first (config, sizer, run state), then the real runtime on the shared Ray cluster."""

from __future__ import annotations

import math

import numpy as np
import pytest
import ray
from pydantic import ValidationError

from orchestrator.loaders import workflow_from_dict
from orchestrator.model import Workflow
from orchestrator.prediction.memory_sizing import input_knn
from orchestrator.runtime.client import wait_for
from orchestrator.runtime.config import RuntimeConfig
from orchestrator.runtime.memory_requests import MemoryRequests, raised_request
from orchestrator.runtime.state import RetryPolicy, RuntimeState
from orchestrator.scheduling.interface import NodeView
from orchestrator.states import TaskStatus, WorkflowStatus
from orchestrator.store.records import ExecutionRecord, RunNote, TaskChange, WorkflowChange

from conftest import actor_factory

B = "orchestrator.runtime.builtins"
MiB = 1024**2
GiB = 1024**3


def _expected(peaks, inputs, x, k=8, margin=0.05) -> int:
    """What `input_knn` gives for this history (log1p sizes, as the evaluation's table)."""
    return math.ceil(input_knn(k, margin)(np.asarray(peaks, float), np.log1p(np.asarray(inputs, float)),
                                          float(np.log1p(x))))


# ---- configuration -------------------------------------------------------------------------------------------
def test_memory_requests_default_to_declared_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_MEMORY_REQUESTS", raising=False)
    cfg = RuntimeConfig()
    assert (cfg.memory_requests, cfg.memory_sizing_k, cfg.memory_sizing_margin) == ("declared", 8, 0.05)
    assert RuntimeConfig(memory_requests="sized").memory_requests == "sized"
    with pytest.raises(ValidationError, match="memory_requests is 'auto': give 'declared' .* or 'sized'"):
        RuntimeConfig(memory_requests="auto")
    monkeypatch.setenv("ORCHESTRATOR_MEMORY_REQUESTS", "bigger")
    with pytest.raises(ValidationError, match="memory_requests is 'bigger'.*ORCHESTRATOR_MEMORY_REQUESTS"):
        RuntimeConfig()
    monkeypatch.setenv("ORCHESTRATOR_MEMORY_REQUESTS", "sized")
    assert RuntimeConfig().memory_requests == "sized"
    with pytest.raises(ValidationError, match="memory_sizing_k"):
        RuntimeConfig(memory_sizing_k=0)
    with pytest.raises(ValidationError, match="memory_sizing_margin"):
        RuntimeConfig(memory_sizing_margin=-0.1)


# ---- the sizer -------------------------------------------------------------------------------------------------
def test_sizer_gives_what_input_knn_gives_on_the_category_history():
    sizer = MemoryRequests(k=2, margin=0.1)
    peaks, inputs = [100 * MiB, 300 * MiB, 200 * MiB, 50 * MiB], [1e6, 1e9, 1e8, 1e3]
    for p, x in zip(peaks, inputs):
        sizer.observe("fam", "align", x, p)
    sizer.observe("fam", "align", 5e6, None)  # no peak recorded: ignored
    sizer.observe("other", "align", 1e9, 4 * GiB)  # another family: another category
    got = sizer.size("fam", "align", 2e8)
    assert got.memory == _expected(peaks, inputs, 2e8, k=2, margin=0.1) == math.ceil(300 * MiB * 1.1)
    assert got.executions == 4
    assert sizer.size("fam", "align", 2e3).memory == math.ceil(100 * MiB * 1.1)  # the 2 closest: 1e3, 1e6
    assert sizer.size("fam", "never-seen", 1e6) is None
    # Unknown input size: the latest k peaks.
    assert sizer.size("fam", "align", None).memory == math.ceil(200 * MiB * 1.1)


def test_raised_request_doubles_up_to_the_cap_then_stops():
    assert raised_request(100.0, 1000.0) == 200.0
    assert raised_request(600.0, 1000.0) == 1000.0
    assert raised_request(1000.0, 1000.0) is None
    steps, r = 0, 1.0
    while (r := raised_request(r, 1e12)) is not None:
        steps += 1
    assert steps == 40  # bounded: log2(cap / first request)


# ---- the run state (no Ray) ------------------------------------------------------------------------------------
def _sized_state(node_memory=64 * GiB, sizer=None):
    st = RuntimeState(NodeView(["n0"], [4.0], [float(node_memory)], [0.0]), default_policy="fifo",
                      retry=RetryPolicy(base=1.0, cap=100.0, jitter=0.0))
    st.memory_sizer = sizer
    return st


def _history(peak=40 * MiB):
    sizer = MemoryRequests()
    for x in (1e6, 2e6, 4e6):
        sizer.observe(None, "work", x, peak)
    return sizer


def _wf():
    return Workflow(name="w", tasks=[
        {"id": "free", "category": "work", "input_bytes": 2_000_000, "retries": 0},
        {"id": "fixed", "category": "work", "resources": {"memory": GiB}},
        {"id": "new", "category": "unseen"},
        {"id": "later", "category": "work", "depends_on": ["free"]}])


def test_state_sizes_tasks_without_memory_and_keeps_declared_ones():
    sizer = _history()
    st = _sized_state(sizer=sizer)
    run = st.admit("r1", _wf(), 0.0)
    want = _expected([40 * MiB] * 3, [1e6, 2e6, 4e6], 2e6)
    free, fixed, new = (run.dag.index[t] for t in ("free", "fixed", "new"))
    assert run.memory[free] == want and run.ready_tasks[free].memory == want
    assert run.memory[fixed] == 1 * GiB and run.memory[new] == 0  # declared kept; no peak recorded: none
    notes = [c for c in st.take_changes() if isinstance(c, RunNote)]
    assert [(n.type, n.task_id, n.detail["memory"]) for n in notes] == [("task.memory_sized", "free", want)]
    assert notes[0].detail["k"] == 8 and notes[0].detail["margin"] == 0.05
    # What the policy reserves is the sized request, and it is given back in full.
    decided = {d.task.task: (d.node, d.task.memory) for _, d in st.schedule(1.0)}
    assert decided[free][1] == want
    assert st.nodes.free_memory[0] == 64 * GiB - want - 1 * GiB
    # A sibling that finished since counts for the tasks that become ready after it.
    sizer.observe(None, "work", 3e6, 400 * MiB)
    st.succeeded(run, free, decided[free][0], None, 2.0)
    assert run.memory[run.dag.index["later"]] == math.ceil(400 * MiB * 1.05)
    st.succeeded(run, fixed, decided[fixed][0], None, 2.0)
    st.succeeded(run, new, decided[new][0], None, 2.0)
    assert st.nodes.free_memory[0] == 64 * GiB
    (_, d), = st.schedule(3.0)
    assert d.task.memory == run.memory[run.dag.index["later"]]
    assert st.nodes.free_memory[0] == 64 * GiB - d.task.memory


def test_state_without_sizer_changes_nothing():
    st = _sized_state(sizer=None)
    run = st.admit("r1", _wf(), 0.0)
    assert run.memory == [0.0, float(GiB), 0.0, 0.0] and not run.sized
    assert not [c for c in st.take_changes() if isinstance(c, RunNote)]
    (_, d), *_ = st.schedule(1.0)
    # A memory failure of a task with no sized request is an ordinary failure (retries 0: it fails).
    assert st.failed(run, d.task.task, d.node, "MemoryError", 2.0, memory=True) == "failed"


def test_memory_failure_of_a_sized_request_doubles_it_without_using_retries_until_the_cap():
    cap = 200 * MiB
    st = _sized_state(node_memory=cap, sizer=_history())
    run = st.admit("r1", Workflow(name="w", tasks=[{"id": "free", "category": "work", "input_bytes": 2_000_000,
                                                    "retries": 1}]), 0.0)
    st.take_changes()
    requests, t = [], 0.0
    while True:
        st.promote_due_retries(t)
        (_, d), = st.schedule(t)
        requests.append(d.task.memory)
        assert st.nodes.free_memory[0] == cap - d.task.memory
        t += 1
        outcome = st.failed(run, 0, d.node, "exceeded its memory request", t, memory=True)
        assert st.nodes.free_memory[0] == cap
        if outcome != "retrying" or run.failures[0]:
            break
    first = math.ceil(40 * MiB * 1.05)
    assert requests == [first, 2 * first, 4 * first, cap]  # doubled, then capped
    assert run.failures[0] == 1 and run.detail[0] == TaskStatus.RETRYING  # the failure at the cap used a retry
    raised = [c for c in st.take_changes() if isinstance(c, RunNote)]
    assert [(c.detail["from"], c.detail["to"]) for c in raised] == [
        (first, 2 * first), (2 * first, 4 * first), (4 * first, cap)]
    assert all(c.type == "task.memory_raised" and c.task_id == "free" for c in raised)
    # Its last retry runs at the cap; failing again there ends it.
    st.promote_due_retries(t + 100)
    (_, d), = st.schedule(t + 100)
    assert d.task.memory == cap
    assert st.failed(run, 0, d.node, "exceeded", t + 101, memory=True) == "failed"
    assert run.wf_status == WorkflowStatus.FAILED


def test_a_shell_commands_request_is_raised_from_the_floor_it_was_enforced_at():
    st = _sized_state(sizer=_history())
    run = st.admit("r1", Workflow(name="w", tasks=[{"id": "sh", "entrypoint": "sort big.txt", "category": "work",
                                                    "input_bytes": 2_000_000}]), 0.0)
    (_, d), = st.schedule(0.0)
    assert d.task.memory == math.ceil(40 * MiB * 1.05)  # enforced as 256 MiB (MEMORY_FLOOR)
    assert st.failed(run, 0, d.node, "Command exited with code 2 (exceeded ...)", 1.0, memory=True) == "retrying"
    assert run.memory[0] == 512 * MiB and run.failures[0] == 0


@pytest.mark.parametrize("mode", ["sized", "declared"])
def test_a_resumed_run_counts_sizing_misses_apart_from_its_own_failures(tmp_path, mode):
    from orchestrator.runtime.recovery import Recovery
    from orchestrator.store import Store

    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        wf = Workflow(name="w", tasks=[{"id": "free", "retries": 1}, {"id": "fixed", "resources": {"memory": GiB}}])
        run_id = store.create_workflow(wf, "fifo")
        store.record_executions([ExecutionRecord(run_id, t, 1, "failed", exit_info="memory") for t in ("free", "fixed")])
        st = _sized_state(sizer=_history() if mode == "sized" else None)
        *_, failures = Recovery(store, st, None, None, None, None, flush=None, written=None).read_run(run_id)
    # With sized requests, the memory failure of a task that declares no memory was a sizing miss.
    assert failures == {"free": (0 if mode == "sized" else 1, 0), "fixed": (1, 0)}


# ---- the runtime on Ray ------------------------------------------------------------------------------------------
@pytest.fixture
def orch(ray_cluster, tmp_path):
    start, stop = actor_factory(tmp_path)
    yield start
    stop()


def _seed_history(store, family: str, category: str, rows: list[tuple[float, int]]) -> None:
    """An earlier, finished run of `family` in the store whose `category` tasks ran with (input bytes, peak)."""
    wf = Workflow(name="history", family=family,
                  tasks=[{"id": f"h{k}", "category": category, "input_bytes": int(x)} for k, (x, _) in enumerate(rows)])
    run_id = store.create_workflow(wf, "fifo")
    changes: list = [WorkflowChange(run_id, WorkflowStatus.RUNNING)]
    for t in wf.tasks:
        changes += [TaskChange(run_id, t.id, TaskStatus.READY), TaskChange(run_id, t.id, TaskStatus.RUNNING, attempt=1),
                    TaskChange(run_id, t.id, TaskStatus.SUCCEEDED)]
    changes.append(WorkflowChange(run_id, WorkflowStatus.SUCCEEDED))
    store.apply(changes, executions=[
        ExecutionRecord(run_id, t.id, 1, "succeeded", started_at=1000.0, finished_at=1001.0, duration=1.0,
                        peak_memory=int(peak)) for t, (_, peak) in zip(wf.tasks, rows)])


def _run(handle, spec: dict, timeout: float = 60) -> dict:
    run_id = ray.get(handle.submit.remote(workflow_from_dict(spec).model_dump()))
    return wait_for(handle, [run_id], poll=0.05, timeout=timeout)[run_id]


HISTORY = [(1e6, 300 * MiB), (1e7, 330 * MiB), (1e8, 420 * MiB)]
# Each task prints the address-space limit it runs under (KiB, or "unlimited"): the enforced memory limit.
ULIMIT = {"name": "probe", "family": "fam", "tasks": [
    {"id": "free", "entrypoint": "ulimit -v", "category": "probe", "input_bytes": 5_000_000},
    {"id": "fixed", "entrypoint": "ulimit -v", "category": "probe", "input_bytes": 5_000_000,
     "resources": {"memory": "512MiB"}},
    {"id": "unseen", "entrypoint": "ulimit -v", "category": "fresh"}]}


def _limits(store, run_id) -> dict[str, str]:
    return {t.task_id: store.load_result(t.result_ref) for t in store.get_tasks(run_id)}


def test_sized_mode_reserves_and_enforces_the_input_knn_request(orch):
    store = orch.store()
    _seed_history(store, "fam", "probe", HISTORY)
    h = orch(memory_requests="sized")
    final = _run(h, ULIMIT)
    assert final["status"] == "succeeded", final
    want = _expected([p for _, p in HISTORY], [x for x, _ in HISTORY], 5e6)
    assert want > 256 * MiB  # above the shell floor, so `ulimit -v` shows the request itself
    limits = _limits(store, final["run_id"])
    assert limits == {"free": str(want // 1024), "fixed": str(512 * 1024), "unseen": "unlimited"}
    # Reserved on the node: the decision's memory is the sized request (the declared one for "fixed").
    reserved = {d.task_id: d.input["memory"] for d in store.decisions(final["run_id"])}
    assert reserved == {"free": want, "fixed": 512 * MiB, "unseen": 0}
    events = store.events(final["run_id"])
    sized = [e for e in events if e.type == "task.memory_sized"]
    assert [(e.task_id, e.payload["memory"], e.payload["executions"]) for e in sized] == [("free", want, 3)]
    started = next(e.id for e in events if e.type == "task.started" and e.task_id == "free")
    assert sized[0].id < started  # known before dispatch


def test_declared_mode_changes_nothing(orch):
    store = orch.store()
    _seed_history(store, "fam", "probe", HISTORY)
    final = _run(orch(), ULIMIT)
    assert final["status"] == "succeeded", final
    assert _limits(store, final["run_id"]) == {"free": "unlimited", "fixed": str(512 * 1024), "unseen": "unlimited"}
    assert {d.task_id: d.input["memory"] for d in store.decisions(final["run_id"])} == {
        "free": 0, "fixed": 512 * MiB, "unseen": 0}
    assert not [e for e in store.events(final["run_id"]) if e.type.startswith("task.memory_")]


def test_a_sizing_miss_is_retried_at_double_without_using_retries(orch):
    store = orch.store()
    _seed_history(store, "fam", "alloc", [(1e6, 40 * MiB), (2e6, 40 * MiB)])
    h = orch(memory_requests="sized")
    final = _run(h, {"name": "grows", "family": "fam", "tasks": [
        {"id": "big", "entrypoint": f"{B}:allocate", "args": [64], "category": "alloc", "input_bytes": 1_500_000,
         "retries": 0}]})
    assert final["status"] == "succeeded", final
    first = _expected([40 * MiB] * 2, [1e6, 2e6], 1.5e6)
    execs = sorted(store.executions(final["run_id"]), key=lambda e: e.attempt)
    assert [(e.attempt, e.status, e.exit_info) for e in execs] == [(1, "failed", "memory"), (2, "succeeded", None)]
    assert f"exceeded its memory request of {first / MiB:.0f} MiB" in execs[0].error
    events = store.events(final["run_id"])
    raised = [e.payload for e in events if e.type == "task.memory_raised"]
    assert [(p["from"], p["to"], p["attempt"]) for p in raised] == [(first, 2 * first, 1)]
    assert [e.type for e in events if e.task_id == "big" and e.type.startswith("task.")] == [
        "task.ready", "task.memory_sized", "task.started", "task.retrying", "task.memory_raised", "task.ready",
        "task.started", "task.succeeded"]
    assert [d.input["memory"] for d in store.decisions(final["run_id"])] == [first, 2 * first]

"""The Monte Carlo kernel runs exactly the simulator's list scheduling: same makespan, same start and end of every
task, on real traces and on random DAGs (ties, zero durations, priorities, tasks that do not fit at first)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.model import Workflow
from orchestrator.optimization.durations import AnalysisInputError, TaskDurations, durations_for
from orchestrator.optimization.montecarlo import SUPPORTED_POLICIES, ListScheduler
from orchestrator.scheduling import get_policy
from orchestrator.sim import TraceLibrary
from orchestrator.sim.cluster import Cluster, GiB, NodeSpec
from orchestrator.sim.engine import simulate
from orchestrator.sim.workload import Job, Workload


def engine_run(entry, cluster, policy, actual, predicted):
    job = Job(0, entry.name, entry.family, 0.0, entry.dag, actual, predicted, entry.used_cpus, entry.used_memory)
    return simulate(Workload((job,)), cluster, get_policy(policy), record=True)


@pytest.mark.parametrize("policy", SUPPORTED_POLICIES)
def test_kernel_equals_engine_on_real_traces(policy, trace_library):
    entries = sorted(trace_library.entries, key=lambda e: e.dag.n)[:40:4]
    cluster = Cluster((NodeSpec("a", 4, 8 * GiB), NodeSpec("b", 2, 16 * GiB)))
    for entry in entries:
        td = durations_for(entry.workflow)
        ls = ListScheduler(entry.dag, cluster, td.mean, policy)
        draws = td.sample(3, seed=entry.dag.n)
        kernel = ls.makespans(draws)
        for s in range(3):
            res = engine_run(entry, cluster, policy, draws[s], td.mean)
            assert kernel[s] == pytest.approx(res.makespan, rel=1e-12, abs=1e-9), (entry.name, s)
        ms, start, end = ls.run(draws[0])
        res = engine_run(entry, cluster, policy, draws[0], td.mean)
        assert np.allclose(start, res.tasks.start, atol=1e-9)
        assert np.allclose(end, res.tasks.end, atol=1e-9)


@st.composite
def workflows(draw):
    n = draw(st.integers(1, 30))
    tasks = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=min(i, 3), unique=True)) if i else []
        tasks.append({"id": f"t{i}", "depends_on": [f"t{p}" for p in parents],
                      "duration": draw(st.sampled_from([0.0, 1.0, 2.5, draw(st.floats(0.0, 30.0))])),
                      "resources": {"cpus": draw(st.sampled_from([0, 0.5, 1, 2, 3])),
                                    "memory": draw(st.integers(0, 6)) * GiB},
                      "priority": draw(st.integers(-1, 1))})
    return Workflow(name="rand", tasks=tasks)


@settings(max_examples=120, deadline=None)
@given(workflows(), st.sampled_from(SUPPORTED_POLICIES), st.sampled_from([2, 64]))
def test_kernel_equals_engine_on_random_dags(wf, policy, scan_limit):
    entry = TraceLibrary.from_workflows([wf]).entries[0]
    cluster = Cluster((NodeSpec("a", 3, 8 * GiB), NodeSpec("b", 4, 6 * GiB)))
    predicted = entry.dag.duration * 1.3 + 0.5  # the policy ranks by predictions, tasks take their actual time
    ls = ListScheduler(entry.dag, cluster, predicted, policy, scan_limit=scan_limit)
    ms, start, end = ls.run(entry.dag.duration)
    pol = get_policy(policy)
    pol.scan_limit = scan_limit
    job = Job(0, "rand", "rand", 0.0, entry.dag, entry.dag.duration, predicted, entry.used_cpus, entry.used_memory)
    res = simulate(Workload((job,)), cluster, pol)
    assert ms == pytest.approx(res.makespan, abs=1e-9)
    assert np.allclose(start, res.tasks.start, atol=1e-9)
    assert np.allclose(end, res.tasks.end, atol=1e-9)


def test_gains_use_common_random_numbers_and_find_the_serial_bottleneck():
    # a -> (b1..b8 in parallel, short) -> c ; one long task d in parallel with everything: d is the bottleneck.
    tasks = [{"id": "a", "duration": 1.0}, {"id": "d", "duration": 50.0}]
    tasks += [{"id": f"b{i}", "duration": 2.0, "depends_on": ["a"]} for i in range(8)]
    tasks += [{"id": "c", "duration": 1.0, "depends_on": [f"b{i}" for i in range(8)]}]
    wf = Workflow(name="w", tasks=tasks)
    entry = TraceLibrary.from_workflows([wf]).entries[0]
    td = TaskDurations(entry.dag.duration, np.full(entry.dag.n, 0.3))
    ls = ListScheduler(entry.dag, Cluster.homogeneous(1, cpus=4), td.mean)
    draws = td.sample(500, seed=1)
    gains = ls.gains(draws)
    assert int(np.argmax(gains)) == entry.dag.index["d"]
    assert gains[entry.dag.index["d"]] == pytest.approx(0.3 * draws[:, entry.dag.index["d"]].mean(), rel=0.05)
    # common random numbers: the same draws give the same answer
    assert np.array_equal(gains, ls.gains(draws))
    trace = ls.trace(draws)
    assert trace.criticality[entry.dag.index["d"]] > 0.95
    assert trace.makespans.mean() == pytest.approx(ls.makespans(draws).mean())


def test_a_task_bigger_than_every_node_is_refused_by_name():
    wf = Workflow(name="w", tasks=[{"id": "huge", "duration": 1, "resources": {"cpus": 64}}])
    entry = TraceLibrary.from_workflows([wf]).entries[0]
    with pytest.raises(AnalysisInputError, match="huge.*64 cpus"):
        ListScheduler(entry.dag, Cluster.homogeneous(2, cpus=8), entry.dag.duration)


def test_unsupported_policy_is_refused():
    wf = Workflow(name="w", tasks=[{"id": "a", "duration": 1}])
    entry = TraceLibrary.from_workflows([wf]).entries[0]
    with pytest.raises(AnalysisInputError, match="tetris"):
        ListScheduler(entry.dag, Cluster.homogeneous(1), entry.dag.duration, "tetris")

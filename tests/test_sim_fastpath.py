"""The simulator's list-scheduling fast path (policies that keep the default `schedule`) gives exactly the results
of the general path (a `schedule` call per batch of events, then `apply`), whatever the workload."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dag import analyse
from orchestrator.model import Workflow
from orchestrator.scheduling import get_policy
from orchestrator.scheduling.heuristics import FifoPolicy, best_fit
from orchestrator.scheduling.interface import ReadyTask
from orchestrator.sim import Cluster, TraceLibrary, poisson_workload, simulate
from orchestrator.sim.cluster import GiB, NodeSpec
from orchestrator.sim.engine import JobState
from orchestrator.sim.workload import replay_workload

FAST = ["fifo", "job-fifo", "srpt-cp", "heft", "random"]


def general_path(policy):
    """The same policy with `schedule` overridden (by itself), which sends the engine down the general path."""

    class General(type(policy)):
        def schedule(self, state):
            return super().schedule(state)

    general = General.__new__(General)
    general.__dict__.update(policy.__dict__)
    return general


def assert_same(a, b):
    assert a.decisions == b.decisions
    assert np.array_equal(a.finish, b.finish)
    assert np.array_equal(a.tasks.job, b.tasks.job) and np.array_equal(a.tasks.task, b.tasks.task)
    assert np.array_equal(a.tasks.start, b.tasks.start)
    assert np.array_equal(a.tasks.end, b.tasks.end)
    assert np.array_equal(a.tasks.node, b.tasks.node)
    assert a.metrics()["makespan"] == b.metrics()["makespan"]


@pytest.mark.parametrize("policy", FAST)
def test_fast_path_equals_general_path_on_real_traces(policy, trace_library):
    lib = trace_library.subset(max_tasks=400)
    cluster = Cluster((NodeSpec("a", 8, 16 * GiB), NodeSpec("b", 4, 8 * GiB), NodeSpec("c", 16, 32 * GiB)))
    wl = poisson_workload(lib, cluster, load=1.2, num_jobs=10, seed=5)
    fast = simulate(wl, cluster, get_policy(policy), seed=5)
    general = simulate(wl, cluster, general_path(get_policy(policy)), seed=5)
    assert_same(fast, general)


class _Shallow(FifoPolicy):
    """Gives up after two tasks that fit nowhere, and places best-fit through an overridden `place`."""

    name = "shallow"
    scan_limit = 2

    def place(self, task, nodes, free_cpus, free_memory, free_gpus):
        return best_fit(task, free_cpus, free_memory, free_gpus, nodes)


@st.composite
def workloads(draw):
    n = draw(st.integers(1, 25))
    tasks = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=min(i, 3), unique=True)) if i else []
        tasks.append({"id": f"t{i}", "depends_on": [f"t{p}" for p in parents],
                      "duration": draw(st.sampled_from([0.0, 1.0, 2.5, draw(st.floats(0.0, 30.0))])),
                      "resources": {"cpus": draw(st.sampled_from([0, 0.5, 1, 2, 3, 4])),
                                    "memory": draw(st.integers(0, 6)) * GiB}})
    return Workflow(name="rand", tasks=tasks)


@settings(max_examples=80, deadline=None)
@given(workloads(), st.sampled_from(FAST + ["shallow"]), st.integers(0, 3), st.sampled_from([0.0, 1.0, 7.5]))
def test_fast_path_equals_general_path_on_random_workloads(wf, policy, seed, spacing):
    lib = TraceLibrary.from_workflows([wf])
    cluster = Cluster((NodeSpec("a", 3, 8 * GiB), NodeSpec("b", 4, 6 * GiB)))
    wl = replay_workload([lib.entries[0]] * 3, [0.0, spacing, 2 * spacing], seed=seed)
    make = _Shallow if policy == "shallow" else (lambda: get_policy(policy))
    fast = simulate(wl, cluster, make(), seed=seed)
    general = simulate(wl, cluster, general_path(make()), seed=seed)
    assert_same(fast, general)


class _Recording(FifoPolicy):
    name = "recording"

    def reset(self, seed=None):
        self.seen = []

    def task_key(self, task, job):
        self.seen.append(task)
        return super().task_key(task, job)


def test_ready_tasks_of_the_fast_path_are_complete(trace_library):
    """The fast path builds `ReadyTask`s without calling __init__: every field must still be set as __init__ does."""
    lib = trace_library.subset(max_tasks=100)
    cluster = Cluster.homogeneous(2, cpus=4)
    wl = poisson_workload(lib, cluster, load=0.8, num_jobs=3, seed=2)
    policy = _Recording()
    simulate(wl, cluster, policy, seed=2)
    assert len(policy.seen) == wl.num_tasks
    for t in policy.seen:
        built = ReadyTask(t.job, t.task, t.cpus, t.memory, t.gpus, t.predicted, t.ready_time, t.seq, t.priority)
        built.key = t.key
        assert {s: getattr(t, s) for s in ReadyTask.__slots__} == {s: getattr(built, s) for s in ReadyTask.__slots__}


def test_job_analysis_is_computed_on_first_use(trace_library):
    job = poisson_workload(trace_library.subset(max_tasks=100), Cluster.homogeneous(1), 0.5, 1, seed=0).jobs[0]
    js = JobState(job, record=False)
    expected = analyse(job.dag, job.predicted)
    assert np.array_equal(js.analysis.bottom_level, expected.bottom_level)
    assert js.analysis is js.analysis  # computed once


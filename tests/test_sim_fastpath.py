"""The simulator's list-scheduling fast path (policies that keep the default `schedule`) gives exactly the results
of the general path (a `schedule` call per batch of events, then `apply`), whatever the workload: both walk the
ready queue with `ReadyQueue.walk`, the fast path on the live resources."""

from __future__ import annotations

from dataclasses import replace

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
                                    "memory": draw(st.integers(0, 6)) * GiB,
                                    "custom": draw(st.sampled_from([{}, {}, {"worker": 1}]))},
                      "priority": draw(st.integers(-1, 1))})
    return Workflow(name="rand", tasks=tasks)


@settings(max_examples=80, deadline=None)
@given(workloads(), st.sampled_from(FAST + ["shallow"]), st.integers(0, 3), st.sampled_from([0.0, 1.0, 7.5]),
       st.lists(st.sampled_from([0, 0, 2]), min_size=3, max_size=3))
def test_fast_path_equals_general_path_on_random_workloads(wf, policy, seed, spacing, job_priorities):
    """Priorities (per task, and per job as an offset) and custom resources (node b alone offers `worker`)."""
    lib = TraceLibrary.from_workflows([wf])
    cluster = Cluster((NodeSpec("a", 3, 8 * GiB), NodeSpec("b", 4, 6 * GiB, custom={"worker": 1})))
    wl = replay_workload([lib.entries[0]] * 3, [0.0, spacing, 2 * spacing], seed=seed)
    wl = replace(wl, jobs=tuple(replace(j, priority=p) for j, p in zip(wl.jobs, job_priorities)))
    make = _Shallow if policy == "shallow" else (lambda: get_policy(policy))
    fast = simulate(wl, cluster, make(), seed=seed)
    general = simulate(wl, cluster, general_path(make()), seed=seed)
    assert_same(fast, general)
    assert np.array_equal(fast.tasks.status, general.tasks.status)
    assert np.array_equal(fast.tasks.attempts, general.tasks.attempts)


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
        built = ReadyTask(t.job, t.task, t.cpus, t.memory, t.gpus, t.predicted, t.ready_time, t.seq, t.priority,
                          t.allowed)
        built.key = t.key
        assert {s: getattr(t, s) for s in ReadyTask.__slots__} == {s: getattr(built, s) for s in ReadyTask.__slots__}


def test_job_analysis_is_computed_on_first_use(trace_library):
    job = poisson_workload(trace_library.subset(max_tasks=100), Cluster.homogeneous(1), 0.5, 1, seed=0).jobs[0]
    js = JobState(job, record=False)
    expected = analyse(job.dag, job.predicted)
    assert np.array_equal(js.analysis.bottom_level, expected.bottom_level)
    assert js.analysis is js.analysis  # computed once



def test_the_default_schedule_and_the_fast_path_walk_the_queue_the_same_way(trace_library):
    """`SchedulingPolicy.schedule` (tentative copies, queue left as it was) and `ReadyQueue.walk(take=True)` (live
    resources, started tasks removed) decide the same, round after round, on a live simulation."""
    from orchestrator.scheduling.interface import EPS
    from orchestrator.sim.engine import Simulation

    lib = trace_library.subset(max_tasks=200)
    cluster = Cluster((NodeSpec("a", 8, 16 * GiB), NodeSpec("b", 4, 8 * GiB)))
    for name in ("fifo", "srpt-cp", "heft"):
        sim = Simulation(poisson_workload(lib, cluster, 1.0, 4, seed=3), cluster, get_policy(name), seed=3)
        rounds = 0
        while sim.advance():
            before = len(sim.queue)
            planned = [(t.job, t.task, n) for t, n in sim.policy.schedule(sim)]
            assert len(sim.queue) == before  # the default schedule takes nothing out
            nodes = sim.nodes
            place = None if name != "heft" else sim.policy.place
            started, most = sim.queue.walk(nodes, nodes.free_cpus, nodes.free_memory, nodes.free_gpus,
                                           max(nodes.free_cpus), sim.policy.scan_limit, place, True)
            assert [(t.job, t.task, n) for t, n in started] == planned
            assert most == max(nodes.free_cpus) and len(sim.queue) == before - len(started)
            for t, n in started:  # hand them back, then let `apply` start them as usual
                nodes.release(n, t.cpus, t.memory, t.gpus)
                sim.queue.push(t, sim.jobs[t.job])
            sim.apply(sim.policy.schedule(sim))
            rounds += 1
        assert rounds > 10 and max(sim.nodes.free_cpus) > EPS

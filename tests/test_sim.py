"""Simulator invariants: capacity never exceeded, parents before children, makespan above its lower bound,
every task done once, identical results for a seed, and clear errors for impossible inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import PolicyError, SimulationError
from orchestrator.model import Workflow
from orchestrator.scheduling import HEURISTICS, Decision, get_policy
from orchestrator.scheduling.heuristics import FifoPolicy
from orchestrator.sim import Cluster, TraceLibrary, poisson_workload, simulate, single_workload
from orchestrator.sim.cluster import GiB, NodeSpec

POLICIES = list(HEURISTICS) + ["random"]


def check_invariants(result, workload, cluster):
    rec = result.tasks
    jobs = {j.id: j for j in workload.jobs}
    # Every task of every job ran exactly once, for its actual duration.
    assert len(rec.job) == workload.num_tasks
    for jid, job in jobs.items():
        mine = rec.job == jid
        assert sorted(rec.task[mine].tolist()) == list(range(job.dag.n))
        order = np.argsort(rec.task[mine])
        start, end = rec.start[mine][order], rec.end[mine][order]
        assert np.allclose(end - start, job.actual)
        assert np.all(start >= job.arrival - 1e-9)
        # No task starts before its parents finish.
        assert np.all(start[job.dag.dst] >= end[job.dag.src] - 1e-9)
    # Capacity is never exceeded on any node, in any resource.
    cpus = np.concatenate([jobs[j].dag.cpus[t:t + 1] for j, t in zip(rec.job, rec.task)])
    mem = np.concatenate([jobs[j].dag.memory[t:t + 1] for j, t in zip(rec.job, rec.task)])
    for n, node in enumerate(cluster.nodes):
        on = rec.node == n
        times = np.concatenate([rec.start[on], rec.end[on]])
        dc = np.concatenate([cpus[on], -cpus[on]])
        dm = np.concatenate([mem[on], -mem[on]])
        order = np.lexsort((dc, times))  # releases before reservations at the same instant
        assert np.cumsum(dc[order]).max(initial=0) <= node.cpus + 1e-6
        assert np.cumsum(dm[order]).max(initial=0) <= node.memory + 1e-6
    m = result.metrics()
    assert m["makespan"] >= m["makespan_lb"] - 1e-6
    assert np.all(result.jct >= result.isolated_lb - 1e-6)


@pytest.mark.parametrize("policy", POLICIES)
def test_online_mix_on_real_traces(policy, trace_library):
    lib = trace_library.subset(max_tasks=300)
    cluster = Cluster.homogeneous(3, cpus=8, memory_gib=16)
    wl = poisson_workload(lib, cluster, load=0.9, num_jobs=8, seed=3)
    result = simulate(wl, cluster, get_policy(policy), seed=3)
    check_invariants(result, wl, cluster)


@pytest.mark.parametrize("policy", POLICIES)
def test_single_dag_makespan_at_least_critical_path(policy, trace_library):
    entry = trace_library.subset(families=["montage"]).entries[0]
    for nodes in (1, 4):
        cluster = Cluster.homogeneous(nodes, cpus=4, memory_gib=16)
        wl = single_workload(entry, seed=1)
        result = simulate(wl, cluster, get_policy(policy), seed=1)
        check_invariants(result, wl, cluster)
        assert result.makespan >= entry.analysis.critical_path_length - 1e-6
        assert result.makespan >= entry.cpu_work / cluster.total_cpus - 1e-6


@st.composite
def workloads(draw):
    n = draw(st.integers(1, 30))
    tasks = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=min(i, 3), unique=True)) if i else []
        tasks.append({"id": f"t{i}", "depends_on": [f"t{p}" for p in parents],
                      "duration": draw(st.floats(0.0, 50.0)),
                      "resources": {"cpus": draw(st.sampled_from([0.5, 1, 2, 3])),
                                    "memory": draw(st.integers(0, 6)) * GiB}})
    return Workflow(name="rand", tasks=tasks)


@settings(max_examples=60, deadline=None)
@given(workloads(), st.sampled_from(POLICIES), st.integers(0, 3), st.floats(0.0, 100.0))
def test_random_workloads_keep_invariants(wf, policy, seed, spacing):
    lib = TraceLibrary.from_workflows([wf])
    cluster = Cluster((NodeSpec("a", 3, 8 * GiB), NodeSpec("b", 4, 6 * GiB)))
    from orchestrator.sim.workload import replay_workload

    wl = replay_workload([lib.entries[0]] * 3, [0.0, spacing, 2 * spacing], seed=seed)
    result = simulate(wl, cluster, get_policy(policy), seed=seed)
    check_invariants(result, wl, cluster)


@pytest.mark.parametrize("policy", POLICIES)
def test_same_seed_same_result(policy, trace_library):
    lib = trace_library.subset(max_tasks=200)
    cluster = Cluster.homogeneous(2, cpus=8, memory_gib=16)
    a = simulate(poisson_workload(lib, cluster, 0.8, 6, seed=11), cluster, get_policy(policy), seed=11)
    b = simulate(poisson_workload(lib, cluster, 0.8, 6, seed=11), cluster, get_policy(policy), seed=11)
    assert np.array_equal(a.finish, b.finish)
    assert np.array_equal(a.tasks.node, b.tasks.node) and np.array_equal(a.tasks.start, b.tasks.start)
    c = simulate(poisson_workload(lib, cluster, 0.8, 6, seed=12), cluster, get_policy(policy), seed=12)
    assert not np.array_equal(a.finish, c.finish)


def test_task_too_large_for_every_node_is_rejected():
    wf = Workflow(name="big", tasks=[{"id": "huge", "duration": 1, "resources": {"cpus": 64}}])
    lib = TraceLibrary.from_workflows([wf])
    with pytest.raises(SimulationError, match="Task 'huge' of job 'big' requests cpus=64"):
        simulate(single_workload(lib.entries[0]), Cluster.homogeneous(2, cpus=8), get_policy("fifo"))


class _Overbooking(FifoPolicy):
    name = "overbook"

    def schedule(self, state):
        return [Decision(t, 0) for t in state.ready()]


class _Idle(FifoPolicy):
    name = "idle"

    def schedule(self, state):
        return []


def test_policy_errors_are_caught_and_named():
    wf = Workflow(name="w", tasks=[{"id": f"t{i}", "duration": 1, "resources": {"cpus": 4}} for i in range(3)])
    wl = single_workload(TraceLibrary.from_workflows([wf]).entries[0])
    cluster = Cluster.homogeneous(2, cpus=4)
    with pytest.raises(PolicyError, match="placed .* on node node-0, which has only 0 cpus"):
        simulate(wl, cluster, _Overbooking())
    with pytest.raises(PolicyError, match="'idle' left 3 ready tasks waiting on an idle cluster"):
        simulate(wl, cluster, _Idle())
    with pytest.raises(PolicyError, match="Unknown scheduling policy 'nope'"):
        get_policy("nope")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=8))
def test_srpt_is_shortest_first_on_one_core_and_fifo_keeps_arrival_order(durations):
    """Single-task jobs arriving together on one core, told their exact durations: srpt-cp runs them shortest
    first, so their completion times are the prefix sums of the sorted durations (the schedule that minimises
    mean completion time on one machine); fifo completes them in arrival order. So srpt-cp's mean JCT is at most
    fifo's, and strictly less whenever the arrival order is not already shortest first."""
    from orchestrator.sim import TraceEntry, replay_workload

    entries = [TraceEntry.from_workflow(Workflow(name=f"j{k}", tasks=[{"id": "t", "duration": float(d)}]))
               for k, d in enumerate(durations)]
    wl = replay_workload(entries, [0.0] * len(durations), noise=0.0)
    cluster = Cluster.homogeneous(1, cpus=1, memory_gib=1)
    srpt = simulate(wl, cluster, get_policy("srpt-cp"), seed=0)
    fifo = simulate(wl, cluster, get_policy("fifo"), seed=0)
    shortest_first = np.cumsum(sorted(durations))
    assert sorted(srpt.jct.tolist()) == shortest_first.tolist()
    assert fifo.jct.tolist() == np.cumsum(durations).tolist()
    srpt_mean, fifo_mean = srpt.metrics()["avg_jct"], fifo.metrics()["avg_jct"]
    if durations == sorted(durations):
        assert srpt_mean == fifo_mean
    else:
        assert srpt_mean < fifo_mean


def _step_by_step(wl, cluster, policy, decide):
    """Drive a Simulation one decision at a time, as a learning environment does."""
    from orchestrator.sim.engine import Simulation
    from orchestrator.sim.metrics import compute_result

    sim = Simulation(wl, cluster, policy, seed=0)
    steps = 0
    while sim.advance():
        steps += 1
        assert steps < 100_000, "advance() kept returning at one moment"
        sim.apply(decide(sim))
    return compute_result(sim, 0.0)


def test_step_by_step_equals_run_and_a_passing_step_waits_for_the_next_event(trace_library):
    entry = min((e for e in trace_library.entries if e.dag.n >= 30), key=lambda e: e.dag.n)
    wl = single_workload(entry, seed=3)
    cluster = Cluster.homogeneous(2, cpus=4, memory_gib=64)
    whole = simulate(wl, cluster, get_policy("fifo"), seed=0)
    one_each = _step_by_step(wl, cluster, get_policy("fifo"), lambda sim: sim.policy.schedule(sim)[:1])
    assert np.array_equal(whole.tasks.start, one_each.tasks.start)
    assert np.array_equal(whole.tasks.node, one_each.tasks.node)
    # A step that decides nothing while tasks run waits for the next event; the tasks still all run, later.
    calls = {"n": 0}

    def every_other(sim):
        calls["n"] += 1
        return [] if calls["n"] % 2 and sim.num_running else sim.policy.schedule(sim)[:1]

    lazy = _step_by_step(wl, cluster, get_policy("fifo"), every_other)
    check_invariants(lazy, wl, cluster)
    assert lazy.metrics()["makespan"] >= whole.metrics()["makespan"] - 1e-9
    # A policy that never decides ends with a clear error, not a loop.
    with pytest.raises(PolicyError, match="left .* ready tasks waiting on an idle cluster"):
        _step_by_step(wl, cluster, get_policy("fifo"), lambda sim: [])


def test_the_simulator_and_policies_never_import_ray_or_torch(trace_dir):
    """The simulator is a pure function: running it (and every heuristic) loads neither Ray nor torch."""
    import subprocess
    import sys

    code = f"""
import sys
from orchestrator.sim import TraceLibrary, Cluster, poisson_workload, simulate
from orchestrator.scheduling import HEURISTICS, get_policy
lib = TraceLibrary.from_dir({str(trace_dir)!r}).subset(max_tasks=200)
cluster = Cluster.homogeneous(2, cpus=8, memory_gib=16)
for name in HEURISTICS:
    simulate(poisson_workload(lib, cluster, 0.8, 4, seed=1), cluster, get_policy(name), seed=1)
print(sorted(m for m in ("ray", "torch", "torch_geometric") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"

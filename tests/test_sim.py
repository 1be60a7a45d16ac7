"""Simulator invariants: capacity never exceeded, parents before children, makespan above its lower bound,
every task done once, identical results for a seed, and clear errors for impossible inputs."""

from __future__ import annotations

from dataclasses import replace

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


# ---- one semantics with the runtime: task priorities, custom resources, failures and retries, dispatch ahead ----

def test_dag_arrays_carry_priorities_retries_and_custom_requests():
    from orchestrator.dag import dag_arrays

    wf = Workflow(name="w", tasks=[{"id": "a", "priority": 3, "retries": 2, "retry_delay": 0.5},
                                   {"id": "b", "depends_on": ["a"], "resources": {"custom": {"worker": 1}}}])
    dag = dag_arrays(wf)
    assert dag.priority.tolist() == [3, 0] and dag.retries.tolist() == [2, 0]
    assert dag.retry_delay[0] == 0.5 and np.isnan(dag.retry_delay[1])
    assert dag.custom == ({}, {"worker": 1.0})
    assert dag_arrays(Workflow(name="v", tasks=[{"id": "a"}])).custom is None
    assert dag.descendants(0) == [1] and dag.descendants(1) == []


def _one_cpu_order(wf, jobs=1, priorities=None):
    from orchestrator.sim.workload import replay_workload

    wl = replay_workload([TraceLibrary.from_workflows([wf]).entries[0]] * jobs, [0.0] * jobs, noise=0.0)
    if priorities:
        wl = type(wl)(tuple(replace(j, priority=p) for j, p in zip(wl.jobs, priorities)))
    result = simulate(wl, Cluster.homogeneous(1, cpus=1), get_policy("fifo"))
    order = np.lexsort((result.tasks.task, result.tasks.job, result.tasks.start))
    return [(int(result.tasks.job[k]), wf.tasks[int(result.tasks.task[k])].id) for k in order]


def test_tasks_run_by_their_own_priority_and_a_jobs_priority_raises_all_of_its_tasks():
    wf = Workflow(name="w", tasks=[{"id": "low", "duration": 1}, {"id": "high", "duration": 1, "priority": 5},
                                   {"id": "mid", "duration": 1, "priority": 2}])
    assert _one_cpu_order(wf) == [(0, "high"), (0, "mid"), (0, "low")]
    # Job 1's priority is an offset of 4 on each of its tasks' (9, 6, 4 against job 0's 5, 2, 0).
    order = _one_cpu_order(wf, jobs=2, priorities=[0, 4])
    assert order == [(1, "high"), (1, "mid"), (0, "high"), (1, "low"), (0, "mid"), (0, "low")]


def test_custom_resources_keep_tasks_on_the_nodes_that_offer_them():
    tasks = [{"id": f"w{i}", "duration": 1, "resources": {"custom": {"worker": 1}}} for i in range(6)]
    tasks += [{"id": f"o{i}", "duration": 1} for i in range(6)]
    wl = single_workload(TraceLibrary.from_workflows([Workflow(name="w", tasks=tasks)]).entries[0], noise=0.0)
    cluster = Cluster((NodeSpec("plain", 4, 8 * GiB), NodeSpec("worker", 1, 8 * GiB, custom={"worker": 2})))
    for policy in POLICIES:
        rec = simulate(wl, cluster, get_policy(policy)).tasks
        assert set(rec.node[rec.task < 6].tolist()) == {1}, policy  # only the node offering `worker`
        check_invariants(simulate(wl, cluster, get_policy(policy)), wl, cluster)
    with pytest.raises(SimulationError, match=r"custom resources \{'worker': 1.0\}: no node of the cluster offers"):
        simulate(wl, Cluster.homogeneous(2, cpus=4), get_policy("fifo"))


def test_illegal_status_moves_are_refused_by_the_transition_table():
    from orchestrator.errors import InvalidTransitionError
    from orchestrator.sim.engine import Simulation
    from orchestrator.states import (
        NUM_TASK_STATUSES,
        SUCCEEDED_CODE,
        TASK_CODE,
        TASK_MOVES,
        TASK_TRANSITIONS,
    )

    legal = {(TASK_CODE[a], TASK_CODE[b]) for a, b in TASK_TRANSITIONS}
    assert {(k // NUM_TASK_STATUSES, k % NUM_TASK_STATUSES) for k, ok in enumerate(TASK_MOVES) if ok} == legal
    wf = Workflow(name="w", tasks=[{"id": "a", "duration": 1}, {"id": "b", "depends_on": ["a"], "duration": 1}])
    sim = Simulation(single_workload(TraceLibrary.from_workflows([wf]).entries[0]), Cluster.homogeneous(1),
                     get_policy("fifo"))
    assert sim.advance()
    with pytest.raises(InvalidTransitionError, match="from 'pending' to 'succeeded'"):
        sim._move(sim.jobs[0], 1, SUCCEEDED_CODE)


def _attempts(events):
    """Every attempt (job, task, node, start, end, outcome) from a simulation's event log."""
    started, out = {}, []
    for e in events:
        if e[0] == "decide" and not e[3]:
            for job, task, node in e[2]:
                started[(job, task)] = (node, e[1])
        elif e[0] == "promote":
            started[(e[2], e[3])] = (e[4], e[1])
        elif e[0] == "end":
            node, start = started.pop((e[2], e[3]))
            assert node == e[4]
            out.append((e[2], e[3], node, start, e[1], e[5]))
    assert not started
    return out


def check_attempt_invariants(events, result, workload, cluster):
    """With failures and dispatch ahead: capacity holds over every attempt, a task starts after its parents
    succeeded, a failed attempt is retried no sooner than its backoff, and the bounds still hold."""
    attempts = _attempts(events)
    jobs = {j.id: j for j in workload.jobs}
    for n, node in enumerate(cluster.nodes):
        edges = []
        for job, task, on, start, end, _ in attempts:
            if on == n:
                need = jobs[job].dag.cpus[task], jobs[job].dag.memory[task]
                edges += [(start, 1, need), (end, -1, need)]
        cpus = mem = 0.0
        for _, sign, (c, m) in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before starts at one instant
            cpus, mem = cpus + sign * c, mem + sign * m
            assert cpus <= node.cpus + 1e-6 and mem <= node.memory + 1e-6
    succeeded = {(job, task): end for job, task, _, _, end, outcome in attempts if outcome == "succeeded"}
    first_start = {}
    for job, task, _, start, _, _ in attempts:
        first_start.setdefault((job, task), start)
    for (job, task), start in first_start.items():
        dag = jobs[job].dag
        for p in dag.parents_of(task).tolist():
            assert start >= succeeded[(job, p)] - 1e-9
    m = result.metrics()
    assert m["makespan"] >= m["makespan_lb"] - 1e-6
    assert np.all(result.jct >= result.isolated_lb - 1e-6)
    return attempts


def test_failures_are_retried_with_the_runtimes_backoff_then_fail_the_job_and_skip_descendants():
    from orchestrator.scheduling.retry import RetryPolicy
    from orchestrator.sim.engine import Simulation
    from orchestrator.sim.workload import FailureModel
    from orchestrator.states import FAILED_CODE, SKIPPED_CODE, SUCCEEDED_CODE

    wf = Workflow(name="w", tasks=[{"id": "a", "duration": 2, "retries": 2, "retry_delay": 1.0},
                                   {"id": "b", "depends_on": ["a"], "duration": 1},
                                   {"id": "c", "duration": 3}])
    entry = TraceLibrary.from_workflows([wf]).entries[0]
    retry = RetryPolicy()
    # `a` fails twice (each attempt holding its cpu for half its duration), then succeeds.
    wl = single_workload(entry, noise=0.0, failures=FailureModel(by_task={"a": 0.999999}, fraction=(0.5, 0.5)))
    wl = type(wl)((replace(wl.jobs[0], failed_attempts=np.array([2, 0, 0])),))
    events = []
    sim = Simulation(wl, Cluster.homogeneous(1, cpus=4), get_policy("fifo"), seed=7, events=events)
    result = sim.run()
    runs = [a for a in _attempts(events) if a[1] == 0]
    assert [a[5] for a in runs] == ["retrying", "retrying", "succeeded"]
    d1, d2 = (retry.delay(k, 1.0, seed=7, job=0, task=0) for k in (1, 2))
    assert [(a[3], a[4]) for a in runs] == [(0.0, 1.0), (1.0 + d1, 2.0 + d1), (2.0 + d1 + d2, 4.0 + d1 + d2)]
    assert result.tasks.attempts.tolist() == [3, 1, 1] and result.failed_jobs == 0
    assert result.jct[0] == 5.0 + d1 + d2 and result.isolated_lb[0] == pytest.approx(result.jct[0])
    # With one retry, `a` is out of retries after its second failure: `b` is skipped, the job failed.
    wl = type(wl)((replace(wl.jobs[0], failed_attempts=np.array([3, 0, 0])),))
    result = simulate(wl, Cluster.homogeneous(1, cpus=4), get_policy("fifo"), seed=7)
    assert result.tasks.status.tolist() == [FAILED_CODE, SKIPPED_CODE, SUCCEEDED_CODE]
    assert result.failed_jobs == 1 and not result.succeeded[0] and result.metrics()["failed_jobs"] == 1
    assert result.jct[0] == 3.0 + d1 + d2  # up to its end: the third failure of `a`
    assert np.isnan(result.tasks.start[1]) and result.tasks.node[1] == -1


@settings(max_examples=40, deadline=None)
@given(workloads(), st.sampled_from(POLICIES), st.integers(0, 3), st.floats(0.0, 100.0),
       st.sampled_from([0.0, 0.3, 0.7]), st.sampled_from([0.0, 1.0, 2.0]))
def test_random_workloads_with_failures_and_dispatch_ahead_keep_invariants(wf, policy, seed, spacing, p, ahead):
    from orchestrator.sim.engine import Simulation
    from orchestrator.sim.workload import FailureModel, replay_workload

    wf = wf.model_copy(update={"tasks": [t.model_copy(update={"retries": k % 3}) for k, t in enumerate(wf.tasks)]})
    lib = TraceLibrary.from_workflows([wf])
    cluster = Cluster((NodeSpec("a", 3, 8 * GiB), NodeSpec("b", 4, 6 * GiB)))
    wl = replay_workload([lib.entries[0]] * 3, [0.0, spacing, 2 * spacing], seed=seed,
                         failures=FailureModel(probability=p, fraction=(0.1, 1.0)))
    events = []
    result = Simulation(wl, cluster, get_policy(policy), seed=seed, events=events, dispatch_ahead=ahead,
                        dispatch_ahead_max_s=5.0).run()
    attempts = check_attempt_invariants(events, result, wl, cluster)
    ahead_started = {(j, t) for e in events if e[0] == "decide" and e[3] for j, t, _ in e[2]}
    for job, task in ahead_started:
        assert wl.jobs[job].predicted[task] <= 5.0
    assert len(attempts) == result.decisions
    again = Simulation(wl, cluster, get_policy(policy), seed=seed, dispatch_ahead=ahead,
                       dispatch_ahead_max_s=5.0).run()
    assert np.array_equal(again.finish, result.finish) and np.array_equal(again.tasks.node, result.tasks.node)


def test_failures_leave_the_rest_of_the_workload_unchanged_and_are_seeded(trace_library):
    from orchestrator.sim.workload import FailureModel

    lib = trace_library.subset(max_tasks=120)
    cluster = Cluster.homogeneous(2, cpus=8, memory_gib=16)
    plain = poisson_workload(lib, cluster, 0.8, 5, seed=4)
    failing = poisson_workload(lib, cluster, 0.8, 5, seed=4, failures=FailureModel(probability=0.05))
    for a, b in zip(plain.jobs, failing.jobs):
        assert a.arrival == b.arrival and np.array_equal(a.predicted, b.predicted)
    again = poisson_workload(lib, cluster, 0.8, 5, seed=4, failures=FailureModel(probability=0.05))
    drawn = [j.failed_attempts for j in failing.jobs if j.failed_attempts is not None]
    assert drawn and all(np.array_equal(x.failed_attempts, y.failed_attempts)
                         for x, y in zip(failing.jobs, again.jobs) if x.failed_attempts is not None)
    result = simulate(failing, cluster, get_policy("srpt-cp"), seed=4)
    assert result.failed_jobs > 0 and len(result.jct) == len(failing.jobs)


def test_step_by_step_simulation_refuses_dispatch_ahead():
    from orchestrator.sim.engine import Simulation

    wl = single_workload(TraceLibrary.from_workflows([Workflow(name="w", tasks=[{"id": "a"}])]).entries[0])
    sim = Simulation(wl, Cluster.homogeneous(1), get_policy("fifo"), dispatch_ahead=2.0)
    with pytest.raises(SimulationError, match="does not model dispatch ahead"):
        sim.advance()

"""Both engines mean the same by every state: for every registered policy, the simulator and the runtime's state
machine (driven without Ray by the simulator's events) take the same decisions, round by round, on random DAGs
(priorities, gpus, custom resources on some nodes and tasks, failures, retries) and on real traces, in the
runtime's default configuration (dispatch ahead on) and without dispatch ahead."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.model import Workflow
from orchestrator.scheduling import available_policies
from orchestrator.scheduling.heuristics import FifoPolicy
from orchestrator.sim import Cluster, TraceLibrary, poisson_workload, replay_workload
from orchestrator.sim.cluster import GiB, NodeSpec
from orchestrator.sim.conformance import ConformanceError, check_conformance, runtime_defaults
from orchestrator.sim.workload import FailureModel

POLICIES = available_policies()  # every registered policy, plugins included
CONFIGS = {"runtime-default": {}, "no-ahead": {"dispatch_ahead": 0.0}}
CUSTOM = [{}, {}, {"worker": 1.0}, {"ssd": 2.0}, {"worker": 1.0, "ssd": 1.0}]


@st.composite
def clusters(draw) -> Cluster:
    nodes = []
    for k in range(draw(st.integers(1, 3))):
        nodes.append(NodeSpec(f"n{k}", draw(st.sampled_from([1.0, 2.0, 4.0])), draw(st.sampled_from([4, 8])) * GiB,
                              draw(st.sampled_from([0.0, 0.0, 1.0])), custom=draw(st.sampled_from(CUSTOM))))
    return Cluster(tuple(nodes))


@st.composite
def workflows(draw, cluster: Cluster, name: str) -> Workflow:
    """A random DAG of 1-40 tasks, each fitting some node of the cluster (custom resources included)."""
    tasks = []
    for i in range(draw(st.integers(1, 40))):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=min(i, 3), unique=True)) if i else []
        node = draw(st.sampled_from(cluster.nodes))
        custom = {}
        if node.custom and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node.custom)))
            custom = {key: node.custom[key]}
        tasks.append({
            "id": f"t{i}", "depends_on": [f"t{p}" for p in parents],
            "duration": draw(st.sampled_from([0.0, 0.1, 0.2, 1.0, 2.5, draw(st.floats(0.0, 20.0))])),
            "resources": {"cpus": min(draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0])), node.cpus),
                          "memory": draw(st.integers(0, int(node.memory // GiB))) * GiB,
                          "gpus": draw(st.sampled_from([0.0, node.gpus])), "custom": custom},
            "priority": draw(st.integers(-2, 2)),
            "retries": draw(st.integers(0, 2)),
            "retry_delay": draw(st.sampled_from([None, 0.0, 0.5, 2.0])),
        })
    return Workflow(name=name, tasks=tasks)


@st.composite
def scenarios(draw):
    cluster = draw(clusters())
    wfs = [draw(workflows(cluster, f"w{k}")) for k in range(draw(st.integers(1, 2)))]
    lib = TraceLibrary.from_workflows(wfs)
    picks = draw(st.lists(st.sampled_from(lib.entries), min_size=1, max_size=4))
    arrivals = sorted(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0]), min_size=len(picks),
                                    max_size=len(picks))))
    failure_p = {t.id: draw(st.sampled_from([0.0, 0.0, 0.3, 0.6, 1.0])) for wf in wfs for t in wf.tasks}
    failures = draw(st.sampled_from([None, FailureModel(by_task=failure_p, fraction=(0.2, 1.0)),
                                     FailureModel(probability=0.25)]))
    seed = draw(st.integers(0, 3))
    workload = replay_workload(picks, arrivals, seed=seed, noise=draw(st.sampled_from([0.0, 0.3])), failures=failures)
    offsets = [draw(st.sampled_from([0, 0, 1])) for _ in workload.jobs]  # the Job's priority, added to its tasks'
    workload = replace(workload, jobs=tuple(replace(j, priority=p) for j, p in zip(workload.jobs, offsets)))
    return workload, cluster, seed


EXAMPLES = int(os.environ.get("CONFORMANCE_EXAMPLES", "50"))  # per policy and configuration


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_engines_agree_on_random_dags(policy, config, scenario):
    workload, cluster, seed = scenario
    check_conformance(policy, workload, cluster, seed, **CONFIGS[config])


@pytest.fixture(scope="module")
def small_traces(trace_dir):
    """The smallest bundled traces, with two retries per task, and one task category needing a custom resource."""
    lib = TraceLibrary.from_dir(trace_dir, max_tasks=70)
    workflows = []
    for k, e in enumerate(lib.entries):
        wf = e.workflow
        special = wf.tasks[-1].category if k % 2 else None
        tasks = [t.model_copy(update={
            "retries": 2, "retry_delay": 0.05 if k % 3 else None,
            "resources": t.resources.model_copy(update={"custom": {"worker": 1.0}}) if t.category == special
            else t.resources}) for t in wf.tasks]
        workflows.append(wf.model_copy(update={"tasks": tasks}))
    return TraceLibrary.from_workflows(workflows)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("policy", POLICIES)
def test_engines_agree_on_real_traces(policy, config, small_traces):
    cluster = Cluster((NodeSpec("a", 4, 16 * GiB, custom={"worker": 1.0}), NodeSpec("b", 4, 16 * GiB),
                       NodeSpec("c", 2, 8 * GiB)))
    for seed, failures in ((1, None), (2, FailureModel(probability=0.08, fraction=(0.1, 1.0)))):
        workload = poisson_workload(small_traces, cluster, load=0.9, num_jobs=6, seed=seed, failures=failures)
        report = check_conformance(policy, workload, cluster, seed, **CONFIGS[config])
        assert report.decisions >= report.tasks - report.failed_jobs * 70
        if failures is not None:
            assert report.failed_attempts > 0


def test_the_default_configuration_is_the_runtimes_and_exercises_dispatch_ahead_and_retries(small_traces):
    defaults = runtime_defaults()
    assert defaults["dispatch_ahead"] > 0 and defaults["dispatch_ahead_max_s"] > 0
    cluster = Cluster((NodeSpec("a", 4, 16 * GiB, custom={"worker": 1.0}), NodeSpec("b", 4, 16 * GiB)))
    workload = poisson_workload(small_traces, cluster, load=1.0, num_jobs=6, seed=3,
                                failures=FailureModel(probability=0.1))
    report = check_conformance("fifo", workload, cluster, seed=3)
    assert report.ahead_decisions > 0 and report.promotions == report.ahead_decisions
    assert report.retries > 0 and report.failed_attempts >= report.retries


class _EngineSensitive(FifoPolicy):
    """Decides differently in the simulator: the suite must catch it."""

    name = "engine-sensitive"

    def schedule(self, state):
        decisions = super().schedule(state)
        return decisions[:1] if type(state).__name__ == "Simulation" else decisions


def test_a_difference_between_the_engines_is_reported(monkeypatch, small_traces):
    from orchestrator import scheduling

    monkeypatch.setitem(scheduling._REGISTRY, "engine-sensitive", _EngineSensitive)
    cluster = Cluster((NodeSpec("a", 4, 16 * GiB, custom={"worker": 1.0}), NodeSpec("b", 4, 16 * GiB)))
    workload = poisson_workload(small_traces, cluster, load=0.9, num_jobs=3, seed=1)
    with pytest.raises(ConformanceError, match=r"decisions \(job, task, node\) in order"):
        check_conformance("engine-sensitive", workload, cluster, seed=1)

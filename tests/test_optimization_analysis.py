"""The analysis and the recommendations on small workflows whose answer is known: the bottleneck, its reason, the
plan, live analysis, bad input; recommendations are measured, applied, valid, faster, and never worse."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.model import Workflow
from orchestrator.optimization import analysis
from orchestrator.optimization.analysis import analyze, build_problem, live_run
from orchestrator.optimization.durations import AnalysisInputError, TaskDurations
from orchestrator.optimization.recommend import best_single_change, recommend, verify
from orchestrator.sim.cluster import GiB, Cluster

FIXED = {"budget": None, "samples": 300}  # fixed sample counts: deterministic for a seed


def wf(tasks, name="w", **kw) -> Workflow:
    return Workflow(name=name, tasks=tasks, **kw)


def long_beside_fan_out(width=20) -> Workflow:
    """One 100 s task beside `width` 10 s tasks, all joined by a 1 s task."""
    tasks = [{"id": "long", "duration": 100.0}] + [{"id": f"w{i}", "duration": 10.0} for i in range(width)]
    tasks.append({"id": "join", "duration": 1.0, "depends_on": ["long"] + [f"w{i}" for i in range(width)]})
    return wf(tasks, "long-beside-fan-out")


def chain_of_tiny(policy="fifo") -> Workflow:
    """A chain of 20 one-second tasks beside 30 ten-second fillers: each chain task waits for a free cpu."""
    tasks = [{"id": "c0", "duration": 1.0}] + [{"id": f"c{i}", "duration": 1.0, "depends_on": [f"c{i - 1}"]}
                                               for i in range(1, 20)]
    tasks += [{"id": f"f{i}", "duration": 10.0} for i in range(30)]
    return wf(tasks, "chain", policy=policy)


SMALL = Cluster.homogeneous(2, cpus=4, memory_gib=16)


def test_the_long_task_beside_a_wide_fan_out_is_the_bottleneck():
    r = analyze(long_beside_fan_out(), SMALL, **FIXED)
    top = r.task_bottlenecks[0]
    assert top.name == "long" and top.measured and top.gain > 2 * top.stderr
    assert any("on the critical path in" in x for x in top.reasons)
    others = [g for t, g in zip(r.task_ids, r.task_gain) if t not in ("long", "join")]
    assert top.gain > 10 * max(others)
    assert r.category_bottlenecks[0].name == "long"
    # 30% faster on a 100 s task that sets the makespan: close to 30 s
    assert 20 < top.gain < 32
    assert r.makespan.p50 <= r.makespan.p90
    assert r.makespan.mean >= r.makespan.unlimited_mean - 1e-6 >= r.makespan.critical_path - 1e-6


def test_a_heavy_join_is_named_a_fan_in():
    tasks = [{"id": f"p{i}", "duration": 5.0} for i in range(12)]
    tasks.append({"id": "merge", "duration": 60.0, "depends_on": [f"p{i}" for i in range(12)]})
    r = analyze(wf(tasks), SMALL, **FIXED)
    merge = next(b for b in r.task_bottlenecks if b.name == "merge")
    assert any("fan-in of 12 parents" in x for x in merge.reasons)
    assert r.task_bottlenecks[0].name == "merge"


def test_memory_saturation_is_named_in_the_waits():
    tasks = [{"id": f"m{i}", "duration": 10.0, "resources": {"cpus": 1, "memory": 12 * GiB}} for i in range(8)]
    r = analyze(wf(tasks), Cluster.homogeneous(2, cpus=8, memory_gib=16), **FIXED)
    assert "runs out of memory" in r.saturation
    assert any("for memory: the cluster runs out" in x for b in r.task_bottlenecks for x in b.reasons)
    recs = recommend(wf(tasks), Cluster.homogeneous(2, cpus=8, memory_gib=16), report=r, samples=200)
    assert "more-memory" in {x.kind for x in recs.offered}


def test_same_seed_same_report_without_a_time_budget():
    a = analyze(long_beside_fan_out(), SMALL, seed=3, **FIXED).to_dict(per_task=True)
    b = analyze(long_beside_fan_out(), SMALL, seed=3, **FIXED).to_dict(per_task=True)
    for d in (a, b):
        for k in ("seconds", "compile_seconds", "timings"):
            d.pop(k)
    assert a == b


def test_report_is_json_safe():
    import json

    r = analyze(long_beside_fan_out(), SMALL, deadline=500, **FIXED)
    back = json.loads(json.dumps(r.to_dict(per_task=True)))
    assert back["makespan"]["p90"] >= back["makespan"]["p50"] > 0
    assert len(back["per_task"]) == 22 and back["plan"]["stages"] == 2


def test_plan_nodes_and_deadline():
    tasks = [{"id": f"t{i}", "duration": 10.0} for i in range(64)]
    one = Cluster.homogeneous(1, cpus=4, memory_gib=16)
    r = analyze(wf(tasks), one, deadline=60, **FIXED)
    p = r.plan
    assert p.stages == 1 and p.width_per_stage == [64] and p.peak_width == 4
    curve = {pt.nodes: pt for pt in p.nodes_curve}
    # 64 independent tasks on 4-cpu nodes: 16 nodes run them all at once
    assert p.enough_nodes is not None and 8 <= p.enough_nodes <= 17
    assert curve[1].mean > 4 * curve[p.enough_nodes].mean
    assert p.deadline_nodes is not None and curve[p.deadline_nodes].p90 <= 60
    assert p.deadline_nodes == 1 or curve[p.deadline_nodes - 1].p90 > 60
    unreachable = analyze(wf(tasks), one, deadline=5, **FIXED).plan
    assert unreachable.deadline_nodes is None
    assert unreachable.deadline_note.startswith("not reachable: the critical path alone is 10 s")


def test_width_over_time_never_exceeds_the_cluster():
    r = analyze(long_beside_fan_out(), SMALL, **FIXED)
    assert max(row[2] for row in r.plan.width_over_time) <= SMALL.total_cpus
    assert r.plan.peak_width == 8


def test_done_tasks_shorten_the_remaining_makespan():
    w = long_beside_fan_out()
    before = analyze(w, SMALL, seed=1, **FIXED)
    done = {f"w{i}": "succeeded" for i in range(20)}
    after = analyze(w, SMALL, status=done, seed=1, **FIXED)
    assert after.tasks_left == 2 and after.live["done"] == 20
    assert after.makespan.mean < before.makespan.mean
    running = analyze(w, SMALL, status={**done, "long": "running"}, elapsed={"long": 60.0}, seed=1, **FIXED)
    assert running.live["running"] == 1
    assert running.makespan.mean < after.makespan.mean
    everything = {t.id: "done" for t in w.tasks}
    nothing = analyze(w, SMALL, status=everything, **FIXED)
    assert nothing.makespan.mean == 0 and nothing.tasks_left == 0 and "nothing is left" in nothing.notes[0]


def test_running_tasks_draw_their_remainder_conditionally():
    w = wf([{"id": "a", "duration": 100.0}])
    p, _ = build_problem(w, SMALL, status={"a": "running"}, elapsed={"a": 150.0})
    draws = p.draws(20_000, seed=0)[:, 0]
    td = TaskDurations(np.array([100.0]), p.durations.cv)
    full = td.sample(400_000, seed=1)[:, 0]
    tail = full[full > 150.0] - 150.0
    assert draws.min() >= 0
    assert np.mean(draws) == pytest.approx(np.mean(tail), rel=0.05)
    assert np.median(draws) == pytest.approx(np.median(tail), rel=0.05)
    assert p.predicted[0] == pytest.approx(np.mean(tail), rel=0.05)
    # far beyond any expected duration: still a finite remainder
    far, _ = build_problem(w, SMALL, status={"a": "running"}, elapsed={"a": 1e7})
    assert np.all(np.isfinite(far.draws(100, 0))) and np.isfinite(far.predicted[0])


def test_bad_inputs_each_get_their_named_error():
    with pytest.raises(AnalysisInputError, match=r"no runtime is known .* categories extract"):
        analyze(wf([{"id": "extract-0"}, {"id": "extract-1"}]), SMALL)
    with pytest.raises(AnalysisInputError, match=r"1 task\(s\) of workflow 'w' are bigger than every node: 'huge' "
                                                 r"\(64 cpus / 0 B\)"):
        analyze(wf([{"id": "ok", "duration": 1.0}, {"id": "huge", "duration": 1.0, "resources": {"cpus": 64}}]),
                SMALL)
    with pytest.raises(AnalysisInputError, match="too small for any task of workflow 'w'"):
        analyze(wf([{"id": "a", "duration": 1.0, "resources": {"cpus": 2}}]),
                Cluster.homogeneous(3, cpus=1, memory_gib=1))
    with pytest.raises(AnalysisInputError, match="policy 'tetris'"):
        analyze(long_beside_fan_out(), SMALL, policy="tetris")
    with pytest.raises(AnalysisInputError, match="status names 1 task"):
        analyze(long_beside_fan_out(), SMALL, status={"ghost": "done"})
    with pytest.raises(AnalysisInputError, match="status 'exploded'"):
        analyze(long_beside_fan_out(), SMALL, status={"long": "exploded"})
    with pytest.raises(AnalysisInputError, match="method 'magic'"):
        analyze(long_beside_fan_out(), SMALL, method="magic")


def test_single_task_and_independent_parts_are_answered_with_a_note():
    one = analyze(wf([{"id": "only", "duration": 30.0}]), SMALL, **FIXED)
    assert one.makespan.mean == pytest.approx(30.0, rel=0.1)
    assert any("a single task" in n for n in one.notes)
    parts = wf([{"id": "a", "duration": 5.0}, {"id": "b", "duration": 5.0, "depends_on": ["a"]},
                {"id": "c", "duration": 5.0}, {"id": "d", "duration": 5.0}])
    r = analyze(parts, SMALL, **FIXED)
    assert r.components == 3 and any("3 independent parts" in n for n in r.notes)


def test_too_many_tasks_are_refused_with_the_limit(monkeypatch):
    monkeypatch.setattr(analysis, "MAX_ANALYSIS_TASKS", 10)
    with pytest.raises(AnalysisInputError, match="has 22 tasks; the analysis answers up to 10"):
        analyze(long_beside_fan_out(), SMALL)


@pytest.mark.timeout(60)
def test_fifty_thousand_tasks_get_an_answer():
    rng = np.random.default_rng(0)
    width = 250
    tasks = []
    for i in range(50_000):
        level = i // width
        deps = sorted({f"t{(level - 1) * width + int(j)}" for j in rng.integers(0, width, 2)}) if level else []
        tasks.append({"id": f"t{i}", "depends_on": deps, "duration": float(rng.lognormal(3, 1))})
    r = analyze(wf(tasks, "big"), Cluster.homogeneous(16, cpus=8, memory_gib=32))
    assert r.tasks == 50_000 and r.makespan.mean > 0 and r.makespan.samples >= 8
    assert r.plan.enough_note


def test_gnn_method_uses_the_model_or_says_it_is_missing(monkeypatch):
    w = long_beside_fan_out()
    monkeypatch.setitem(sys.modules, "orchestrator.optimization.gnn", None)
    with pytest.raises(AnalysisInputError, match="method 'gnn': the GNN is not available"):
        analyze(w, SMALL, method="gnn")

    class Model:
        @classmethod
        def load(cls, path=None):
            return cls()

        def predict(self, dag, durations, cluster, *, status=None, elapsed=None, policy="srpt-cp", **kw):
            gain = np.zeros(dag.n)
            gain[dag.index["long"]] = 29.0
            return types.SimpleNamespace(mean=101.0, p50=100.0, p90=120.0, gain=gain, seconds=0.002)

    fake = types.ModuleType("orchestrator.optimization.gnn")
    fake.OptimizerModel = Model
    monkeypatch.setitem(sys.modules, "orchestrator.optimization.gnn", fake)
    monkeypatch.setattr("orchestrator.optimization.gnn", fake, raising=False)
    r = analyze(w, SMALL, method="gnn")
    assert r.method == "gnn" and r.makespan.mean == 101.0 and r.makespan.p90 == 120.0
    assert r.task_bottlenecks[0].name == "long" and not r.task_bottlenecks[0].measured
    # while it runs, the model sees the whole workflow with each task's state; the gains shown are the tasks left
    seen = {}
    real = Model.predict

    def spy(self, dag, durations, cluster, **kw):
        seen.update(kw, n=dag.n)
        return real(self, dag, durations, cluster, **kw)

    monkeypatch.setattr(Model, "predict", spy)
    live = analyze(w, SMALL, method="gnn", status={"w0": "done", "long": "running"}, elapsed={"long": 5.0})
    assert seen["n"] == 22 and seen["status"][0] == "running" and seen["status"][1] == "done"
    assert seen["elapsed"][0] == 5.0
    assert live.tasks_left == 21 and live.task_bottlenecks[0].name == "long"


def test_live_run_reads_status_elapsed_and_finished_runtimes(sqlite_url):
    from orchestrator.states import TaskStatus as TS
    from orchestrator.store import Store
    from orchestrator.store.records import ExecutionRecord, SystemSample, TaskChange

    w = long_beside_fan_out()
    with Store.open(sqlite_url) as store:
        run = store.create_workflow(w, "srpt-cp")
        changes = [TaskChange(run, t.id, TS.READY) for t in w.tasks if not t.depends_on]
        changes += [TaskChange(run, f"w{i}", TS.RUNNING, attempt=1, at=1000.0) for i in range(20)]
        changes += [TaskChange(run, f"w{i}", TS.SUCCEEDED, at=1012.0) for i in range(19)]
        changes += [TaskChange(run, "long", TS.RUNNING, attempt=1, at=1000.0)]
        store.apply(changes, executions=[ExecutionRecord(run, f"w{i}", 1, "succeeded", started_at=1000.0,
                                                         finished_at=1012.0, duration=12.0) for i in range(19)])
        store.record_system_samples([SystemSample(8, 4, 32 * GiB, 8 * GiB, 0, 2, node=f"n{k}") for k in range(3)])
        live = live_run(store, run, now=1030.0)
    assert live.cluster is not None and live.cluster.total_cpus == 24 and len(live.cluster) == 3
    assert live.status["w0"] == "done" and live.status["w19"] == "running" and live.status["join"] == "pending"
    assert live.elapsed == {"long": 30.0, "w19": 30.0}
    assert live.history_with(None).mean_of("w") == 12.0
    r = analyze(live.workflow, SMALL, status=live.status, elapsed=live.elapsed, **FIXED)
    assert r.live == {"done": 19, "running": 2, "pending": 1, "note": "times are the remaining time from now"}
    assert 70 - 20 < r.makespan.mean < 100


# ------------------------------------------------------------------------------------------------ recommendations

def test_a_chain_of_tiny_tasks_gets_a_fuse_that_applies_and_is_faster():
    w = chain_of_tiny()
    one = Cluster.homogeneous(1, cpus=2, memory_gib=8)
    recs = recommend(w, one, samples=200)
    fuse = next(r for r in recs.offered if r.kind == "fuse")
    assert fuse.targets == tuple(f"c{i}" for i in range(20)) and fuse.gain > 2.5 * fuse.stderr
    changed = fuse.apply(w)
    ids = [t.id for t in changed.tasks]
    assert "c0..c19" in ids and not any(t in ids for t in fuse.targets)
    assert set(ids) - {"c0..c19"} == {t.id for t in w.tasks} - set(fuse.targets)
    assert changed.task("c0..c19").duration == pytest.approx(20.0)
    checked = verify(fuse, w, one, samples=300)
    assert checked.gain > 2 * checked.stderr


def test_a_too_small_cluster_gets_add_nodes():
    tasks = [{"id": f"t{i}", "duration": 10.0} for i in range(40)]
    recs = recommend(wf(tasks), Cluster.homogeneous(1, cpus=2, memory_gib=8), samples=100)
    assert recs.offered[0].kind == "add-nodes" and recs.offered[0].gain_pct > 30
    assert recs.offered[0].cluster_after.total_cpus > 2


def test_a_split_keeps_the_workflow_valid_and_the_children_wait_for_every_part():
    w = long_beside_fan_out()
    recs = recommend(w, SMALL, samples=200)
    split = next(r for r in recs.offered if r.kind == "split" and r.targets == ("long",))
    changed = split.apply(w)
    parts = split.params["new_tasks"]
    assert all(p in changed.task_ids() for p in parts) and "long" not in changed.task_ids()
    assert set(parts) <= set(changed.task("join").depends_on)
    assert sum(changed.task(p).duration for p in parts) == pytest.approx(100.0)
    assert verify(split, w, SMALL, samples=300).gain > 0


def test_priority_helps_under_fifo_and_keeps_ids():
    w = chain_of_tiny()
    one = Cluster.homogeneous(1, cpus=2, memory_gib=8)
    ranked = best_single_change(w, one, samples=100, kinds=("priority",))
    assert ranked == sorted(ranked, key=lambda r: -r.gain)
    best = ranked[0]
    assert best.kind == "priority" and best.gain > 0
    changed = best.apply(w)
    assert changed.task_ids() == w.task_ids()
    assert all(changed.task(t).priority == 1 for t in best.targets)


def test_the_top_recommendation_is_near_the_best_single_change():
    w = long_beside_fan_out()
    recs = recommend(w, SMALL, samples=200)
    every = best_single_change(w, SMALL, samples=200)
    assert {r.kind for r in every} >= {"priority", "more-cpus", "split", "add-nodes", "more-memory"}
    assert recs.offered[0].gain >= 0.9 * every[0].gain


@st.composite
def random_workflows(draw):
    n = draw(st.integers(2, 14))
    tasks = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=min(i, 3), unique=True)) if i else []
        tasks.append({"id": f"t{i}", "depends_on": [f"t{p}" for p in parents],
                      "duration": draw(st.sampled_from([0.5, 1.0, 5.0, 20.0, 60.0])),
                      "resources": {"cpus": draw(st.sampled_from([1, 2, 4])),
                                    "memory": draw(st.sampled_from([1, 4, 8])) * GiB}})
    return Workflow(name="random", tasks=tasks, policy=draw(st.sampled_from(["fifo", "srpt-cp", "heft"])))


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_workflows(), st.integers(1, 3), st.integers(0, 1000))
def test_nothing_that_makes_things_worse_is_offered(w, nodes, seed):
    cluster = Cluster.homogeneous(nodes, cpus=4, memory_gib=16)
    recs = recommend(w, cluster, samples=100, seed=seed)
    for r in recs.offered:
        assert r.gain > 2.5 * r.stderr and r.gain > 0 and r.mean_after < r.mean_before
        changed = r.apply(w)  # a valid workflow
        assert changed.name == w.name
        again = verify(r, w, cluster, samples=200, seed=seed + 1)
        assert again.gain > -3 * again.stderr - 1e-9, (r.kind, r.targets, again.gain, again.stderr)
    for r in recs.rejected:
        assert not r.offered

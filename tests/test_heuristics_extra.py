"""sjf-cp and weighted-fair: the job each one favours on hand-built cases, weighted-fair's cpu shares and work
conservation, and the tuning of its alpha (the search, the command, and the file the policy reads)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import PolicyError
from orchestrator.model import Workflow
from orchestrator.scheduling import get_policy
from orchestrator.scheduling.heuristics import SjfCriticalPathPolicy, WeightedFairPolicy
from orchestrator.scheduling.interface import EPS, first_fit
from orchestrator.scheduling.tuning import (
    DEFAULT_ALPHA,
    HEURISTICS_FILE_ENV,
    tune_weighted_fair,
    tuned_alpha,
)
from orchestrator.sim import Cluster, Simulation, TraceLibrary, poisson_workload, replay_workload, simulate
from orchestrator.sim.cluster import GiB, NodeSpec


def _workflow(name: str, tasks: list[dict]) -> Workflow:
    return Workflow(name=name, tasks=tasks)


def _independent(name: str, n: int, duration: float = 10.0) -> Workflow:
    return _workflow(name, [{"id": f"t{i}", "duration": duration} for i in range(n)])


def _starts(workflows: list[Workflow], arrivals: list[float], policy, cpus: float = 1) -> dict[tuple[int, str], float]:
    """Start time of every (job, task id) with exact predictions on one node of `cpus` cpus."""
    library = TraceLibrary.from_workflows(workflows)
    workload = replay_workload(library.entries, arrivals, noise=0.0)
    result = simulate(workload, Cluster.homogeneous(1, cpus=cpus), policy)
    rec = result.tasks
    return {(int(j), workflows[int(j)].tasks[int(t)].id): float(s) for j, t, s in zip(rec.job, rec.task, rec.start)}


def _first_round(workflows: list[Workflow], policy, cluster: Cluster) -> Counter:
    """Tasks started per job in the first round, all jobs arriving at once."""
    library = TraceLibrary.from_workflows(workflows)
    sim = Simulation(replay_workload(library.entries, [0.0] * len(workflows), noise=0.0), cluster, policy)
    assert sim.advance()
    return Counter(t.job for t, _ in policy.schedule(sim))


# ---- sjf-cp ----------------------------------------------------------------------------------------------------

def test_sjf_runs_the_smaller_job_first_by_total_work_where_srpt_goes_by_remaining_work():
    # A (12 s of work) holds the only cpu when B (5 s) arrives; when a1 ends, A has 2 s left and B 5 s.
    big = _workflow("big", [{"id": "a1", "duration": 10}, {"id": "a2", "duration": 2, "depends_on": ["a1"]}])
    small = _workflow("small", [{"id": "b1", "duration": 5}])
    sjf = _starts([big, small], [0.0, 5.0], get_policy("sjf-cp"))
    assert sjf[1, "b1"] == 10.0 and sjf[0, "a2"] == 15.0
    srpt = _starts([big, small], [0.0, 5.0], get_policy("srpt-cp"))
    assert srpt[0, "a2"] == 10.0 and srpt[1, "b1"] == 12.0


def test_sjf_breaks_ties_by_arrival_and_runs_the_critical_path_first_within_a_job():
    blocker = _workflow("blocker", [{"id": "x", "duration": 4}])
    # Equal total work (7 s); within each, y -> z (6 s to the end) goes before the lone w (1 s).
    twin = _workflow("twin", [{"id": "w", "duration": 1}, {"id": "y", "duration": 1},
                              {"id": "z", "duration": 5, "depends_on": ["y"]}])
    # Job 2 arrives (at 1 s) before job 1 (at 2 s): it goes first, all of it, critical path first.
    starts = _starts([blocker, twin, twin], [0.0, 2.0, 1.0], SjfCriticalPathPolicy())
    assert starts[2, "y"] == 4.0 and starts[2, "z"] == 5.0 and starts[2, "w"] == 10.0
    assert starts[1, "y"] == 11.0


# ---- weighted-fair ---------------------------------------------------------------------------------------------

def test_alpha_zero_splits_a_contended_cluster_evenly_between_equal_jobs():
    jobs = [_independent("a", 12), _independent("b", 12)]
    assert _first_round(jobs, WeightedFairPolicy(alpha=0.0), Cluster.homogeneous(1, cpus=8)) == {0: 4, 1: 4}
    # Over the whole run they share the cluster: both finish together (3 waves of 4 tasks of 10 s each).
    library = TraceLibrary.from_workflows(jobs)
    result = simulate(replay_workload(library.entries, [0.0, 0.0], noise=0.0), Cluster.homogeneous(1, cpus=8),
                      WeightedFairPolicy(alpha=0.0))
    assert result.jct.tolist() == [30.0, 30.0]


def test_negative_alpha_gives_the_small_job_most_and_positive_alpha_the_large_one():
    jobs = [_independent("big", 30), _independent("small", 6)]  # 300 and 60 cpu-seconds
    cluster = Cluster.homogeneous(1, cpus=8)
    # alpha -1: shares 8 x (1/300, 1/60) / (1/300 + 1/60) = 1.33 and 6.67 cpus.
    assert _first_round(jobs, WeightedFairPolicy(alpha=-1.0), cluster) == {1: 6, 0: 2}
    # alpha +1: 6.67 and 1.33; the cpu left over goes to the job holding the smaller part of its share.
    assert _first_round(jobs, WeightedFairPolicy(alpha=1.0), cluster) == {0: 6, 1: 2}
    # The small job finishes sooner under alpha -1 than under +1.
    library = TraceLibrary.from_workflows(jobs)
    workload = replay_workload(library.entries, [0.0, 0.0], noise=0.0)
    favour_small = simulate(workload, cluster, WeightedFairPolicy(alpha=-1.0)).jct
    favour_large = simulate(workload, cluster, WeightedFairPolicy(alpha=1.0)).jct
    assert favour_small[1] < favour_large[1] and favour_small[0] >= favour_large[0]


def test_shares_sum_to_the_cluster_and_follow_remaining_work():
    jobs = [_independent("a", 4), _independent("b", 12), _independent("c", 1)]
    library = TraceLibrary.from_workflows(jobs)
    sim = Simulation(replay_workload(library.entries, [0.0] * 3, noise=0.0), Cluster.homogeneous(2, cpus=8),
                     WeightedFairPolicy(alpha=-1.0))
    assert sim.advance()
    for alpha in (-2.0, -1.0, 0.0, 0.5):
        shares = WeightedFairPolicy(alpha=alpha).shares(sim)
        assert sum(shares.values()) == pytest.approx(16.0)
        small, middle, large = shares[2], shares[0], shares[1]  # remaining work 10, 40 and 120 cpu-seconds
        if alpha < 0:
            assert small > middle > large
        elif alpha > 0:
            assert small < middle < large
        else:
            assert small == middle == large


@pytest.mark.parametrize("alpha", [-2.0, -1.0, 0.0, 1.0])
def test_weighted_fair_never_leaves_a_fitting_ready_task_waiting(alpha, trace_library):
    # Unequal nodes, tasks of 1 and 2 cpus and of several memory sizes, at a load that keeps a queue.
    library = trace_library.subset(max_tasks=120)
    cluster = Cluster((NodeSpec("a", 3, 4 * GiB), NodeSpec("b", 8, 16 * GiB), NodeSpec("c", 2, 2 * GiB)))
    workload = poisson_workload(library, cluster, load=1.2, num_jobs=8, seed=5)
    policy = WeightedFairPolicy(alpha=alpha)
    sim = Simulation(workload, cluster, policy, seed=5)
    offered_and_left = rounds = 0
    while sim.advance():
        offered = {(t.job, t.task): t for t in sim.ready()}
        decisions = policy.schedule(sim)
        assert len({(t.job, t.task) for t, _ in decisions}) == len(decisions)
        assert all(offered.get((t.job, t.task)) is t for t, _ in decisions)  # only tasks it was offered
        sim.apply(decisions)
        nodes = sim.nodes
        if max(nodes.free_cpus) > EPS:
            left = [t for t in sim.ready()
                    if first_fit(t, nodes.free_cpus, nodes.free_memory, nodes.free_gpus) is not None]
            assert not left, f"round {rounds}: {left[:3]} fit but were left waiting"
        offered_and_left += len(offered) - len(decisions)
        rounds += 1
    assert rounds > 50 and offered_and_left > 0  # the queue was contended: some tasks had to wait
    assert len(sim.finished) == len(workload.jobs)


def test_weighted_fair_is_deterministic_and_reports_its_alpha(trace_library):
    library = trace_library.subset(max_tasks=200)
    cluster = Cluster.homogeneous(2, cpus=8, memory_gib=32)
    workload = poisson_workload(library, cluster, load=0.9, num_jobs=6, seed=2)
    a = simulate(workload, cluster, WeightedFairPolicy(alpha=-0.5), seed=2)
    b = simulate(workload, cluster, WeightedFairPolicy(alpha=-0.5), seed=2)
    assert a.jct.tolist() == b.jct.tolist() and a.tasks.node.tolist() == b.tasks.node.tolist()
    assert WeightedFairPolicy(alpha=-0.5).describe()["alpha"] == -0.5
    with pytest.raises(PolicyError, match="alpha must be a finite number"):
        WeightedFairPolicy(alpha=float("nan"))


# ---- tuning ------------------------------------------------------------------------------------------------------

def test_tuning_picks_the_alpha_with_the_lowest_mean_of_its_table(trace_library):
    library = trace_library.subset(max_tasks=120)
    cluster = Cluster.homogeneous(2, cpus=8, memory_gib=32)
    alphas, loads, seeds = (-2.0, 0.0, 1.0), (0.8, 1.0), (1000, 1001)
    result = tune_weighted_fair(library, alphas=alphas, loads=loads, seeds=seeds, jobs=5, cluster=cluster)
    assert set(result.avg_jct) == {(a, x) for a in alphas for x in loads}
    means = {row["alpha"]: row["mean"] for row in result.table()}
    assert result.best_alpha == min(means, key=means.get)
    assert means[result.best_alpha] == pytest.approx(sum(result.avg_jct[result.best_alpha, x] for x in loads) / 2)
    # A cell is the mean over seeds of the simulated average JCT on that seed's workload.
    direct = [simulate(poisson_workload(library, cluster, 1.0, 5, seed=s), cluster, WeightedFairPolicy(alpha=1.0),
                       seed=s, record=False).jct.mean() for s in seeds]
    assert result.avg_jct[1.0, 1.0] == pytest.approx(sum(direct) / 2)
    assert len(set(means.values())) > 1  # alpha made a difference on this contended setup
    assert set(result.families) <= {"1000genome", "cycles", "epigenomics", "montage"}


def test_tuning_uses_only_training_families_and_seeds(trace_library):
    other = TraceLibrary.from_workflows([_independent("x", 3).model_copy(update={"family": "blast"})])
    library = TraceLibrary([*trace_library.subset(families=["cycles"], max_tasks=80).entries, *other.entries])
    cluster = Cluster.homogeneous(1, cpus=8)
    result = tune_weighted_fair(library, alphas=(-1.0,), loads=(0.9,), seeds=(1000,), jobs=3, cluster=cluster)
    assert result.families == ("cycles",)
    with pytest.raises(PolicyError, match="seeds must be >= 1000"):
        tune_weighted_fair(library, alphas=(-1.0,), loads=(0.9,), seeds=(3,), jobs=3, cluster=cluster)


def test_tune_command_writes_the_file_the_policy_reads(tmp_path, trace_dir, monkeypatch):
    traces = tmp_path / "traces"  # a few small workflows stand in for a trace collection
    traces.mkdir()
    for name in ("montage-chameleon-2mass-005d-001", "epigenomics-chameleon-hep-1seq-100k-001",
                 "cycles-chameleon-1l-1c-9p-001"):
        shutil.copy(trace_dir / "wfcommons" / name.split("-")[0] / f"{name}.json.gz", traces)
    out = tmp_path / "heuristics.json"
    result = CliRunner().invoke(app, ["tune", "heuristics", "--traces", str(traces), "--seeds", "1", "--jobs", "3",
                                      "--loads", "0.9", "--alphas", "-1.5,0.5", "--nodes", "1", "--workers", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    table = written["provenance"]["table"]
    assert [row["alpha"] for row in table] == [-1.5, 0.5]
    best = min(table, key=lambda row: row["mean"])["alpha"]
    assert written["weighted-fair"]["alpha"] == best and f"best alpha {best:g}" in result.output
    assert written["provenance"]["command"].startswith("orchestrator tune heuristics")
    assert written["provenance"]["date"] and written["provenance"]["seeds"] == [1000]

    # The policy reads the alpha from the file named by the environment (or given to tuned_alpha).
    out.write_text(json.dumps({**written, "weighted-fair": {"alpha": 0.25}}))
    monkeypatch.setenv(HEURISTICS_FILE_ENV, str(out))
    assert get_policy("weighted-fair").alpha == 0.25 and tuned_alpha(out) == 0.25
    assert WeightedFairPolicy(alpha=-2).alpha == -2.0  # an explicit alpha wins
    # Without a value for weighted-fair, the default.
    out.write_text(json.dumps({"provenance": {}}))
    assert WeightedFairPolicy().alpha == DEFAULT_ALPHA


def test_a_bad_or_missing_tuned_file_is_an_error_naming_it(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"weighted-fair": {"alpha": "a lot"}}')
    with pytest.raises(PolicyError, match=r"bad.json is not valid .*orchestrator tune heuristics"):
        tuned_alpha(bad)
    monkeypatch.setenv(HEURISTICS_FILE_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(PolicyError, match=r"missing.json does not exist"):
        WeightedFairPolicy()

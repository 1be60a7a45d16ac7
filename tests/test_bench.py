"""Properties of the benchmark API on its quick configuration: complete tidy results, bounds respected,
determinism for a seed and for any number of workers, and the statistics of summaries and A/B comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from orchestrator.bench import (
    RESULT_COLUMNS,
    BenchConfigError,
    ComparisonError,
    load_config,
    mean_ci,
    paired_comparison,
    paired_comparisons,
    run_benchmark,
    summarise,
)
from orchestrator.bench.stats import single_overview
from orchestrator.errors import PolicyError

KEYS = ["scenario", "load", "nodes", "policy", "seed", "metric"]


@pytest.fixture(scope="module")
def quick_config():
    return load_config(quick=True).with_overrides(workers=1)


@pytest.fixture(scope="module")
def quick_run(quick_config):
    return run_benchmark(quick_config)


def _metric(results: pd.DataFrame, metric: str) -> pd.Series:
    rows = results[results["metric"] == metric]
    return rows.set_index(["scenario", "load", "nodes", "policy", "seed"])["value"]


def test_results_have_exactly_the_columns_and_one_row_per_key(quick_run, quick_config):
    results = quick_run.results
    assert list(results.columns) == RESULT_COLUMNS
    assert not results.duplicated(subset=KEYS).any()
    # A complete grid: every policy on every cell with every metric.
    runs = results.groupby(KEYS[:-1], dropna=False)["metric"].apply(frozenset)
    assert runs.nunique() == 1
    online_cells = len(quick_config.online.loads) * quick_config.seeds
    single_scenarios = results.loc[results["scenario"].str.startswith("single:"), "scenario"].nunique()
    single_cells = single_scenarios * len(quick_config.single.nodes) * quick_config.seeds
    assert len(runs) == (online_cells + single_cells) * len(quick_config.policies)
    assert set(results["policy"]) == set(quick_config.policies)
    # Loads belong to online cells only; wall-clock measurements are not results.
    assert results.loc[results["scenario"] == "online", "load"].notna().all()
    assert results.loc[results["scenario"] != "online", "load"].isna().all()
    assert not {"decision_us", "sim_tasks_per_s"} & set(results["metric"])


def test_every_run_respects_its_lower_bounds(quick_run):
    results = quick_run.results
    for metric, bound in (("makespan", "makespan_lb"), ("avg_jct", "avg_jct_lb")):
        value, lb = _metric(results, metric), _metric(results, bound)
        assert len(value) == len(lb) > 0
        assert (value >= lb * (1 - 1e-9)).all(), f"{metric} below {bound}:\n{(value - lb)[value < lb]}"


def test_the_separate_bounds_are_reported_and_make_up_the_combined_one(quick_run, trace_library, quick_config):
    results = quick_run.results
    makespan, lb = _metric(results, "makespan"), _metric(results, "makespan_lb")
    cp, work = _metric(results, "critical_path_lb"), _metric(results, "work_lb")
    assert len(cp) == len(work) == len(lb) > 0
    assert ((cp > 0) & (work > 0)).all()
    assert (lb >= np.maximum(cp, work) * (1 - 1e-12)).all() and (makespan >= lb * (1 - 1e-9)).all()
    # One workflow alone from time 0: its critical path, and its cpu work over the cluster's cpus.
    single = cp.reset_index()
    single = single[single["scenario"].str.startswith("single:")]
    assert len(single) > 0
    for row in single.itertuples():
        entry = trace_library.by_name(row.scenario.removeprefix("single:"))
        assert row.value == pytest.approx(entry.analysis.critical_path_length, rel=1e-9)
        key = (row.scenario, row.load, row.nodes, row.policy, row.seed)
        total_cpus = row.nodes * quick_config.single.cpus_per_node
        assert work.loc[key] == pytest.approx(entry.cpu_work / total_cpus, rel=1e-9)


def test_a_library_without_work_is_a_simulation_error_not_a_division_by_zero():
    from orchestrator.errors import SimulationError
    from orchestrator.loaders import workflow_from_dict
    from orchestrator.sim import Cluster, TraceLibrary, poisson_workload

    wf = workflow_from_dict({"name": "idle", "tasks": [{"id": "a", "duration": 0.0}, {"id": "b", "duration": 0.0}]})
    with pytest.raises(SimulationError, match="mean cpu work is 0 cpu-seconds"):
        poisson_workload(TraceLibrary.from_workflows([wf]), Cluster.homogeneous(2), 0.5, 3)


def test_results_keep_one_row_per_key_when_trace_file_names_repeat(tmp_path, trace_dir, quick_config):
    import gzip
    import shutil

    src = trace_dir / "wfcommons" / "montage" / "montage-chameleon-2mass-005d-001.json.gz"
    for rel in ("m.json.gz", "a/m.json.gz", "b/m.json.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / rel)
    (tmp_path / "m.json").write_bytes(gzip.decompress(src.read_bytes()))
    config = quick_config.with_overrides(traces=tmp_path, seeds=1, **{"single.workflows_per_family": 4,
                                                                       "single.nodes": [2]})
    run = run_benchmark(config, scenarios="single")
    assert set(run.results["scenario"]) == {"single:m.json", "single:m.json.gz", "single:a/m", "single:b/m"}
    assert not run.results.duplicated(subset=KEYS).any()


def test_same_seed_gives_identical_results(quick_run, quick_config):
    again = run_benchmark(quick_config)
    pd.testing.assert_frame_equal(quick_run.results, again.results)


def test_two_workers_give_the_same_results_as_one(quick_run, quick_config):
    parallel = run_benchmark(quick_config.with_overrides(workers=2))
    pd.testing.assert_frame_equal(quick_run.results, parallel.results)


def test_other_seeds_give_other_online_workloads(quick_run, quick_config):
    shifted = run_benchmark(quick_config.with_overrides(first_seed=100, seeds=2), scenarios="online")
    ours = _metric(quick_run.results, "avg_jct").loc["online"]
    theirs = _metric(shifted.results, "avg_jct").loc["online"]
    assert not set(ours.round(6)) & set(theirs.round(6))


def test_throughput_is_reported_per_policy(quick_run, quick_config):
    t = quick_run.throughput
    assert list(t["policy"]) == quick_config.policies
    assert (t["tasks"] > 0).all() and (t["tasks_per_s"] > 0).all() and (t["decision_us"] > 0).all()


def test_unknown_policy_is_named_with_the_available_ones(quick_config):
    with pytest.raises(PolicyError, match=r"Unknown scheduling policy 'no-such-policy'; available: .*srpt-cp"):
        run_benchmark(quick_config.with_overrides(policies=["fifo", "no-such-policy"]))


def test_bad_config_values_are_named():
    with pytest.raises(BenchConfigError, match="online.loads"):
        load_config().with_overrides(**{"online.loads": [0.5, -1.0]})
    with pytest.raises(BenchConfigError, match="Unknown benchmark setting 'online.speed'"):
        load_config().with_overrides(**{"online.speed": 2})
    with pytest.raises(BenchConfigError, match="does not exist"):
        load_config("no/such/bench.yaml")


def test_unknown_single_workflow_is_named(quick_config):
    config = quick_config.with_overrides(**{"single.workflows": ["montage-nowhere-001"]})
    with pytest.raises(BenchConfigError, match="montage-nowhere-001"):
        run_benchmark(config, scenarios="single")


def test_mean_ci_matches_the_t_distribution():
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0
    assert half == pytest.approx(scipy_stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci(np.array([4.0]))[1])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=1, max_size=8))
def test_summary_interval_is_the_t_interval_of_the_seeds(values):
    df = pd.DataFrame({"scenario": "online", "load": 0.5, "nodes": 4, "policy": "fifo",
                       "seed": range(len(values)), "metric": "avg_jct", "value": values})
    row = summarise(df).iloc[0]
    assert row["n"] == len(values)
    assert row["mean"] == pytest.approx(sum(values) / len(values))
    assert row["ratio_to_baseline"] == pytest.approx(1.0)
    if len(values) == 1:  # no interval from one seed
        assert math.isnan(row["ci_half"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
        return
    # scipy's own t interval, from the sample's mean and standard error.
    sem = scipy_stats.sem(values)
    if sem == 0:
        assert row["ci_half"] == 0.0
        return
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert row["ci_low"] == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert row["ci_high"] == pytest.approx(high, rel=1e-9, abs=1e-9)


def test_summary_interval_narrows_with_more_seeds():
    rng = np.random.default_rng(7)
    values = rng.normal(100.0, 10.0, size=64)
    halves = []
    for n in (4, 16, 64):
        df = pd.DataFrame({"scenario": "online", "load": 0.5, "nodes": 4, "policy": "fifo", "seed": range(n),
                           "metric": "avg_jct", "value": values[:n]})
        halves.append(summarise(df).iloc[0]["ci_half"])
    assert halves[0] > halves[1] > halves[2] > 0
    assert halves[2] == pytest.approx(scipy_stats.t.ppf(0.975, 63) * values.std(ddof=1) / 8)


def test_summary_ratios(quick_run, quick_config):
    summary = summarise(quick_run.results, baseline=quick_config.baseline)
    assert not summary.duplicated(subset=["scenario", "load", "nodes", "policy", "metric"]).any()
    base = summary[summary["policy"] == quick_config.baseline]
    assert np.allclose(base["ratio_to_baseline"].dropna(), 1.0)
    bounded = summary[summary["metric"].isin(["makespan", "avg_jct"])]
    assert bounded["ratio_to_lb"].notna().all() and (bounded["ratio_to_lb"] >= 1 - 1e-9).all()
    assert summary.loc[summary["metric"] == "utilisation", "ratio_to_lb"].isna().all()
    overview = single_overview(quick_run.results, baseline=quick_config.baseline)
    assert set(overview["policy"]) == set(quick_config.policies)
    assert (overview["mean"] >= 1 - 1e-9).all()


def test_a_policy_against_itself_shows_no_difference(quick_run):
    results = paired_comparisons(quick_run.results, "srpt-cp", "srpt-cp", metric="avg_jct")
    assert [r.scenario for r in results] == ["online", "single"]
    for result in results:
        assert result.identical and not result.significant
        assert result.p_wilcoxon == 1.0 and result.p_ttest == 1.0
        assert result.mean_diff == 0.0 and result.ci_low == result.ci_high == 0.0
        assert result.verdict.startswith("no significant difference at alpha=0.05")


def test_one_test_never_pools_online_and_single_scenarios(quick_run, quick_config):
    with pytest.raises(ComparisonError, match="several kinds of scenario \\(online, single\\)"):
        paired_comparison(quick_run.results, "fifo", "srpt-cp", metric="avg_jct")
    online, single = paired_comparisons(quick_run.results, "fifo", "srpt-cp", metric="avg_jct")
    assert online.scenario == "online" and set(online.pairs["scenario"]) == {"online"}
    assert online.n == len(quick_config.online.loads) * quick_config.seeds
    assert single.scenario == "single" and all(s.startswith("single:") for s in single.pairs["scenario"])
    only_single = quick_run.results[quick_run.results["scenario"] != "online"]
    assert paired_comparison(only_single, "fifo", "srpt-cp", metric="avg_jct").n == single.n


def test_online_ab_pairs_each_seeded_workload_and_its_statistics_are_scipys(quick_run, quick_config):
    """The A/B comparison of two policies on the benchmark's online results: one pair per workload (load x seed),
    both sides run on the same workload (its policy-free lower bound agrees), the values are the results' own,
    and every statistic is scipy's on those differences. Which policy wins is a benchmark figure, not asserted."""
    results = quick_run.results
    result = paired_comparison(results, "fifo", "srpt-cp", metric="avg_jct", scenario="online")
    online = results[results["scenario"] == "online"]
    assert result.n == len(quick_config.online.loads) * quick_config.seeds
    keys = ["load", "nodes", "seed"]
    assert sorted(map(tuple, result.pairs[keys].to_numpy().tolist())) == sorted(
        set(map(tuple, online[keys].to_numpy().tolist())))  # every online workload, once

    def value(policy, metric, row):
        sel = online[(online["policy"] == policy) & (online["metric"] == metric) & (online["load"] == row.load)
                     & (online["nodes"] == row.nodes) & (online["seed"] == row.seed)]
        assert len(sel) == 1
        return float(sel["value"].iloc[0])

    for row in result.pairs.itertuples():
        assert value("fifo", "avg_jct_lb", row) == value("srpt-cp", "avg_jct_lb", row)  # one workload
        assert (row.a, row.b) == (value("fifo", "avg_jct", row), value("srpt-cp", "avg_jct", row))
        assert row.diff == row.b - row.a
    diff = result.pairs["diff"].to_numpy()
    assert result.mean_diff == pytest.approx(diff.mean(), rel=1e-12, abs=1e-12)
    assert (result.mean_a, result.mean_b) == pytest.approx((result.pairs["a"].mean(), result.pairs["b"].mean()))
    if result.identical:  # (not so on the quick configuration: the two policies order tasks differently)
        assert result.p_wilcoxon == result.p_ttest == 1.0 and not result.significant
        return
    assert result.p_wilcoxon == pytest.approx(scipy_stats.wilcoxon(diff, zero_method="wilcox").pvalue, rel=1e-12)
    assert result.p_ttest == pytest.approx(scipy_stats.ttest_1samp(diff, 0.0).pvalue, rel=1e-12)
    low, high = scipy_stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=scipy_stats.sem(diff))
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-9, abs=1e-9)
    assert result.significant == (result.p_wilcoxon < 0.05)
    if result.significant:
        lower, higher = ("srpt-cp", "fifo") if result.mean_diff < 0 else ("fifo", "srpt-cp")
        assert result.verdict.startswith(f"{lower} has significantly lower avg_jct than {higher} (")
    else:
        assert result.verdict.startswith("no significant difference at alpha=0.05 (")


def test_mostly_zero_differences_are_handled():
    # fifo and job-fifo tie on every single workflow: the signed-rank test drops zero differences.
    rows = []
    for seed in range(6):
        for policy, value in (("a", 10.0), ("b", 10.0 + (seed == 3))):
            rows.append(("single:w", math.nan, 2, policy, seed, "makespan", value))
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    result = paired_comparison(df, "a", "b", metric="makespan")
    assert not result.identical and not result.significant
    assert 0 < result.p_wilcoxon <= 1 and 0 < result.p_ttest <= 1
    assert result.verdict.startswith("no significant difference")


def test_comparison_errors_name_the_problem(quick_run):
    with pytest.raises(ComparisonError, match="Unknown metric 'jct'.*avg_jct"):
        paired_comparison(quick_run.results, "fifo", "srpt-cp", metric="jct")
    with pytest.raises(ComparisonError, match="No results for policy 'random'"):
        paired_comparison(quick_run.results, "fifo", "random")
    with pytest.raises(ComparisonError, match="No results for scenario 'offline'"):
        paired_comparison(quick_run.results, "fifo", "srpt-cp", scenario="offline")

"""`orchestrator bench` and `orchestrator ab` through the real command line: files written, verdicts printed,
bad input rejected with a message that names it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.bench import (
    RESULT_COLUMNS,
    BenchConfigError,
    load_config,
    paired_comparison,
    paired_comparisons,
    run_benchmark,
)
from orchestrator.bench.report import format_value
from orchestrator.cli import app
from orchestrator.errors import OrchestratorError, PolicyError, SimulationError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_bench_quick_writes_results_summary_and_plots(runner, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("online, 2 nodes: avg_jct", "single workflow: makespan", "simulator throughput", "xfifo", "xLB"):
        assert name in result.output
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    assert not results.duplicated(subset=RESULT_COLUMNS[:-1]).any()
    parquet = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(parquet, results, check_dtype=False)
    summary = pd.read_csv(out / "summary.csv")
    assert {"mean", "ci_low", "ci_high", "ratio_to_baseline", "ratio_to_lb"} <= set(summary.columns)
    for png in ("online_vs_load.png", "single_makespan_vs_nodes.png"):
        assert (out / png).read_bytes()[:8] == PNG_SIGNATURE
    assert (out / "throughput.csv").exists() and (out / "tables.md").read_text().startswith("**online")


def test_bench_options_override_the_config(runner, tmp_path, trace_dir):
    # A folder holding a few WfCommons files stands in for any user trace collection.
    traces = tmp_path / "traces"
    traces.mkdir()
    for name in ("montage-chameleon-2mass-005d-001", "epigenomics-chameleon-hep-1seq-100k-001"):
        family = name.split("-")[0]
        shutil.copy(trace_dir / "wfcommons" / family / f"{name}.json.gz", traces)
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "--quick", "--traces", str(traces), "--out", str(out), "--policies",
                                 "fifo,srpt-cp", "--seeds", "2", "--loads", "0.7", "--jobs", "3", "--nodes", "1,3",
                                 "--workers", "2"])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert set(results["policy"]) == {"fifo", "srpt-cp"}
    assert set(results["seed"]) == {0, 1}
    assert set(results["load"].dropna()) == {0.7}
    assert set(results.loc[results["scenario"] != "online", "nodes"]) == {1, 3}
    assert set(results["scenario"]) == {"online", "single:montage-chameleon-2mass-005d-001",
                                        "single:epigenomics-chameleon-hep-1seq-100k-001"}


def test_bench_rejects_an_unknown_policy(runner, tmp_path):
    result = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path), "--policies", "fifo,fast"])
    assert isinstance(result.exception, PolicyError)
    assert "Unknown scheduling policy 'fast'; available: fifo, heft, job-fifo" in str(result.exception)


def test_bench_rejects_a_malformed_list(runner, tmp_path):
    result = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path), "--loads", "0.5,high"])
    assert isinstance(result.exception, BenchConfigError)
    assert "--loads '0.5,high': 'high' is not a number" in str(result.exception)


def test_the_installed_command_exits_2_with_the_message():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "bench", "--quick", "--policies", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Unknown scheduling policy 'nope'; available:" in proc.stderr


def test_ab_of_a_policy_with_itself_finds_no_difference(runner):
    result = runner.invoke(app, ["ab", "heft", "heft", "--quick", "--scenario", "online"])
    assert result.exit_code == 0, result.output
    assert "no significant difference at alpha=0.05" in result.output


def test_ab_prints_the_comparison_of_the_same_seeded_runs(runner):
    """`orchestrator ab` (two workers) prints the numbers and the verdict of the comparison computed here, in one
    process, from the same seeded runs: whichever policy wins, the command reports exactly that."""
    result = runner.invoke(app, ["ab", "fifo", "srpt-cp", "--quick", "--scenario", "online", "--workers", "2"])
    assert result.exit_code == 0, result.output
    config = load_config(quick=True).with_overrides(policies=["fifo", "srpt-cp"], workers=1)
    expected = paired_comparison(run_benchmark(config, scenarios="online").results, "fifo", "srpt-cp",
                                 metric="avg_jct", scenario="online")
    rows = _rows(result.output)
    assert rows["mean avg_jct, fifo"] == format_value(expected.mean_a)
    assert rows["mean avg_jct, srpt-cp"] == format_value(expected.mean_b)
    assert rows["mean difference B - A"] == format_value(expected.mean_diff)
    assert rows["95% CI of the difference"] == f"[{format_value(expected.ci_low)}, {format_value(expected.ci_high)}]"
    assert rows["Wilcoxon signed-rank p"] == f"{expected.p_wilcoxon:.3g}"
    assert rows["paired t-test p"] == f"{expected.p_ttest:.3g}"
    assert expected.verdict in " ".join(result.output.split())
    assert f"paired over {expected.n} workloads" in result.output


def _rows(output: str) -> dict[str, str]:
    """The label -> value rows of a printed two-column table."""
    return {m.group(1).strip(): m.group(2).strip() for m in re.finditer(r"│ ([^│]+?) +│ +([^│]+?) │", output)}


def test_ab_over_all_scenarios_runs_one_test_per_scenario(runner):
    result = runner.invoke(app, ["ab", "fifo", "srpt-cp", "--quick"])
    assert result.exit_code == 0, result.output
    config = load_config(quick=True).with_overrides(policies=["fifo", "srpt-cp"], workers=1)
    online, single = paired_comparisons(run_benchmark(config).results, "fifo", "srpt-cp", metric="avg_jct")
    assert f"A/B on avg_jct, scenario online: srpt-cp (B) vs fifo (A), paired over {online.n} workloads" \
        in " ".join(result.output.split())
    assert f"A/B on avg_jct, scenario single: srpt-cp (B) vs fifo (A), paired over {single.n} workloads" \
        in " ".join(result.output.split())
    assert result.output.count("Wilcoxon signed-rank p") == 2
    assert online.verdict in result.output and single.verdict in result.output


def test_ab_rejects_alpha_out_of_range_before_running(runner, monkeypatch):
    from orchestrator.bench import runner as bench_runner

    monkeypatch.setattr(bench_runner, "run_benchmark", _must_not_run)
    for alpha in ("1", "0", "-0.1", "nan"):
        result = runner.invoke(app, ["ab", "fifo", "srpt-cp", "--quick", "--alpha", alpha])
        assert isinstance(result.exception, BenchConfigError), result.output
        assert "the significance level must be between 0 and 1 (exclusive)" in str(result.exception)


def _must_not_run(*args, **kwargs):
    raise AssertionError("the benchmark ran before its options were checked")


def test_bench_rejects_an_unwritable_out_before_running(runner, monkeypatch, tmp_path):
    from orchestrator.bench import runner as bench_runner

    monkeypatch.setattr(bench_runner, "run_benchmark", _must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["bench", "--quick", "--out", str(blocker / "out")])
    assert isinstance(result.exception, OrchestratorError), result.output
    assert f"Cannot write to output folder '{blocker / 'out'}'" in str(result.exception)


def test_bench_always_runs_the_baseline(runner, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "--quick", "--scenario", "online", "--policies", "srpt-cp,heft",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: fifo is not in --policies; it is run as well, as the baseline" in result.output
    results = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(results["policy"])) == ["fifo", "srpt-cp", "heft"]
    summary = pd.read_csv(out / "summary.csv")
    ratios = summary[(summary["policy"] == "srpt-cp") & (summary["metric"] == "avg_jct")]["ratio_to_baseline"]
    assert len(ratios) > 0 and ratios.notna().all() and (ratios != 1.0).any()
    assert "xfifo" in result.output


def test_bench_with_one_seed_says_there_is_no_interval(runner, tmp_path):
    result = runner.invoke(app, ["bench", "--quick", "--seeds", "1", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "mean of 1 seed (no confidence interval: it needs 2 or more seeds)" in text
    assert "95% CI" not in text and "±" not in text


def test_bench_prints_workflow_names_with_brackets_as_written(runner, tmp_path, trace_dir):
    traces = tmp_path / "traces"
    traces.mkdir()
    src = trace_dir / "wfcommons" / "montage" / "montage-chameleon-2mass-005d-001.json.gz"
    shutil.copy(src, traces / "montage-[red]-001.json.gz")
    result = runner.invoke(app, ["bench", "--quick", "--scenario", "single", "--traces", str(traces), "--out",
                                 str(tmp_path / "b"), "--policies", "fifo,srpt-cp"])
    assert result.exit_code == 0, result.output
    assert "montage-[red]-001" in result.output


def test_bench_over_a_trace_without_work_is_a_simulation_error(runner, tmp_path):
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "idle.json").write_text(json.dumps({"name": "x", "schemaVersion": "1.4", "workflow": {"tasks": [
        {"name": "a_ID1", "parents": [], "runtimeInSeconds": 0, "files": []}]}}))
    result = runner.invoke(app, ["bench", "--quick", "--traces", str(traces), "--out", str(tmp_path / "b")])
    assert isinstance(result.exception, SimulationError), result.exception
    assert "mean cpu work is 0 cpu-seconds" in str(result.exception)


def test_bench_max_tasks_option_limits_the_traces_it_loads(runner, tmp_path, trace_dir):
    from orchestrator.errors import WorkflowTooLargeError
    from orchestrator.model import set_limits

    traces = tmp_path / "traces"
    traces.mkdir()
    shutil.copy(trace_dir / "wfcommons" / "montage" / "montage-chameleon-2mass-005d-001.json.gz", traces)
    try:
        result = runner.invoke(app, ["bench", "--quick", "--traces", str(traces), "--out", str(tmp_path / "b"),
                                     "--max-tasks", "10"])
    finally:
        set_limits(None)
    assert isinstance(result.exception, WorkflowTooLargeError)
    assert "above the limit of 10; split it or raise the limit (--max-tasks" in str(result.exception)


def test_ab_rejects_an_unknown_metric_before_running(runner):
    from orchestrator.bench import ComparisonError

    result = runner.invoke(app, ["ab", "fifo", "srpt-cp", "--quick", "--metric", "jct"])
    assert isinstance(result.exception, ComparisonError)
    assert "Unknown metric 'jct'; the results have avg_jct" in str(result.exception)

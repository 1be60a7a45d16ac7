"""`orchestrator bench` and `orchestrator ab` through the real command line: files written, verdicts printed,
bad input rejected with a message that names it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.bench import RESULT_COLUMNS, BenchConfigError
from orchestrator.cli import app
from orchestrator.errors import PolicyError

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


def test_ab_finds_srpt_cp_better_than_fifo_online(runner):
    result = runner.invoke(app, ["ab", "fifo", "srpt-cp", "--quick", "--scenario", "online", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "srpt-cp has significantly lower avg_jct than fifo" in result.output
    for line in ("Wilcoxon signed-rank p", "paired t-test p", "95% CI of the difference", "relative change"):
        assert line in result.output


def test_ab_rejects_an_unknown_metric_before_running(runner):
    from orchestrator.bench import ComparisonError

    result = runner.invoke(app, ["ab", "fifo", "srpt-cp", "--quick", "--metric", "jct"])
    assert isinstance(result.exception, ComparisonError)
    assert "Unknown metric 'jct'; the results have avg_jct" in str(result.exception)

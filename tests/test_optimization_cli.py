"""`orchestrator analyze` and `orchestrator optimize` end to end: tables and JSON, cluster options, a run read from
the store, `--apply` writing a valid faster workflow and recording it in a SQLite store, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.commands.optimize import ClusterSpecError, optimized_path, parse_cluster
from orchestrator.loaders import load_workflow
from orchestrator.optimization.durations import AnalysisInputError
from orchestrator.sim.cluster import GiB

runner = CliRunner()
EXAMPLE = "examples/analysis.yaml"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


@pytest.fixture
def example(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / EXAMPLE
    dst = tmp_path / "pipeline.yaml"
    dst.write_text(src.read_text())
    return dst


def test_analyze_prints_the_distribution_bottlenecks_and_plan(example):
    r = invoke("analyze", example, "--nodes", "2", "--deadline", "900")
    assert r.exit_code == 0, r.output
    for text in ("Completion time", "Bottleneck tasks", "Bottleneck categories", "Parallel plan",
                 "Expected makespan by node count", "nodes: beyond", "deadline:", "analysed in"):
        assert text in r.output, text
    assert "│ train" in r.output and "on the critical path in" in r.output


def test_analyze_json_and_the_default_cluster_is_said(example):
    r = invoke("analyze", example, "--json", "--per-task", "--samples", "200", "--budget", "0")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["cluster_source"] == "default" and d["makespan"]["samples"] == 200
    assert d["task_bottlenecks"][0]["name"] == "train"
    assert len(d["per_task"]) == 28
    table = invoke("analyze", example)
    assert "no cluster given: the tight cluster" in table.output


def test_analyze_unreachable_deadline(example):
    r = invoke("analyze", example, "--nodes", "4", "--deadline", "60", "--json")
    d = json.loads(r.output)
    assert d["plan"]["deadline_nodes"] is None
    assert d["plan"]["deadline_note"].startswith("not reachable: the critical path alone is")


def test_cluster_specs():
    c = parse_cluster("2xm5.xlarge,1xr5.2xlarge", None, None, None)
    assert [n.cpus for n in c.nodes] == [4, 4, 8] and c.nodes[2].memory == 64 * GiB
    c = parse_cluster("3x8:32", None, None, None)
    assert len(c) == 3 and c.nodes[0].cpus == 8 and c.nodes[0].memory == 32 * GiB
    assert parse_cluster(None, 5, 2, 8).total_cpus == 10
    assert parse_cluster(None, None, None, None) is None
    with pytest.raises(ClusterSpecError, match="unknown node type 'm9.huge'; known: c5.2xlarge"):
        parse_cluster("2xm9.huge", None, None, None)
    with pytest.raises(ClusterSpecError, match="either --cluster or --nodes"):
        parse_cluster("2x4:16", 3, None, None)
    with pytest.raises(ClusterSpecError, match="COUNTxCPUS:MEMORY_GIB"):
        parse_cluster("2x4:zero", None, None, None)


def test_cluster_file(tmp_path, example):
    f = tmp_path / "nodes.yaml"
    f.write_text("nodes:\n  - {cpus: 8, memory_gib: 32, count: 2}\n  - {cpus: 16, memory_gib: 64}\n")
    c = parse_cluster(str(f), None, None, None)
    assert [n.cpus for n in c.nodes] == [8, 8, 16]
    r = invoke("analyze", example, "--cluster", f, "--json")
    assert json.loads(r.output)["cluster"] == "2 x (8 cpus, 32 GiB) + 1 x (16 cpus, 64 GiB)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {cpus: 8}\n")
    with pytest.raises(ClusterSpecError, match="node #1 has cpus=8, memory_gib=0"):
        parse_cluster(str(bad), None, None, None)


def test_analyze_errors_are_named(tmp_path, example):
    none = tmp_path / "none.yaml"
    none.write_text("name: none\ntasks:\n  - {id: a}\n  - {id: b, depends_on: [a]}\n")
    r = invoke("analyze", none)
    assert isinstance(r.exception, AnalysisInputError) and "no runtime is known" in str(r.exception)
    r = invoke("analyze", example, "--nodes", "2", "--node-cpus", "1")
    assert isinstance(r.exception, AnalysisInputError) and "'train' (2 cpus" in str(r.exception)
    r = invoke("analyze")
    assert "give a workflow file or --run" in str(r.exception)
    # through the real entry point: one line, exit code 2
    out = subprocess.run([sys.executable, "-m", "orchestrator", "analyze", str(none)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "error:" in out.stderr and "no runtime is known" in out.stderr
    assert "Traceback" not in out.stderr


def test_optimize_apply_writes_a_valid_faster_workflow_and_records_it(example, tmp_path):
    from orchestrator.store import Store

    url = f"sqlite:///{tmp_path / 'opt.db'}"
    r = invoke("optimize", example, "--nodes", "2", "--samples", "200", "--apply", "--db-url", url)
    assert r.exit_code == 0, r.output
    assert "Recommendations, each measured in the simulator" in r.output and "applied #1" in r.output
    written = optimized_path(example)
    assert written.name == "pipeline.optimized.yaml" and written.exists()
    changed = load_workflow(written)
    assert "optimizations" in changed.metadata and changed.name == "nightly-pipeline"
    with Store.open(url) as store:
        rows = store.optimizations(workflow="nightly-pipeline")
    assert len(rows) == 1
    row = rows[0]
    assert row.predicted_gain > 0 and row.verified_gain > 0
    assert row.params["written"] == str(written) and row.params["mean_after"] < row.params["mean_before"]
    # the written workflow is measured faster by the analysis too
    before = json.loads(invoke("analyze", example, "--nodes", "2", "--json", "--budget", "0",
                               "--samples", "400").output)
    after = json.loads(invoke("analyze", written, "--nodes", "2", "--json", "--budget", "0",
                              "--samples", "400").output)
    assert after["makespan"]["mean"] < before["makespan"]["mean"]


def test_optimize_json_and_out(example, tmp_path):
    out = tmp_path / "elsewhere" / "x.yaml"
    r = invoke("optimize", example, "--nodes", "2", "--samples", "100", "--json", "--apply", "--pick", "2",
               "--out", out, "--data-dir", tmp_path / "store")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["applied"]["written"] == str(out) and out.exists()
    assert d["applied"]["kind"] == d["recommendations"][1]["kind"]
    assert all(x["gain"] > 0 for x in d["recommendations"])


def test_optimize_with_nothing_to_offer_refuses_to_apply(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("name: one\ntasks:\n  - {id: a, duration: 0}\n")
    r = invoke("optimize", one, "--apply", "--data-dir", tmp_path / "store")
    assert "nothing to apply" in str(r.exception)


def test_analyze_a_run_from_the_store(tmp_path, example):
    from orchestrator.states import TaskStatus as TS
    from orchestrator.store import Store
    from orchestrator.store.records import TaskChange

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    wf = load_workflow(example)
    with Store.open(url) as store:
        run = store.create_workflow(wf, "srpt-cp")
        fetch = [t.id for t in wf.tasks if t.id.startswith("fetch")]
        store.apply([TaskChange(run, t, TS.READY) for t in fetch])
        store.apply([TaskChange(run, t, TS.RUNNING, attempt=1) for t in fetch])
        store.apply([TaskChange(run, t, TS.SUCCEEDED) for t in fetch[:4]])
    r = invoke("analyze", "--run", run, "--db-url", url, "--nodes", "2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["live"]["done"] == 4 and d["live"]["running"] == 2 and d["tasks_left"] == 24
    full = json.loads(invoke("analyze", example, "--nodes", "2", "--json").output)
    assert d["makespan"]["mean"] < full["makespan"]["mean"]
    r = invoke("analyze", "--run", "ghost-run", "--db-url", url)
    assert "no workflow run 'ghost-run'" in str(r.exception)

"""The command line end to end: run, status, list, logs against a real Ray and store; clear errors for bad input."""

from __future__ import annotations

import json
import re

import pytest
import ray
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import OrchestratorError

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result


def test_validate_and_analyse(trace_dir):
    path = trace_dir / "wfcommons/montage/montage-chameleon-2mass-01d-001.json.gz"
    r = invoke("validate", path)
    assert r.exit_code == 0 and "103 tasks" in r.output
    r = invoke("analyse", path)
    assert r.exit_code == 0 and "critical path" in r.output


@pytest.mark.parametrize("content,needle", [
    ("name: c\ntasks:\n  - {id: a, depends_on: [b]}\n  - {id: b, depends_on: [a]}\n", "cycle"),
    ("name: u\ntasks:\n  - {id: a, depends_on: [zz]}\n", "unknown task 'zz'"),
    ("name: r\ntasks:\n  - {id: a, resources: {cpus: -2}}\n", "cpus=-2"),
])
def test_bad_workflow_files_fail_before_anything_runs(tmp_path, content, needle):
    path = tmp_path / "wf.yaml"
    path.write_text(content)
    r = invoke("run", path, "--data-dir", tmp_path / "state")
    assert r.exit_code != 0
    assert isinstance(r.exception, OrchestratorError) and needle in str(r.exception)
    assert not (tmp_path / "state").exists()  # nothing was started or recorded


def test_unreachable_database_is_named(tmp_path):
    r = invoke("run", "examples/etl.yaml", "--db-url", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    assert r.exit_code != 0
    msg = str(r.exception)
    assert "127.0.0.1:1" in msg and "nowhere" in msg


def test_run_status_list_logs_end_to_end(ray_cluster, tmp_path):
    data = tmp_path / "state"
    try:
        r = invoke("run", "examples/etl.yaml", "--data-dir", data)
        assert r.exit_code == 0, r.output
        run_id = re.search(r"run (etl-[0-9a-f]+)", r.output).group(1)
        assert f"run {run_id}: succeeded" in r.output
        r = invoke("status", run_id, "--data-dir", data)
        assert r.exit_code == 0 and "status=succeeded" in r.output and "succeeded=9" in r.output
        r = invoke("list", "--data-dir", data)
        assert r.exit_code == 0 and run_id in r.output
        r = invoke("logs", run_id, "--task", "report", "--data-dir", data)
        assert r.exit_code == 0 and "rows, mean" in r.output  # the task's captured stdout
        r = invoke("logs", run_id, "--json", "--data-dir", data)
        lines = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
        assert lines[0]["type"] == "workflow.submitted" and lines[-1]["type"] == "workflow.succeeded"
        assert all(x["run_id"] == run_id for x in lines)
        r = invoke("status", "no-such-run", "--data-dir", data)
        assert r.exit_code != 0 and "no-such-run" in str(r.exception)
    finally:
        try:
            ray.kill(ray.get_actor("orchestrator", namespace="orchestrator"))
        except ValueError:
            pass

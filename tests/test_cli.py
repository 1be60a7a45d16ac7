"""The command line end to end: run, status, list, logs against a real Ray and store; clear errors for bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import ray
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.dag import analyse, dag_arrays
from orchestrator.errors import OrchestratorError
from orchestrator.loaders import load_workflow

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result


def test_validate_and_analyse(trace_dir):
    path = trace_dir / "wfcommons/montage/montage-chameleon-2mass-01d-001.json.gz"
    r = invoke("validate", path)
    assert r.exit_code == 0 and "ok montage-chameleon-2mass-01d-001: 103 tasks" in r.output
    r = invoke("analyse", path)
    assert r.exit_code == 0
    wf = load_workflow(path)
    a = analyse(dag_arrays(wf))
    rows = {m.group(1).strip(): m.group(2) for m in re.finditer(r"│ (.+?) +│ +(\S+) │", r.output)}
    assert rows["tasks"] == "103" and rows["levels"] == str(a.num_levels)
    assert rows["critical path (s)"] == f"{a.critical_path_length:.1f}"
    assert rows["total work (cpu-s)"] == f"{a.total_work:.1f}"
    assert float(rows["critical path (s)"]) > 0 and int(rows["critical path tasks"]) == len(a.critical_path)




@pytest.mark.parametrize("content,needle", [
    ("name: c\ntasks:\n  - {id: a, depends_on: [b]}\n  - {id: b, depends_on: [a]}\n",
     "Workflow 'c' has a dependency cycle: "),
    ("name: u\ntasks:\n  - {id: a, depends_on: [zz]}\n", "Task 'a' depends on unknown task 'zz'"),
    ("name: r\ntasks:\n  - {id: a, resources: {memory: 1EB}}\n",
     "Task 'a' requests memory=888.2 PiB (1000000000000000000 bytes), above the limit of 16 TiB; lower the request "
     "or raise the limit"),
    ("name: d\ntasks:\n  - id: a\n    id: b\n", "line 4: key 'id' is given twice in one mapping (first at line 3)"),
    ("name: m\ntasks:\n  - {id: 'a[red]b', depends_on: ['x[/bold]']}\n",
     "Task 'a[red]b' depends on unknown task 'x[/bold]'"),
])
def test_validate_exits_2_with_the_problem_on_one_line(tmp_path, cli_main, content, needle):
    path = tmp_path / "wf.yaml"
    path.write_text(content)
    code, out, err = cli_main("validate", path)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and needle in err  # brackets printed as written, never as markup
    assert err.count("\n") == 1  # not wrapped at 80 columns


def test_validate_max_tasks_option_and_environment(tmp_path, cli_main, monkeypatch):
    path = tmp_path / "w.yaml"
    path.write_text("name: w\ntasks:\n" + "".join(f"  - {{id: t{i}}}\n" for i in range(5)))
    code, _, err = cli_main("validate", path, "--max-tasks", "4")
    assert code == 2 and "Workflow 'w' has 5 tasks, above the limit of 4; split it or raise the limit " \
                          "(--max-tasks N on the command line, or the environment variable ORCHESTRATOR_MAX_TASKS=N)" in err
    code, out, _ = cli_main("validate", path, "--max-tasks", "5")
    assert code == 0 and "ok w: 5 tasks" in out
    monkeypatch.setenv("ORCHESTRATOR_MAX_TASKS", "2")
    code, _, err = cli_main("validate", path)
    assert code == 2 and "5 tasks, above the limit of 2" in err
    monkeypatch.setenv("ORCHESTRATOR_MAX_TASKS", "two")
    code, _, err = cli_main("validate", path)
    assert code == 2 and "ORCHESTRATOR_MAX_TASKS='two' is not a whole number of tasks" in err


def test_markup_characters_in_names_are_printed_as_written(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"name": "[bold]w[/bold] [red]", "tasks": [
        {"id": "a[x]", "duration": 2.0}, {"id": "[b]", "depends_on": ["a[x]"], "duration": 3.0}]}))
    r = invoke("validate", path)
    assert r.exit_code == 0, r.output
    assert "ok [bold]w[/bold] [red]: 2 tasks" in r.output
    r = invoke("analyse", path)
    assert r.exit_code == 0, r.output
    assert "[bold]w[/bold] [red]" in r.output and "5.0" in r.output  # critical path a[x] -> [b]


def test_the_installed_command_prints_markup_in_errors_literally(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"name": "m", "tasks": [{"id": "a[/]"}, {"id": "b", "depends_on": ["x[/bold]"]}]}))
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "validate", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: Invalid workflow in ") and "task id 'a[/]' must be" in proc.stderr
    assert "Traceback" not in proc.stderr


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
    # Nothing was started and no run recorded: only the refusal itself, as a workflow.rejected event.
    from orchestrator.store import Store

    store = Store.open(None, data_dir=tmp_path / "state")
    assert store.list_workflows() == []
    assert [e.type for e in store.events()] == ["workflow.rejected"]
    assert needle in store.rejections()[0].payload["error"]


def test_unreachable_database_is_named(tmp_path):
    from orchestrator.errors import StoreError

    r = invoke("run", "examples/etl.yaml", "--db-url", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    assert r.exit_code != 0
    assert isinstance(r.exception, StoreError)  # the project's own error, raised before any Ray starts
    msg = str(r.exception)
    assert msg.startswith("Cannot open the state store at 'postgresql+psycopg://nobody@127.0.0.1:1/nowhere'")
    assert "Connection refused" in msg and "check that the server is running" in msg


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


def test_a_bad_setting_from_the_environment_exits_2_naming_it(tmp_path, cli_main, monkeypatch):
    """A runtime setting read from the environment is checked before Ray starts: one line naming the field."""
    path = tmp_path / "w.yaml"
    path.write_text("name: w\ntasks:\n  - {id: a}\n")
    monkeypatch.setenv("ORCHESTRATOR_MEMORY_REQUESTS", "auto")
    code, out, err = cli_main("run", path, "--data-dir", tmp_path / "d")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: invalid RuntimeConfig: memory_requests:") and "'sized'" in err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())  # nothing started or recorded

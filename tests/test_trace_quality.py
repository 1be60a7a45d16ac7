"""Recorded executions that are not measurements stay out of prediction: a runtime of exactly 0 (the bundled run
montage-chameleon-2mass-02d-001 records one for mAdd, mViewer and mImgtbl, with files but no avgCPU, memory or
machine) is a recording failure. `build_table` leaves such rows out, counts and logs them; the loader keeps them for
the simulator, which replays them as instant tasks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from orchestrator.loaders import default_trace_dir, load_traces, load_workflow
from orchestrator.prediction.features import RECORDING_FAILURE, build_table, not_observed

BAD_RUN = "montage-chameleon-2mass-02d-001"


@pytest.fixture(scope="module")
def workflows():
    return load_traces(default_trace_dir())


def test_the_table_has_no_zero_runtime_row_and_reports_what_it_dropped(workflows, caplog):
    with caplog.at_level(logging.WARNING, logger="orchestrator.prediction"):
        table = build_table(workflows)
    assert len(table) and np.all(table.runtime > 0) and np.all(np.isfinite(table.log_runtime))
    zero = [(w.name, t.category) for w in workflows for t in w.tasks
            if t.observed is not None and t.observed.runtime == 0]
    assert zero and {name for name, _ in zero} == {BAD_RUN}
    assert {c for _, c in zero} == {"mAdd", "mViewer", "mImgtbl"}
    assert table.dropped == {RECORDING_FAILURE: len(zero)}
    observed = sum(t.observed is not None for w in workflows for t in w.tasks)
    assert len(table) + len(zero) == observed  # nothing else is left out
    # the ids of the dropped tasks are not in the table; every other task of the run is
    bad = table.runs.index(BAD_RUN)
    kept = {tid for r, tid in zip(table.run, table.task_ids) if r == bad}
    wf = next(w for w in workflows if w.name == BAD_RUN)
    assert kept == {t.id for t in wf.tasks if t.observed.runtime > 0}
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"left out {len(zero)} recorded executions" in message and BAD_RUN in message
    assert "mAdd 3" in message and "runtime 0 recorded" in message


def test_not_observed_names_the_reason():
    wf = load_workflow(default_trace_dir() / "wfcommons" / "montage" / f"{BAD_RUN}.json.gz")
    reasons = {t.category: not_observed(t) for t in wf.tasks if t.observed.runtime == 0}
    assert set(reasons.values()) == {RECORDING_FAILURE}
    assert all(not_observed(t) is None for t in wf.tasks if t.observed.runtime > 0)


def test_the_loader_keeps_zero_runtimes_for_the_simulator():
    """The replay's documented behaviour: the task stays in the DAG with duration 0."""
    wf = load_workflow(default_trace_dir() / "wfcommons" / "montage" / f"{BAD_RUN}.json.gz")
    zero = [t for t in wf.tasks if t.observed.runtime == 0]
    assert len(zero) == 10 and all(t.duration == 0 and t.observed.avg_cpu is None for t in zero)
    assert any(t.depends_on for t in zero)  # still wired into the DAG


def test_the_bundled_traces_have_no_other_defect():
    """Read as written: every runtime a finite number >= 0 (0 only in BAD_RUN's 10 tasks), avgCPU finite, > 0 and
    within the cores of the machine that ran the task, memory (when recorded) > 0."""
    import gzip
    import json
    import math

    zero = 0
    for path in sorted((default_trace_dir() / "wfcommons").glob("*/*.json.gz")):
        wf = json.loads(gzip.decompress(path.read_bytes()))["workflow"]
        cores = {m.get("nodeName"): (m.get("cpu") or {}).get("count") for m in wf.get("machines") or []}
        for t in wf["tasks"]:
            where = (path.name, t["name"])
            runtime = t["runtimeInSeconds"]
            assert isinstance(runtime, (int, float)) and math.isfinite(runtime) and runtime >= 0, where
            if runtime == 0:
                zero += 1
                assert path.name.startswith(BAD_RUN) and "avgCPU" not in t, where
                continue
            cpu = t["avgCPU"]
            assert math.isfinite(cpu) and cpu > 0, where
            assert cores.get(t.get("machine")) and cpu / 100 <= cores[t["machine"]], where
            for key in ("memoryInBytes", "memory"):
                assert key not in t or t[key] > 0, where
    assert zero == 10


@pytest.mark.parametrize("version", ["1.4", "1.5"])
def test_executed_at_is_read_where_each_schema_puts_it(tmp_path, version):
    """1.4: workflow.executedAt; 1.5 and later: workflow.execution.executedAt. The loader keeps it as written
    (None when absent: `predict tasks` then says it cannot tell which runs came before)."""
    import json

    from orchestrator.prediction.features import executed_at

    task = {"id": "ID1", "runtimeInSeconds": 3.0, "avgCPU": 99.0}
    if version == "1.4":
        wf = {"executedAt": "2021-03-23T06:04:36Z", "tasks": [{"name": "mAdd_ID1", "parents": [], "files": [], **task}]}
    else:
        wf = {"specification": {"tasks": [{"name": "mAdd_ID1", "id": "ID1", "parents": [], "children": []}],
                                "files": []},
              "execution": {"executedAt": "2021-03-23T06:04:36Z", "makespanInSeconds": 3, "tasks": [task]}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"name": "x", "schemaVersion": version, "createdAt": "2022-01-01T00:00:00Z",
                                "workflow": wf}))
    w = load_workflow(path)
    assert w.metadata["executed_at"] == "2021-03-23T06:04:36Z"
    assert executed_at(w) == 1616479476.0  # the run's date, not the file's createdAt
    (wf.get("execution") or wf).pop("executedAt")
    path.write_text(json.dumps({"name": "x", "schemaVersion": version, "workflow": wf}))
    assert load_workflow(path).metadata["executed_at"] is None and executed_at(load_workflow(path)) == 0.0

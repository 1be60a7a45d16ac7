"""The workflow model and loaders: valid files load; each kind of bad input gets its own clear error."""

from __future__ import annotations

import gzip
import json

import pytest

from orchestrator.errors import (
    CycleError,
    DuplicateTaskError,
    LoaderError,
    ResourceRequestError,
    UnknownTaskError,
    WorkflowTooLargeError,
)
from orchestrator.loaders import find_trace_files, load_workflow, parse_bytes, workflow_from_dict
from orchestrator.model import Limits, Workflow, get_limits, set_limits


def _wf(tasks, **kw):
    return workflow_from_dict({"name": "t", "tasks": tasks, **kw})


def test_yaml_workflow_loads_with_units(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: etl\n"
        "policy: srpt-cp\n"
        "tasks:\n"
        "  - id: extract\n"
        "    entrypoint: examples.etl:extract\n"
        "    resources: {cpus: 2, memory: 512MiB}\n"
        "  - id: load\n"
        "    entrypoint: echo done\n"
        "    depends_on: extract\n"
        "    retries: 3\n"
        "    timeout: 10\n"
    )
    wf = load_workflow(path)
    assert wf.name == "etl" and wf.policy == "srpt-cp"
    assert wf.tasks[0].resources.memory == 512 * 1024**2
    assert wf.tasks[0].entrypoint_kind == "python"
    assert wf.tasks[1].entrypoint_kind == "shell"
    assert wf.tasks[1].depends_on == ["extract"]


def test_json_roundtrip(tmp_path):
    wf = _wf([{"id": "a"}, {"id": "b", "depends_on": ["a"]}])
    path = tmp_path / "wf.json"
    path.write_text(wf.model_dump_json())
    assert load_workflow(path) == wf


def test_cycle_is_printed():
    with pytest.raises(CycleError) as err:
        _wf([{"id": "a", "depends_on": ["c"]}, {"id": "b", "depends_on": ["a"]}, {"id": "c", "depends_on": ["b"]},
             {"id": "d"}])
    msg = str(err.value)
    assert "cycle" in msg
    # The printed cycle is a closed walk over exactly a, b, c.
    names = msg.split(": ", 1)[1].split(" -> ")
    assert names[0] == names[-1] and set(names) == {"a", "b", "c"}


def test_self_dependency_is_a_cycle():
    with pytest.raises(CycleError, match="a -> a"):
        _wf([{"id": "a", "depends_on": ["a"]}])


def test_unknown_dependency_named():
    with pytest.raises(UnknownTaskError, match="Task 'b' depends on unknown task 'x'"):
        _wf([{"id": "a"}, {"id": "b", "depends_on": ["x"]}])


def test_duplicate_id_named():
    with pytest.raises(DuplicateTaskError, match="defines task 'a' twice"):
        _wf([{"id": "a"}, {"id": "a"}])


@pytest.mark.parametrize("resources,needle", [
    ({"cpus": -1}, "cpus=-1"),
    ({"cpus": 1e9}, "above the limit"),
    ({"memory": "-5GB"}, "memory=-5000000000"),
    ({"memory": "100TiB"}, "above the limit"),
    ({"gpus": float("nan")}, "gpus=nan"),
])
def test_bad_resources_named(resources, needle):
    with pytest.raises(ResourceRequestError, match=needle.replace("(", r"\(")):
        _wf([{"id": "a", "resources": resources}])


def test_bad_retries_and_timeout():
    with pytest.raises(ResourceRequestError, match="retries=-1"):
        _wf([{"id": "a", "retries": -1}])
    with pytest.raises(ResourceRequestError, match="timeout=0"):
        _wf([{"id": "a", "timeout": 0}])


def test_bad_memory_unit():
    with pytest.raises(LoaderError, match="not a size"):
        _wf([{"id": "a", "resources": {"memory": "12 parsecs"}}])
    assert parse_bytes("1.5GiB") == int(1.5 * 1024**3)


def test_workflow_larger_than_limit():
    old = get_limits()
    set_limits(Limits(max_tasks=10))
    try:
        with pytest.raises(WorkflowTooLargeError, match="11 tasks, above the limit of 10"):
            _wf([{"id": f"t{i}"} for i in range(11)])
    finally:
        set_limits(old)


def test_unknown_field_and_wrong_type_named():
    with pytest.raises(LoaderError, match="tasks.0.colour"):
        _wf([{"id": "a", "colour": "red"}])
    with pytest.raises(LoaderError, match="'tasks' must be a list"):
        workflow_from_dict({"name": "x", "tasks": "a,b"})


def test_empty_workflow_rejected():
    with pytest.raises(UnknownTaskError, match="has no tasks"):
        Workflow(name="x", tasks=[])


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(LoaderError, match="does not exist"):
        load_workflow(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [\n")
    with pytest.raises(LoaderError, match="Cannot parse"):
        load_workflow(bad)
    top = tmp_path / "list.json"
    top.write_text("[1, 2]")
    with pytest.raises(LoaderError, match="expected a mapping"):
        load_workflow(top)


def test_every_bundled_trace_loads(trace_dir):
    files = find_trace_files(trace_dir)
    assert len(files) == 73
    wf = load_workflow(files[0])
    assert wf.family and all(t.duration is not None for t in wf.tasks)
    assert all(t.resources.cpus >= 1 and t.resources.memory > 0 for t in wf.tasks)


def _to_schema_15(data: dict) -> dict:
    """Rewrite a 1.4 instance in the 1.5 layout (specification + execution, parents by id)."""
    tasks = data["workflow"]["tasks"]
    by_name = {t["name"]: t["id"] for t in tasks}
    files = {}
    spec, execution = [], []
    for t in tasks:
        ins = [f["name"] for f in t["files"] if f["link"] == "input"]
        outs = [f["name"] for f in t["files"] if f["link"] == "output"]
        for f in t["files"]:
            files[f["name"]] = f["sizeInBytes"]
        spec.append({"name": t["category"], "id": t["id"], "parents": [by_name[p] for p in t["parents"]],
                     "children": [by_name[c] for c in t["children"]], "inputFiles": ins, "outputFiles": outs})
        execution.append({"id": t["id"], "runtimeInSeconds": t["runtimeInSeconds"], "avgCPU": t.get("avgCPU"),
                          "memoryInBytes": t.get("memoryInBytes"), "machines": [t.get("machine")]})
    return {"name": data["name"], "schemaVersion": "1.5", "workflow": {
        "specification": {"tasks": spec, "files": [{"id": k, "sizeInBytes": v} for k, v in files.items()]},
        "execution": {"makespanInSeconds": data["workflow"]["makespanInSeconds"], "executedAt": "x",
                      "tasks": execution}}}


def test_wfcommons_14_and_15_agree(trace_dir, tmp_path):
    src = next(p for p in find_trace_files(trace_dir) if "montage" in p.name)
    data = json.loads(gzip.decompress(src.read_bytes()))
    wf14 = load_workflow(src)
    path15 = tmp_path / "montage-15.json"
    path15.write_text(json.dumps(_to_schema_15(data)))
    wf15 = load_workflow(path15)
    assert len(wf14.tasks) == len(wf15.tasks)
    d14 = {t.id.rsplit("_", 1)[-1]: t for t in wf14.tasks}
    for t in wf15.tasks:
        other = d14[t.id]
        assert t.category == other.category
        assert t.duration == other.duration
        assert t.input_bytes == other.input_bytes and t.output_bytes == other.output_bytes
        assert t.resources == other.resources
        assert sorted(p for p in t.depends_on) == sorted(p.rsplit("_", 1)[-1] for p in other.depends_on)


def test_malformed_wfcommons_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"name": "x", "schemaVersion": "1.4", "workflow": {"tasks": [
        {"name": "a_ID1", "parents": [], "runtimeInSeconds": -3, "files": []}]}}))
    with pytest.raises(LoaderError, match="runtimeInSeconds=-3"):
        load_workflow(path)
    path.write_text(json.dumps({"name": "x", "schemaVersion": "1.4", "workflow": {"tasks": [
        {"name": "a_ID1", "parents": ["zz"], "runtimeInSeconds": 1, "files": []}]}}))
    with pytest.raises(UnknownTaskError, match="unknown task 'zz'"):
        load_workflow(path)

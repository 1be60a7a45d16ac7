"""The workflow model and loaders: valid files load; each kind of bad input gets its own clear error."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from orchestrator.errors import (
    CycleError,
    DuplicateTaskError,
    LoaderError,
    ResourceRequestError,
    UnknownTaskError,
    WorkflowTooLargeError,
)
from orchestrator.loaders import (
    find_trace_files,
    load_traces,
    load_workflow,
    parse_bytes,
    trace_names,
    workflow_from_dict,
)
from orchestrator.model import MAX_TASKS_ENV, Limits, LimitsError, Workflow, format_bytes, get_limits, set_limits


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
    set_limits(Limits(max_tasks=10))
    try:
        assert get_limits().max_tasks == 10
        with pytest.raises(WorkflowTooLargeError, match="11 tasks, above the limit of 10"):
            _wf([{"id": f"t{i}"} for i in range(11)])
        assert len(_wf([{"id": f"t{i}"} for i in range(10)]).tasks) == 10
    finally:
        set_limits(None)  # back to the defaults and the environment
    assert get_limits() == Limits()


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
    workflows = load_traces(trace_dir)
    assert len(workflows) == 73
    assert len({wf.name for wf in workflows}) == 73
    assert {wf.family for wf in workflows} == {"1000genome", "cycles", "epigenomics", "montage"}
    for path, wf in zip(files, workflows):
        assert wf.metadata["source"] == str(path) and wf.metadata["schema_version"] == "1.4"
        assert path.name.startswith(wf.name) and path.parent.name == wf.family
        assert all(t.duration is not None and t.duration >= 0 for t in wf.tasks)
        assert all(t.resources.cpus >= 1 and t.resources.memory > 0 for t in wf.tasks)
        assert wf.total_work() > 0


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


# --- WfCommons: files that must be rejected, each with the file and the task named -------------------------------


def _wf15(tasks=None, execution=None, files=None, version="1.5") -> dict:
    """A small WfCommons 1.5 instance: ID1 -> ID2 (overridable parts)."""
    tasks = tasks if tasks is not None else [
        {"name": "mProject_ID1", "id": "ID1", "parents": [], "children": ["ID2"], "inputFiles": ["f1"],
         "outputFiles": ["f2"]},
        {"name": "mAdd_ID2", "id": "ID2", "parents": ["ID1"], "children": [], "inputFiles": ["f2"],
         "outputFiles": []},
    ]
    files = files if files is not None else [{"id": "f1", "sizeInBytes": 1000}, {"id": "f2", "sizeInBytes": 2000}]
    execution = execution if execution is not None else {"makespanInSeconds": 10, "tasks": [
        {"id": "ID1", "runtimeInSeconds": 3.5, "avgCPU": 150, "memoryInBytes": 10**9, "machines": ["m1"]},
        {"id": "ID2", "runtimeInSeconds": 2.0, "avgCPU": 90}]}
    workflow = {"specification": {"tasks": tasks, "files": files}}
    if execution != "omit":
        workflow["execution"] = execution
    return {"name": "Test", "schemaVersion": version, "workflow": workflow}


def _wf14(task_overrides: dict | None = None) -> dict:
    task = {"name": "mProject_ID1", "parents": [], "runtimeInSeconds": 3.0, "avgCPU": 99.0,
            "files": [{"link": "input", "name": "in.fits", "sizeInBytes": 10}]}
    task.update(task_overrides or {})
    return {"name": "x", "schemaVersion": "1.4", "workflow": {"tasks": [task]}}


def _write(tmp_path, name: str, data: dict, gz: bool = False):
    path = tmp_path / name
    raw = json.dumps(data).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_a_gzipped_wfcommons_15_file_loads(tmp_path):
    path = _write(tmp_path, "small-15.json.gz", _wf15(), gz=True)
    wf = load_workflow(path)
    assert wf.name == "small-15" and wf.family == "small"
    assert [t.id for t in wf.tasks] == ["ID1", "ID2"] and wf.tasks[1].depends_on == ["ID1"]
    assert [t.duration for t in wf.tasks] == [3.5, 2.0]
    assert wf.tasks[0].resources.cpus == 2 and wf.tasks[0].resources.memory == 10**9
    assert wf.tasks[0].input_bytes == 1000 and wf.tasks[0].output_bytes == 2000
    assert load_workflow(_write(tmp_path, "plain.json", _wf15())).tasks == wf.tasks


def test_a_wfcommons_cycle_names_its_ids_and_the_file(tmp_path):
    data = _wf15()
    data["workflow"]["specification"]["tasks"][0]["parents"] = ["ID2"]
    path = _write(tmp_path, "looped.json", data)
    with pytest.raises(CycleError) as err:
        load_workflow(path)
    assert sorted(err.value.cycle) == ["ID1", "ID2"]
    msg = str(err.value)
    assert msg.startswith(f"{path}: Workflow 'looped' has a dependency cycle: ")
    walk = msg.rsplit(": ", 1)[1].split(" -> ")
    assert walk[0] == walk[-1] and sorted(walk[:-1]) == ["ID1", "ID2"]


def test_a_yaml_cycle_names_the_file_and_the_workflow(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: loop\ntasks:\n  - {id: a, depends_on: [b]}\n  - {id: b, depends_on: [a]}\n")
    with pytest.raises(CycleError) as err:
        load_workflow(path)
    assert sorted(err.value.cycle) == ["a", "b"]
    assert str(err.value).startswith(f"{path}: Workflow 'loop' has a dependency cycle: ")


@pytest.mark.parametrize("execution", ["omit", {"tasks": []},
                                       {"tasks": [{"id": "ID1", "runtimeInSeconds": 1.0}]},
                                       {"tasks": [{"id": "ID1", "runtimeInSeconds": 1.0}, {"id": "ID2"}]}])
def test_a_wfcommons_15_task_without_a_recorded_runtime_is_rejected(tmp_path, execution):
    path = _write(tmp_path, "norun.json", _wf15(execution=execution))
    missing = "ID1" if execution == "omit" or not execution["tasks"] else "ID2"
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(path))}: task '{missing}' has no recorded runtime"):
        load_workflow(path)


def test_a_wfcommons_14_task_without_a_runtime_is_rejected_the_same_way(tmp_path):
    data = _wf14()
    del data["workflow"]["tasks"][0]["runtimeInSeconds"]
    path = _write(tmp_path, "norun14.json", data)
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(path))}: task 'mProject_ID1' has no runtimeInSeconds"):
        load_workflow(path)


@pytest.mark.parametrize("data,needle", [
    (_wf14({"runtimeInSeconds": -4}), "task 'mProject_ID1' has runtimeInSeconds=-4: must be a finite number >= 0"),
    (_wf14({"runtimeInSeconds": 1e300}), "task 'mProject_ID1' has runtimeInSeconds=1e+300, above the limit of "
                                          "3.1536e+07 s (365 days)"),
    (_wf14({"runtimeInSeconds": "3"}), "task 'mProject_ID1' has runtimeInSeconds='3': must be a number"),
    (_wf14({"avgCPU": -50}), "task 'mProject_ID1' has avgCPU=-50: must be a finite number >= 0"),
    (_wf14({"parents": "ID0"}), "task 'mProject_ID1' has parents='ID0': must be a list"),
    (_wf14({"files": [{"link": "input", "name": "a", "sizeInBytes": -1}]}), "sizeInBytes of file 'a'=-1"),
    ({**_wf14(), "schemaVersion": "9.9"}, "WfCommons schemaVersion '9.9' is not supported (supported: 1.4, 1.5, 1.6)"),
    ({**_wf14(), "schemaVersion": None}, "WfCommons schemaVersion None is not supported"),
])
def test_bad_wfcommons_fields_are_named_with_the_file(tmp_path, data, needle):
    path = _write(tmp_path, "bad.json", data)
    with pytest.raises(LoaderError) as err:
        load_workflow(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)


def test_wfcommons_15_field_errors_are_named(tmp_path):
    data = _wf15()
    data["workflow"]["specification"]["tasks"][1]["parents"] = "ID1"
    with pytest.raises(LoaderError, match="task 'ID2' has parents='ID1': must be a list"):
        load_workflow(_write(tmp_path, "p.json", data))
    data = _wf15()
    data["workflow"]["specification"]["tasks"][1]["inputFiles"] = ["f2", "ghost.dat"]
    path = _write(tmp_path, "f.json", data)
    with pytest.raises(LoaderError, match=rf"^{re.escape(str(path))}: task 'ID2' lists input file 'ghost.dat', "
                                          "which is not in specification.files"):
        load_workflow(path)
    data = _wf15()
    data["workflow"]["execution"]["tasks"][0]["avgCPU"] = -1
    with pytest.raises(LoaderError, match="task 'ID1' has avgCPU=-1"):
        load_workflow(_write(tmp_path, "c.json", data))
    assert load_workflow(_write(tmp_path, "v16.json", _wf15(version="1.6"))).metadata["schema_version"] == "1.6"


def test_wfcommons_resource_errors_name_the_file(tmp_path):
    data = _wf15()
    data["workflow"]["execution"]["tasks"][0]["coreCount"] = 10**6
    path = _write(tmp_path, "cores.json", data)
    with pytest.raises(ResourceRequestError, match=rf"^{re.escape(str(path))}: Task 'ID1' requests cpus="):
        load_workflow(path)
    data = _wf15()
    data["workflow"]["specification"]["tasks"][1]["parents"] = ["ID9"]
    with pytest.raises(UnknownTaskError, match="Task 'ID2' depends on unknown task 'ID9'") as err:
        load_workflow(_write(tmp_path, "u.json", data))
    assert "u.json: " in str(err.value)


# --- general validation ------------------------------------------------------------------------------------------


def test_custom_resources_have_an_upper_limit():
    with pytest.raises(ResourceRequestError, match="custom resource x=1e\\+300, above the limit of 1e\\+09"):
        _wf([{"id": "a", "resources": {"custom": {"x": 1e300}}}])
    assert _wf([{"id": "a", "resources": {"custom": {"x": 4}}}]).tasks[0].resources.custom == {"x": 4.0}


@pytest.mark.parametrize("task,needle", [
    ({"id": "a", "resources": {"cpus": True}}, "resources.cpus: Value error, cpus=True is a boolean"),
    ({"id": "a", "resources": {"gpus": False}}, "resources.gpus: Value error, gpus=False is a boolean"),
    ({"id": "a", "resources": {"custom": {"x": True}}}, "custom resource x=True is a boolean"),
    ({"id": "a", "resources": {"memory": True}}, "memory=True is not a size"),
    ({"id": "a", "retries": True}, "retries=True is a boolean"),
    ({"id": "a", "timeout": True}, "timeout=True is a boolean"),
])
def test_booleans_are_not_numbers(task, needle):
    with pytest.raises(LoaderError, match=re.escape(needle)):
        _wf([task])


def test_duplicate_yaml_keys_are_named_with_their_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: w\ntasks:\n  - id: a\n    entrypoint: echo\n    id: b\n")
    with pytest.raises(LoaderError, match=r"line 5: key 'id' is given twice in one mapping \(first at line 3\)"):
        load_workflow(path)
    # A merge key followed by an override is not a duplicate.
    path.write_text("base: &b {cpus: 2}\nname: w\ntasks:\n  - id: a\n    resources: {<<: *b, cpus: 3}\n")
    with pytest.raises(LoaderError, match="base"):  # an unknown top-level field, not a duplicate key
        load_workflow(path)
    path.write_text("name: w\ntasks:\n  - id: a\n    resources: {<<: {cpus: 2, gpus: 0}, cpus: 3}\n")
    assert load_workflow(path).tasks[0].resources.cpus == 3


@pytest.mark.parametrize("memory,shown", [("1EB", "888.2 PiB (1000000000000000000 bytes)"),
                                          ("1PiB", "1 PiB (1125899906842624 bytes)"),
                                          ("2EiB", "2 EiB (2305843009213693952 bytes)"),
                                          ("20TiB", "20 TiB (21990232555520 bytes)")])
def test_absurd_memory_is_parsed_then_rejected_in_readable_units(memory, shown):
    with pytest.raises(ResourceRequestError, match=re.escape(f"memory={shown}, above the limit of 16 TiB")):
        _wf([{"id": "a", "resources": {"memory": memory}}])


def test_size_units_and_bad_sizes():
    assert parse_bytes("1PB") == 10**15 and parse_bytes("1pi") == 1024**5 and parse_bytes("1e3") == 1000
    assert parse_bytes("1.5E3KiB") == 1500 * 1024 and parse_bytes(".5GiB") == 512 * 1024**2
    for bad in ("1.2.3GB", "1e400", "GB", "12 parsecs"):
        with pytest.raises(LoaderError, match="size"):
            parse_bytes(bad)
    assert format_bytes(16 * 1024**4) == "16 TiB" and format_bytes(1536) == "1.5 KiB" and format_bytes(3) == "3 B"


def test_durations_have_an_upper_limit():
    with pytest.raises(ResourceRequestError, match="duration=1e\\+300 s, above the limit"):
        _wf([{"id": "a", "duration": 1e300}])


# --- the workflow-size limit, set by a user ----------------------------------------------------------------------


def test_the_task_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(MAX_TASKS_ENV, "3")
    assert get_limits().max_tasks == 3
    with pytest.raises(WorkflowTooLargeError, match=f"4 tasks, above the limit of 3; .*--max-tasks.*{MAX_TASKS_ENV}"):
        _wf([{"id": f"t{i}"} for i in range(4)])
    monkeypatch.setenv(MAX_TASKS_ENV, "200000")
    assert get_limits().max_tasks == 200_000
    monkeypatch.setenv(MAX_TASKS_ENV, "lots")
    with pytest.raises(LimitsError, match=f"{MAX_TASKS_ENV}='lots' is not a whole number"):
        _wf([{"id": "a"}])
    monkeypatch.delenv(MAX_TASKS_ENV)
    assert get_limits() == Limits()


# --- trace folders: one unique name per file ---------------------------------------------------------------------


def test_trace_names_are_unique_when_file_names_repeat(tmp_path):
    for rel in ("x.json", "x.json.gz", "a/y.json", "b/y.json", "a/z.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _write(tmp_path, rel, _wf15(), gz=rel.endswith(".gz"))
    files = find_trace_files(tmp_path)
    names = dict(zip((p.relative_to(tmp_path).as_posix() for p in files), trace_names(files, tmp_path)))
    assert names == {"a/y.json": "a/y", "b/y.json": "b/y", "a/z.json": "z",
                     "x.json": "x.json", "x.json.gz": "x.json.gz"}
    workflows = load_traces(tmp_path)
    assert sorted(wf.name for wf in workflows) == sorted(names.values())
    assert {wf.family for wf in workflows} == {"x", "y", "z"}


def test_a_trace_library_never_holds_two_workflows_of_one_name(tmp_path):
    from orchestrator.errors import SimulationError
    from orchestrator.sim import TraceLibrary

    for rel in ("one/w.json", "two/w.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _write(tmp_path, rel, _wf15())
    assert sorted(e.name for e in TraceLibrary.from_dir(tmp_path).entries) == ["one/w", "two/w"]
    wf = load_workflow(tmp_path / "one" / "w.json")
    library = TraceLibrary.from_workflows([wf, wf, wf])
    assert [e.name for e in library.entries] == ["w", "w~2", "w~3"]
    with pytest.raises(SimulationError, match="named 'w'"):
        TraceLibrary([library.entries[0], library.entries[0]])


def test_duplicate_json_keys_are_named(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"name": "w", "tasks": [{"id": "a", "entrypoint": "echo", "id": "b"}]}')
    with pytest.raises(LoaderError, match=r"dup.json': key 'id' is given twice in one JSON object"):
        load_workflow(path)

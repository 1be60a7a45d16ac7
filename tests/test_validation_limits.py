"""`orchestrator validate` refuses everything `orchestrator run` would refuse, on one line, exit code 2: `$ref`s that
name no ancestor, hostile files (huge numbers, deep nesting, huge files), numbers out of range, empty names and
unknown policies. Also the policy registry's checks."""

from __future__ import annotations

import gzip
import json
import sys

import pytest

from orchestrator import scheduling
from orchestrator.errors import (
    PolicyError,
    PolicyPluginError,
    ResourceRequestError,
    UnknownTaskError,
)
from orchestrator.loaders import MAX_DEPTH, MAX_DIGITS, workflow_from_dict
from orchestrator.model import ref_names


def _yaml(*tasks: str, head: str = "name: etl\n") -> str:
    return head + "tasks:\n" + "".join(f"  - {t}\n" for t in tasks)


def _validate_fails(cli_main, path, needle):
    code, out, err = cli_main("validate", path)
    assert code == 2 and out == "", (code, out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith((f"error: {path}: ", f"error: Cannot load '{path}'", f"error: Invalid workflow in {path}")), err
    assert needle in err, err
    return err


BAD_YAML = {
    "ref-unknown": (_yaml("{id: extract-0}", "{id: clean-0, args: [{$ref: ghost}], depends_on: [extract-0]}"),
                    "Task 'clean-0' refers to {$ref: ghost}, which is not a task of workflow 'etl'"),
    "ref-not-a-string": (_yaml("{id: a}", "{id: b, args: [{$ref: 5}], depends_on: [a]}"),
                         "Task 'b' refers to {$ref: 5}: a $ref names a task by its id, a string"),
    "ref-not-a-dependency": (_yaml("{id: load}", "{id: b, kwargs: {x: [{y: {$ref: load}}]}}"),
                             ("Task 'b' refers to {$ref: load}, which is not among its dependencies "
                              "(add 'load' to depends_on)")),
    "ref-to-a-child": (_yaml("{id: a, args: [{$ref: b}]}", "{id: b, depends_on: [a]}"),
                       "Task 'a' refers to {$ref: b}, which is not among its dependencies"),
    "ref-to-itself": (_yaml("{id: a, args: [[{$ref: a}]]}"), "Task 'a' refers to {$ref: a}, which is not among"),
    "priority": (_yaml(f"{{id: a, priority: {10**30}}}"),
                 "Task 'a' has priority=1e+30: must be between -1000000000 and 1000000000"),
    "retry-delay": (_yaml(f"{{id: a, retry_delay: {10**30}}}"),
                    "Task 'a' has retry_delay=1e+30 s, above the limit of 3.1536e+07 s (365 days)"),
    "retry-delay-inf": (_yaml("{id: a, retry_delay: .inf}"), "Task 'a' has retry_delay=inf: must be a finite"),
    "timeout": (_yaml(f"{{id: a, timeout: {10**30}}}"), "Task 'a' has timeout=1e+30 s, above the limit of"),
    "retries": (_yaml(f"{{id: a, retries: {10**30}}}"), "Task 'a' has retries=1e+30: must be between 0 and 100"),
    "input-bytes": (_yaml(f"{{id: a, input_bytes: {10**30}}}"),
                    "Task 'a' has input_bytes=1e+30: must be between 0 and 1 EiB"),
    "memory-huge-int": (_yaml(f"{{id: a, resources: {{memory: {10**400}}}}}"), "Task 'a' requests memory="),
    "custom-nan": (_yaml("{id: a, resources: {custom: {tpu: .nan}}}"), "Task 'a' requests custom resource tpu=nan"),
    "observed-runtime": (_yaml("{id: a, observed: {runtime: 1.0e+30}}"),
                         "Task 'a' has observed.runtime=1e+30 s, above the limit of"),
    "custom-ray-name": (_yaml("{id: a, resources: {custom: {CPU: 2}}}"),
                        "Task 'a' requests custom resource 'CPU': Ray's own resources are requested with cpus"),
    "time-scale": (_yaml("{id: a}", head="name: etl\nmetadata: {time_scale: fast}\n"),
                   "Workflow 'etl' has metadata.time_scale='fast': must be a number above 0 and at most 1e+06"),
    "name-empty": (_yaml("{id: a}", head="name: ''\n"), "name: Value error, the workflow name must not be empty"),
    "name-blank": (_yaml("{id: a}", head="name: '  '\n"), "name: Value error, the workflow name must not be empty"),
    "entrypoint-empty": (_yaml("{id: a, entrypoint: ''}"),
                         "entrypoint: Value error, the entrypoint must not be empty"),
    "entrypoint-blank": (_yaml("{id: a, entrypoint: '  '}"),
                         "entrypoint: Value error, the entrypoint must not be empty"),
    "id-empty": (_yaml("{id: ''}"), "task id '' must be 1-200 characters"),
    "policy": (_yaml("{id: a}", head="name: etl\npolicy: nope\n"),
               "workflow 'etl' asks for policy 'nope': Unknown scheduling policy 'nope'; available: "),
    "big-int": (_yaml("{id: a, args: [" + "9" * 5000 + "]}"), f"line 3: a number with more than {MAX_DIGITS} digits"),
    "deep": (_yaml("{id: a, args: " + "[" * 5000 + "]" * 5000 + "}"),
             f"line 3: too deeply nested (more than {MAX_DEPTH} levels)"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_validate_refuses_on_one_line(tmp_path, cli_main, case):
    content, needle = BAD_YAML[case]
    path = tmp_path / "etl.yaml"
    path.write_text(content)
    _validate_fails(cli_main, path, needle)


BAD_JSON = {
    "big-int": ('{"name": "w", "tasks": [{"id": "a", "priority": ' + "9" * 5000 + "}]}",
                f"a number with more than {MAX_DIGITS} digits"),
    "deep": ('{"name": "w", "tasks": [{"id": "a", "args": ' + "[" * 100_000 + "]" * 100_000 + "}]}",
             f"too deeply nested (more than {MAX_DEPTH} levels)"),
    "deep-but-parsable": ('{"name": "w", "tasks": [{"id": "a", "args": ' + "[" * 500 + "]" * 500 + "}]}",
                          f"too deeply nested (more than {MAX_DEPTH} levels)"),
    "ref-unknown": (json.dumps({"name": "w", "tasks": [{"id": "a", "kwargs": {"x": {"$ref": "zz"}}}]}),
                    "Task 'a' refers to {$ref: zz}, which is not a task of workflow 'w'"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_validate_refuses_hostile_json_on_one_line(tmp_path, cli_main, case):
    content, needle = BAD_JSON[case]
    path = tmp_path / "w.json"
    path.write_text(content)
    _validate_fails(cli_main, path, needle)


def test_a_file_larger_than_the_limit_is_refused_unread(tmp_path, cli_main, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_MAX_FILE_MB", "1")
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"name": "w", "tasks": [{"id": "a", "args": ["x" * 2 * 1024**2]}]}))
    _validate_fails(cli_main, path, "file is larger than the limit of 1 MiB (ORCHESTRATOR_MAX_FILE_MB)")
    bomb = tmp_path / "bomb.json.gz"  # small on disk, over the limit once decompressed
    bomb.write_bytes(gzip.compress(path.read_bytes()))
    assert bomb.stat().st_size < 1024**2
    _validate_fails(cli_main, bomb, "file is larger than the limit of 1 MiB (ORCHESTRATOR_MAX_FILE_MB)")
    monkeypatch.setenv("ORCHESTRATOR_MAX_FILE_MB", "3")
    code, out, _ = cli_main("validate", bomb)
    assert code == 0 and "ok w: 1 tasks" in out
    monkeypatch.setenv("ORCHESTRATOR_MAX_FILE_MB", "lots")
    code, _, err = cli_main("validate", path)
    assert code == 2 and "ORCHESTRATOR_MAX_FILE_MB='lots' is not a number of MiB" in err


def test_yaml_aliases_that_expand_past_the_file_are_refused(tmp_path, cli_main):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("x-anchors:\n" + "".join(f"  {line}\n" for line in lines) + "name: w\ntasks:\n  - {id: a}\n")
    _validate_fails(cli_main, path, "YAML aliases expand it to more than")


def test_refs_to_ancestors_and_look_alike_mappings_are_accepted(tmp_path, cli_main):
    path = tmp_path / "ok.yaml"
    path.write_text(_yaml("{id: a}", "{id: b, depends_on: [a]}",
                          "{id: c, depends_on: [b], args: [{$ref: a}, {x: [{$ref: b}]}], "
                          "kwargs: {k: {$ref: a, note: not a ref}}}"))
    code, out, err = cli_main("validate", path)
    assert code == 0 and "ok etl: 3 tasks" in out, err


def test_ref_names_finds_refs_at_any_depth():
    value = [1, {"$ref": "a"}, {"k": [{"$ref": "b"}, {"$ref": 5}]}, {"$ref": "c", "other": 1}, "$ref"]
    assert ref_names(value, {"x": {"$ref": "a"}}) == ["a", "b", 5, "a"]
    assert ref_names([], {}) == []


def test_the_model_refuses_what_the_loader_refuses():
    with pytest.raises(UnknownTaskError, match=r"Task 'b' refers to \{\$ref: x\}, which is not a task"):
        workflow_from_dict({"name": "w", "tasks": [{"id": "a"}, {"id": "b", "args": [{"$ref": "x"}]}]})
    with pytest.raises(ResourceRequestError, match="priority=-2000000000: must be between"):
        workflow_from_dict({"name": "w", "tasks": [{"id": "a", "priority": -2 * 10**9}]})
    wf = workflow_from_dict({"name": "w", "tasks": [
        {"id": "a", "priority": 10**9}, {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["b"], "kwargs": {"x": {"$ref": "a"}}}]})
    assert wf.task("a").priority == 10**9


# --- the policy registry -----------------------------------------------------------------------------------------

@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A `policies` package whose import fails, as when the learned policy's dependency is missing."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "__init__.py").write_text("import no_such_module_for_policies\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "policies", raising=False)
    monkeypatch.setattr(scheduling, "_plugins_loaded", False)
    monkeypatch.setattr(scheduling, "_plugin_error", None)
    # as in a process where the package never imported: what the real one registered earlier is not there
    monkeypatch.delitem(scheduling._REGISTRY, "learned", raising=False)
    yield
    sys.modules.pop("policies", None)


def test_a_broken_plugin_package_is_named_not_called_an_unknown_policy(broken_plugins):
    with pytest.raises(PolicyPluginError, match="Scheduling policy plugins could not be loaded: .*"
                                                 "No module named 'no_such_module_for_policies'"):
        scheduling.check_policy("learned")
    assert isinstance(scheduling.get_policy("fifo"), scheduling.SchedulingPolicy)  # built-ins still work
    assert "fifo" in scheduling.available_policies()


def test_a_broken_policy_plugin_is_reported_by_validate(broken_plugins, tmp_path, cli_main):
    path = tmp_path / "w.yaml"
    path.write_text(_yaml("{id: a}", head="name: w\npolicy: learned\n"))
    _validate_fails(cli_main, path, "Scheduling policy plugins could not be loaded: ")


def test_check_policy_does_not_construct_and_get_policy_returns_fresh_instances(monkeypatch):
    made = []

    class Counting(scheduling.FifoPolicy):
        def __init__(self):
            made.append(self)

    monkeypatch.setitem(scheduling._REGISTRY, "counting", Counting)
    assert scheduling.policy_class("counting") is Counting
    scheduling.check_policy("counting")
    assert made == []
    assert scheduling.get_policy("counting") is not scheduling.get_policy("counting") and len(made) == 2
    with pytest.raises(PolicyError, match="Unknown scheduling policy 'nope'; available: .*fifo"):
        scheduling.check_policy("nope")

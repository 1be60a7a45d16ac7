"""Load workflows from YAML, JSON (this project's format) and WfCommons JSON (schema 1.4, 1.5, 1.6; gzipped or not).

Every loader returns a fully validated `Workflow` or raises `LoaderError` / a `WorkflowError` naming the problem.
A hostile file is refused before it can exhaust memory or the stack: one larger than `$ORCHESTRATOR_MAX_FILE_MB`
(after decompression), nested deeper than `MAX_DEPTH`, a number longer than `MAX_DIGITS` digits, or YAML aliases
that expand it far past its own size.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import LoaderError, OrchestratorError, WorkflowError
from .model import Observation, Resources, TaskSpec, Workflow, get_limits

MiB = 1024**2
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "p": 1000**5, "pb": 1000**5, "e": 1000**6, "eb": 1000**6,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4, "pi": 1024**5, "pib": 1024**5, "ei": 1024**6, "eib": 1024**6,
}
_SIZE = re.compile(r"\s*(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*")
WFCOMMONS_VERSIONS = ("1.4", "1.5", "1.6")
MAX_FILE_MB_ENV = "ORCHESTRATOR_MAX_FILE_MB"
DEFAULT_MAX_FILE_MB = 256.0  # the largest bundled trace is 4 MiB uncompressed; 100,000 tasks fit in far less
MAX_DEPTH = 100  # levels of nesting in a file (the top mapping is level 1; a task's args are level 4)
MAX_DIGITS = 1000  # Python refuses to read integers of more than 4300 digits


def parse_bytes(value: Any, what: str = "memory") -> int:
    """Parse 512, '512MiB', '2GB', '1.5Gi', '1PiB' into bytes; raise LoaderError naming the bad value."""
    if isinstance(value, bool):
        raise LoaderError(f"{what}={value!r} is not a size")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LoaderError(f"{what}={value!r} is not a finite size")
        return int(value)
    m = _SIZE.fullmatch(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise LoaderError(f"{what}={value!r} is not a size (use bytes or a unit such as 512MiB, 2GB, 1TiB)")
    number = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(number):
        raise LoaderError(f"{what}={value!r} is not a finite size")
    return int(number)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(key, line, first_line)
        self.key, self.line, self.first_line = key, line, first_line


class _Hostile(Exception):
    """A file that would exhaust the parser or what follows it: the message says how, and where when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line else message)


def _too_deep() -> str:
    return f"too deeply nested (more than {MAX_DEPTH} levels)"


def _too_long() -> str:
    return f"a number with more than {MAX_DIGITS} digits"


class _StrictYamlLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML silently keeps the last), nesting
    deeper than MAX_DEPTH (checked while composing, before the recursion gets deep) and integers longer than
    MAX_DIGITS."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            raise _Hostile(_too_deep(), self.peek_event().start_mark.line + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node):
        if len(node.value.replace("_", "").lstrip("+-")) > MAX_DIGITS:
            raise _Hostile(_too_long(), node.start_mark.line + 1)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges may be overridden by the mapping's own keys
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: PyYAML's own error follows
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictYamlLoader.add_constructor("tag:yaml.org,2002:int", _StrictYamlLoader.construct_yaml_int)


def _with_source(exc: OrchestratorError, source: str) -> OrchestratorError:
    """The same error (type and attributes such as CycleError.cycle kept) with its message prefixed by the file."""
    message = str(exc)
    if source and not source.startswith("<") and not message.startswith(f"{source}:"):
        exc.args = (f"{source}: {message}",)
    return exc


def max_file_bytes() -> int:
    """The largest workflow file accepted, in bytes after decompression: `$ORCHESTRATOR_MAX_FILE_MB` MiB, else
    DEFAULT_MAX_FILE_MB."""
    env = os.environ.get(MAX_FILE_MB_ENV, "").strip()
    try:
        mb = float(env) if env else DEFAULT_MAX_FILE_MB
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb > 0):
        raise LoaderError(f"{MAX_FILE_MB_ENV}={env!r} is not a number of MiB above 0")
    return int(mb * MiB)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise LoaderError(f"Workflow file '{path}' does not exist")
    limit = max_file_bytes()
    too_large = LoaderError(f"Cannot load '{path}': file is larger than the limit of {limit / MiB:g} MiB "
                            f"({MAX_FILE_MB_ENV})")
    try:
        if path.stat().st_size > limit:
            raise too_large
        with path.open("rb") as f:
            raw = f.read(limit + 1)
        if raw[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                raw = g.read(limit + 1)  # never more than the limit, however well it compresses
        if len(raw) > limit:
            raise too_large
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise LoaderError(f"Cannot read workflow file '{path}': {exc}") from exc


def _pydantic_message(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return f"Invalid workflow in {source}: " + "; ".join(parts)


def workflow_from_dict(data: Any, source: str = "<dict>") -> Workflow:
    """Build a Workflow from this project's dict format, or from a WfCommons instance if it looks like one."""
    if not isinstance(data, dict):
        raise LoaderError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if "schemaVersion" in data and "workflow" in data:
        return workflow_from_wfcommons(data, source)
    data = dict(data)
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        raise LoaderError(f"{source}: 'tasks' must be a list of task mappings")
    fixed = []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            raise LoaderError(f"{source}: task #{i} must be a mapping, got {type(t).__name__}")
        t = dict(t)
        res = t.get("resources")
        if isinstance(res, dict) and "memory" in res:
            t["resources"] = {**res, "memory": parse_bytes(res["memory"], f"task '{t.get('id')}' memory")}
        if isinstance(t.get("depends_on"), str):
            t["depends_on"] = [t["depends_on"]]
        fixed.append(t)
    data["tasks"] = fixed
    data.setdefault("name", _file_stem(source) if not source.startswith("<") else "workflow")
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise LoaderError(_pydantic_message(exc, source)) from None
    except WorkflowError as exc:
        raise _with_source(exc, source) from None


def _file_stem(source: str) -> str:
    """A workflow file's name without `.json`, `.yaml`, `.yml` and `.gz`."""
    return re.sub(r"(\.(json|ya?ml))?(\.gz)?$", "", Path(source).name, flags=re.IGNORECASE) or Path(source).name


def _cpus_from_avg_cpu(avg_cpu_percent: float | None, core_count: float | None) -> float:
    if core_count:
        return max(1.0, float(core_count))
    if not avg_cpu_percent or avg_cpu_percent <= 0:
        return 1.0
    # 165% of a core means the task keeps two cores busy; 100.3% is one core plus noise.
    return float(max(1, math.ceil(avg_cpu_percent / 100.0 - 0.1)))


def estimate_memory(input_bytes: int, output_bytes: int) -> int:
    """Memory request for a trace task whose peak memory was not recorded: its data, at least 128 MiB,
    rounded up to 64 MiB. Documented in data/traces/README.md; recorded peaks are always preferred."""
    need = max(128 * MiB, input_bytes + output_bytes)
    return int(math.ceil(need / (64 * MiB)) * 64 * MiB)


def _family_from_name(name: str) -> str:
    return re.split(r"[-_]", name.strip().lower(), maxsplit=1)[0] or name


def workflow_from_wfcommons(data: dict, source: str = "<wfcommons>") -> Workflow:
    """Convert a WfCommons instance (1.4: `workflow.tasks`; 1.5/1.6: `workflow.specification` + `execution`).

    Every task must have a recorded runtime: the simulator and the benchmarks replay it. A runtime of exactly 0
    is kept as written (the simulator replays the task as instant), though it is a recording failure (in the
    bundled traces such tasks have files but no avgCPU, memory or machine): prediction leaves it out
    (`orchestrator.prediction.features.not_observed`).
    """
    raw_version = data.get("schemaVersion")
    version = str(raw_version).strip() if raw_version is not None else ""
    if version not in WFCOMMONS_VERSIONS:
        raise LoaderError(f"{source}: WfCommons schemaVersion {raw_version!r} is not supported "
                          f"(supported: {', '.join(WFCOMMONS_VERSIONS)})")
    wf = data.get("workflow")
    if not isinstance(wf, dict):
        raise LoaderError(f"{source}: WfCommons file has no 'workflow' object")
    # A file's own name is unique within a folder (instance names such as "Montage" are not); a trace library
    # makes names unique across subfolders (see `trace_names`).
    stem = _file_stem(source) if source and not source.startswith("<") else ""
    name = stem or str(data.get("name") or "wfcommons")
    try:
        if "specification" in wf:
            tasks = _wfcommons_15(wf, source)
        elif "tasks" in wf:
            tasks = _wfcommons_14(wf, source)
        else:
            raise LoaderError(f"{source}: WfCommons schema {version} with neither 'tasks' nor 'specification'")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LoaderError(f"{source}: malformed WfCommons task data ({type(exc).__name__}: {exc})") from None
    execution = wf.get("execution", wf)
    execution = execution if isinstance(execution, dict) else {}
    metadata = {
        "source": str(source),
        "schema_version": version,
        "recorded_makespan": execution.get("makespanInSeconds") or execution.get("makespan"),
        "instance_name": data.get("name"),
        "executed_at": execution.get("executedAt") or wf.get("executedAt"),  # as written; None when not recorded
    }
    try:
        return Workflow(name=name, tasks=tasks, family=_family_from_name(name), metadata=metadata)
    except ValidationError as exc:
        raise LoaderError(_pydantic_message(exc, source)) from None
    except WorkflowError as exc:
        raise _with_source(exc, source) from None


def _number(value: Any, field: str, who: str, source: str, required: bool = False,
            upper: float | None = None, unit: str = "") -> float | None:
    """A numeric WfCommons field: a finite number >= 0 (at most `upper`), or None when absent.
    `who` names the owner in messages, e.g. "task 'ID1'"."""
    if value is None:
        if required:
            raise LoaderError(f"{source}: {who} has no {field}: every task needs its recorded runtime")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LoaderError(f"{source}: {who} has {field}={value!r}: must be a number")
    if not math.isfinite(value) or value < 0:
        raise LoaderError(f"{source}: {who} has {field}={value!r}: must be a finite number >= 0")
    if upper is not None and value > upper:
        raise LoaderError(f"{source}: {who} has {field}={value!r}, above the limit of {upper:g}{unit}")
    return float(value)


def _parents(value: Any, task_id: str, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise LoaderError(f"{source}: task '{task_id}' has parents={value!r}: must be a list of task "
                          "names or ids")
    return value


def _task(source: str, task_id: str, category: str, parents: list[str], runtime: Any, avg_cpu: Any,
          memory: Any, in_bytes: int, out_bytes: int, machine: str | None, core_count: Any) -> TaskSpec:
    max_duration = get_limits().max_duration
    who = f"task '{task_id}'"
    runtime = _number(runtime, "runtimeInSeconds", who, source, required=True, upper=max_duration,
                      unit=f" s ({max_duration / 86400:g} days)")
    avg_cpu = _number(avg_cpu, "avgCPU", who, source)
    memory = _number(memory, "memoryInBytes", who, source)
    core_count = _number(core_count, "coreCount", who, source)
    memory = int(memory) if memory else None
    return TaskSpec(
        id=task_id,
        category=category,
        depends_on=list(dict.fromkeys(parents)),
        resources=Resources(
            cpus=_cpus_from_avg_cpu(avg_cpu, core_count),
            memory=memory if memory else estimate_memory(in_bytes, out_bytes),
        ),
        priority=0,  # Pegasus's priority is its own, not the user's
        input_bytes=in_bytes,
        output_bytes=out_bytes,
        duration=runtime,
        observed=Observation(
            runtime=runtime,
            avg_cpu=(avg_cpu / 100.0) if avg_cpu is not None else None,
            peak_memory=memory,
            machine=machine if isinstance(machine, str) else None,
        ),
    )


def _task_list(raw: Any, where: str, source: str) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise LoaderError(f"{source}: WfCommons '{where}' must be a non-empty list")
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise LoaderError(f"{source}: WfCommons {where} #{i} must be a mapping, got {type(t).__name__}")
    return raw


def _task_key(t: dict, key: str, i: int, where: str, source: str) -> str:
    value = t.get(key)
    if not isinstance(value, str) or not value:
        raise LoaderError(f"{source}: WfCommons {where} #{i} has {key}={value!r}: must be a non-empty string")
    return value


def _file_size(f: Any, who: str, source: str) -> int:
    if not isinstance(f, dict):
        raise LoaderError(f"{source}: {who} has a file entry {f!r} that is not a mapping")
    file_name = f.get("name", f.get("id"))
    what = f"sizeInBytes of file {file_name!r}" if file_name is not None else "a file with sizeInBytes"
    return int(_number(f.get("sizeInBytes"), what, who, source) or 0)


def _wfcommons_14(wf: dict, source: str) -> list[TaskSpec]:
    raw = _task_list(wf["tasks"], "workflow.tasks", source)
    # Parents are referenced by task name in 1.4.
    tasks = []
    for i, t in enumerate(raw):
        name = _task_key(t, "name", i, "workflow.tasks", source)
        files = t.get("files") or []
        if not isinstance(files, list):
            raise LoaderError(f"{source}: task '{name}' has files={files!r}: must be a list")
        sizes = [(f.get("link") if isinstance(f, dict) else None, _file_size(f, f"task '{name}'", source))
                 for f in files]
        in_b = sum(size for link, size in sizes if link == "input")
        out_b = sum(size for link, size in sizes if link == "output")
        category = t.get("category") or re.sub(r"_ID\d+$", "", name)
        runtime = t["runtimeInSeconds"] if "runtimeInSeconds" in t else t.get("runtime")
        tasks.append(_task(source, name, category, _parents(t.get("parents"), name, source), runtime,
                           t.get("avgCPU"), t.get("memoryInBytes"), in_b, out_b, t.get("machine"), t.get("cores")))
    return tasks


def _wfcommons_15(wf: dict, source: str) -> list[TaskSpec]:
    spec = wf["specification"]
    if not isinstance(spec, dict):
        raise LoaderError(f"{source}: WfCommons 'workflow.specification' must be a mapping")
    raw = _task_list(spec.get("tasks"), "specification.tasks", source)
    files = spec.get("files") or []
    if not isinstance(files, list):
        raise LoaderError(f"{source}: WfCommons 'specification.files' must be a list")
    sizes: dict[str, int] = {}
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("id"), str):
            raise LoaderError(f"{source}: WfCommons specification.files #{i} must be a mapping with an 'id'")
        sizes[f["id"]] = _file_size(f, "specification.files", source)
    execution = wf.get("execution") or {}
    if not isinstance(execution, dict):
        raise LoaderError(f"{source}: WfCommons 'workflow.execution' must be a mapping")
    exec_by_id = {}
    for i, t in enumerate(execution.get("tasks") or []):
        if not isinstance(t, dict):
            raise LoaderError(f"{source}: WfCommons execution.tasks #{i} must be a mapping, got {type(t).__name__}")
        exec_by_id[_task_key(t, "id", i, "execution.tasks", source)] = t
    tasks = []
    for i, t in enumerate(raw):
        task_id = _task_key(t, "id", i, "specification.tasks", source)
        ex = exec_by_id.get(task_id)
        if ex is None or ex.get("runtimeInSeconds") is None:
            raise LoaderError(
                f"{source}: task '{task_id}' has no recorded runtime (no execution record with runtimeInSeconds"
                f"{'' if execution else '; the file has no workflow.execution'}): every task needs one"
            )
        in_b = out_b = 0
        for key in ("inputFiles", "outputFiles"):
            ids = t.get(key) or []
            if not isinstance(ids, list):
                raise LoaderError(f"{source}: task '{task_id}' has {key}={ids!r}: must be a list of file ids")
            for file_id in ids:
                if file_id not in sizes:
                    raise LoaderError(f"{source}: task '{task_id}' lists {key[:-5]} file {file_id!r}, which is "
                                      "not in specification.files")
                if key == "inputFiles":
                    in_b += sizes[file_id]
                else:
                    out_b += sizes[file_id]
        machines = ex.get("machines") or []
        category = t.get("category") or re.sub(r"_ID\d+$", "", t.get("name") or task_id)
        tasks.append(_task(source, task_id, category, _parents(t.get("parents"), task_id, source),
                           ex.get("runtimeInSeconds"), ex.get("avgCPU"), ex.get("memoryInBytes"), in_b, out_b,
                           machines[0] if isinstance(machines, list) and machines else None, ex.get("coreCount")))
    return tasks


class _DuplicateJsonKey(ValueError):
    pass


def _short_int(text: str) -> int:
    """A JSON integer, refused past MAX_DIGITS digits (Python itself refuses past 4300, with a ValueError)."""
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Hostile(_too_long())
    return int(text)


def _check_shape(data: Any, size: int) -> None:
    """Refuse data nested deeper than MAX_DEPTH, or with far more values than a file of `size` characters can
    hold without YAML aliases (each alias of a list repeats all of it: a small file can expand to billions)."""
    budget = 10 * size + 10_000
    stack = [(data, 1)]
    for _ in range(budget):
        if not stack:
            return
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH and value:
                raise _Hostile(_too_deep())
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    if stack:
        raise _Hostile(f"YAML aliases expand it to more than {budget} values")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice (json.loads would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateJsonKey(key)
        out[key] = value
    return out


def load_workflow(path: str | Path) -> Workflow:
    """Load a workflow file: `.yaml`/`.yml`, `.json`, WfCommons JSON, each optionally gzipped."""
    path = Path(path)
    text = _read_text(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return workflow_from_text(text, str(path), yaml_format=bool(suffixes and suffixes[-1] in (".yaml", ".yml")))


def workflow_from_text(text: str, source: str = "<text>", yaml_format: bool = False) -> Workflow:
    """A workflow from the text of a file or a request body: YAML, or JSON (this project's format or WfCommons),
    with the same limits and duplicate-key checks as a file (a YAML parser reads JSON too)."""
    try:
        if yaml_format:
            data = yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
        else:
            data = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_short_int)
        _check_shape(data, len(text))
    except _Hostile as exc:
        raise LoaderError(f"Cannot load '{source}': {exc}") from None
    except RecursionError:  # JSON nested past Python's stack (checked after parsing otherwise), or YAML aliases
        raise LoaderError(f"Cannot load '{source}': {_too_deep()}") from None
    except _DuplicateJsonKey as dup:
        raise LoaderError(f"Cannot load '{source}': key {dup.args[0]!r} is given twice in one JSON object") from None
    except _DuplicateKey as dup:
        raise LoaderError(f"Cannot load '{source}': line {dup.line}: key {dup.key!r} is given twice in one mapping "
                          f"(first at line {dup.first_line})") from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise LoaderError(f"Cannot parse '{source}': {exc}") from None
    return workflow_from_dict(data, source)


def find_trace_files(directory: str | Path) -> list[Path]:
    """All WfCommons files under a folder (`*.json`, `*.json.gz`), sorted for determinism."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LoaderError(f"Trace folder '{directory}' does not exist")
    files = sorted(p for p in directory.rglob("*") if p.name.endswith((".json", ".json.gz")) and p.is_file())
    if not files:
        raise LoaderError(f"Trace folder '{directory}' holds no WfCommons files (*.json, *.json.gz)")
    return files


def trace_names(files: list[Path], directory: str | Path) -> list[str]:
    """A unique workflow name per trace file: its file name without `.json`/`.json.gz`; where two files share
    that name (x.json and x.json.gz, or one name in two subfolders), their path relative to the folder instead,
    without the suffix if that is unique, else with it."""
    directory = Path(directory)

    def relative(p: Path) -> str:
        try:
            return p.relative_to(directory).as_posix()
        except ValueError:
            return p.as_posix()

    names = [_file_stem(str(p)) for p in files]
    for rename in (lambda p: re.sub(r"\.json(\.gz)?$", "", relative(p)), relative):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        names = [rename(p) if counts[n] > 1 else n for p, n in zip(files, names)]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # left: a file named like another's path, e.g. "x.json.json" beside "x.json"
        k = seen[n] = seen.get(n, 0) + 1
        unique.append(n if k == 1 else f"{n}~{k}")
    return unique


def load_trace_files(directory: str | Path) -> list[tuple[Path, Workflow]]:
    """Every WfCommons file under a folder with its workflow, named uniquely within the folder (`trace_names`)."""
    files = find_trace_files(directory)
    loaded = []
    for path, name in zip(files, trace_names(files, directory)):
        wf = load_workflow(path)
        loaded.append((path, wf if wf.name == name else wf.model_copy(update={"name": name})))
    return loaded


def load_traces(directory: str | Path) -> list[Workflow]:
    """Load every WfCommons file under a folder (names unique within it)."""
    return [wf for _, wf in load_trace_files(directory)]


def default_trace_dir() -> Path:
    """The real traces bundled with the project (provenance: data/traces/README.md)."""
    from . import resources

    return resources.traces_dir()

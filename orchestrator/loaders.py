"""Load workflows from YAML, JSON (this project's format) and WfCommons JSON (schema 1.4, 1.5, 1.6; gzipped or not).

Every loader returns a fully validated `Workflow` or raises `LoaderError` / a `WorkflowError` naming the problem.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import LoaderError, WorkflowError
from .model import Observation, Resources, TaskSpec, Workflow

MiB = 1024**2
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}


def parse_bytes(value: Any, what: str = "memory") -> int:
    """Parse 512, '512MiB', '2GB', '1.5Gi' into bytes; raise LoaderError naming the bad value."""
    if isinstance(value, bool):
        raise LoaderError(f"{what}={value!r} is not a size")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise LoaderError(f"{what}={value!r} is not a finite size")
        return int(value)
    m = re.fullmatch(r"\s*(-?[0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise LoaderError(f"{what}={value!r} is not a size (use bytes or a unit such as 512MiB, 2GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _read_text(path: Path) -> str:
    if not path.exists():
        raise LoaderError(f"Workflow file '{path}' does not exist")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
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
    data.setdefault("name", Path(source).stem if source != "<dict>" else "workflow")
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise LoaderError(_pydantic_message(exc, source)) from None


def _cpus_from_avg_cpu(avg_cpu_percent: float | None, core_count: float | None) -> float:
    if core_count:
        return max(1.0, float(core_count))
    if not avg_cpu_percent or avg_cpu_percent <= 0:
        return 1.0
    # 165% of a core means the task keeps two cores busy; 100.3% is one core plus noise.
    return float(max(1, math.ceil(avg_cpu_percent / 100.0 - 0.1)))


def estimate_memory(input_bytes: int, output_bytes: int) -> int:
    """Memory request for a trace task whose peak memory was not recorded: its data, at least 128 MiB,
    rounded up to 64 MiB. Documented in the README; recorded peaks are always preferred."""
    need = max(128 * MiB, input_bytes + output_bytes)
    return int(math.ceil(need / (64 * MiB)) * 64 * MiB)


def _family_from_name(name: str) -> str:
    return re.split(r"[-_]", name.strip().lower(), maxsplit=1)[0] or name


def workflow_from_wfcommons(data: dict, source: str = "<wfcommons>") -> Workflow:
    """Convert a WfCommons instance (1.4: `workflow.tasks`; 1.5/1.6: `workflow.specification` + `execution`)."""
    version = str(data.get("schemaVersion", ""))
    wf = data.get("workflow")
    if not isinstance(wf, dict):
        raise LoaderError(f"{source}: WfCommons file has no 'workflow' object")
    # A file's own name is unique within a collection (instance names such as "Montage" are not).
    stem = re.sub(r"\.json(\.gz)?$", "", Path(source).name) if source and not source.startswith("<") else ""
    name = stem or str(data.get("name") or "wfcommons")
    try:
        if "specification" in wf:
            tasks = _wfcommons_15(wf, source)
        elif "tasks" in wf:
            tasks = _wfcommons_14(wf, source)
        else:
            raise LoaderError(f"{source}: WfCommons schema {version or '?'} with neither 'tasks' nor 'specification'")
    except (KeyError, TypeError, ValueError) as exc:
        raise LoaderError(f"{source}: malformed WfCommons task data ({type(exc).__name__}: {exc})") from None
    execution = wf.get("execution", wf)
    metadata = {
        "source": str(source),
        "schema_version": version,
        "recorded_makespan": execution.get("makespanInSeconds") or execution.get("makespan"),
        "instance_name": data.get("name"),
    }
    try:
        return Workflow(name=name, tasks=tasks, family=_family_from_name(name), metadata=metadata)
    except ValidationError as exc:
        raise LoaderError(_pydantic_message(exc, source)) from None
    except WorkflowError as exc:
        raise type(exc)(f"{source}: {exc}") from None


def _task(task_id: str, category: str, parents: list[str], runtime: float, avg_cpu: float | None,
          memory: int | None, in_bytes: int, out_bytes: int, machine: str | None, priority: int,
          core_count: float | None) -> TaskSpec:
    if runtime is None or not math.isfinite(float(runtime)) or float(runtime) < 0:
        raise LoaderError(f"task '{task_id}' has runtimeInSeconds={runtime!r}: must be a number >= 0")
    memory = int(memory) if memory else None
    return TaskSpec(
        id=task_id,
        category=category,
        depends_on=list(dict.fromkeys(parents)),
        resources=Resources(
            cpus=_cpus_from_avg_cpu(avg_cpu, core_count),
            memory=memory if memory else estimate_memory(in_bytes, out_bytes),
        ),
        priority=int(priority or 0),
        input_bytes=in_bytes,
        output_bytes=out_bytes,
        duration=float(runtime),
        observed=Observation(
            runtime=float(runtime),
            avg_cpu=(avg_cpu / 100.0) if avg_cpu is not None else None,
            peak_memory=memory,
            machine=machine,
        ),
    )


def _wfcommons_14(wf: dict, source: str) -> list[TaskSpec]:
    raw = wf["tasks"]
    if not isinstance(raw, list) or not raw:
        raise LoaderError(f"{source}: WfCommons 'workflow.tasks' must be a non-empty list")
    # Parents are referenced by task name in 1.4.
    tasks = []
    for t in raw:
        files = t.get("files") or []
        in_b = sum(int(f.get("sizeInBytes") or 0) for f in files if f.get("link") == "input")
        out_b = sum(int(f.get("sizeInBytes") or 0) for f in files if f.get("link") == "output")
        category = t.get("category") or re.sub(r"_ID\d+$", "", t["name"])
        tasks.append(_task(t["name"], category, list(t.get("parents") or []), t.get("runtimeInSeconds", t.get("runtime")),
                           t.get("avgCPU"), t.get("memoryInBytes"), in_b, out_b, t.get("machine"),
                           0, t.get("cores")))  # Pegasus's priority is its own, not the user's
    return tasks


def _wfcommons_15(wf: dict, source: str) -> list[TaskSpec]:
    spec = wf["specification"]
    raw = spec["tasks"]
    if not isinstance(raw, list) or not raw:
        raise LoaderError(f"{source}: WfCommons 'specification.tasks' must be a non-empty list")
    sizes = {f["id"]: int(f.get("sizeInBytes") or 0) for f in spec.get("files") or []}
    exec_by_id = {t["id"]: t for t in (wf.get("execution") or {}).get("tasks") or []}
    tasks = []
    for t in raw:
        ex = exec_by_id.get(t["id"], {})
        in_b = sum(sizes.get(f, 0) for f in t.get("inputFiles") or [])
        out_b = sum(sizes.get(f, 0) for f in t.get("outputFiles") or [])
        machines = ex.get("machines") or []
        category = t.get("category") or re.sub(r"_ID\d+$", "", t.get("name") or t["id"])
        tasks.append(_task(t["id"], category, list(t.get("parents") or []), ex.get("runtimeInSeconds", 0.0),
                           ex.get("avgCPU"), ex.get("memoryInBytes"), in_b, out_b,
                           machines[0] if machines else None, 0, ex.get("coreCount")))
    return tasks


def load_workflow(path: str | Path) -> Workflow:
    """Load a workflow file: `.yaml`/`.yml`, `.json`, WfCommons JSON, each optionally gzipped."""
    path = Path(path)
    text = _read_text(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    try:
        if suffixes and suffixes[-1] in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise LoaderError(f"Cannot parse '{path}': {exc}") from None
    return workflow_from_dict(data, str(path))


def find_trace_files(directory: str | Path) -> list[Path]:
    """All WfCommons files under a folder (`*.json`, `*.json.gz`), sorted for determinism."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LoaderError(f"Trace folder '{directory}' does not exist")
    files = sorted(p for p in directory.rglob("*") if p.name.endswith((".json", ".json.gz")))
    if not files:
        raise LoaderError(f"Trace folder '{directory}' holds no WfCommons files (*.json, *.json.gz)")
    return files


def load_traces(directory: str | Path) -> list[Workflow]:
    """Load every WfCommons file under a folder."""
    return [load_workflow(p) for p in find_trace_files(directory)]


def default_trace_dir() -> Path:
    """The real traces bundled with the project (see data/traces/README.md)."""
    return Path(__file__).resolve().parent.parent / "data" / "traces"

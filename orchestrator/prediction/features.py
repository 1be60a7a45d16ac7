"""What the task predictor reads: a task's features, the finished executions of its category (its history),
and the same data as flat arrays for training. Bad values are rejected here with a `PredictionError`."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import PredictionError
from ..model import TaskSpec, Workflow

TARGETS = ("runtime", "cpu", "memory")
MIN_RUNTIME = 1e-3  # seconds; runtimes are modelled in log space and floored here

log = logging.getLogger("orchestrator.prediction")


def log_size(value):
    """log1p of a size in bytes; NaN when unknown (None/NaN) or 0 — some traces list no files for a task, and
    a zero read as a real size would look like a 10^5-fold difference to its siblings."""
    v = np.asarray(np.nan if value is None else value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(v > 0, np.log1p(np.where(v > 0, v, 0.0)), np.nan)
    return float(out) if out.ndim == 0 else out


def _check_number(value: float | None, what: str, allow_none: bool = True) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise PredictionError(f"{what} is missing")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PredictionError(f"{what}={value!r} is not a number") from None
    if not math.isfinite(value):
        raise PredictionError(f"{what}={value} is not finite (NaN or infinite); drop the record or fix its source")
    if value < 0:
        raise PredictionError(f"{what}={value} is negative; sizes, runtimes and usage must be >= 0")
    return value


@dataclass(frozen=True)
class TaskFeatures:
    """A task to predict. Sizes in bytes; `None` = unknown. The predictors read the category, the input size
    and the family only: `output_bytes` is kept so a `TaskSpec` or trace row converts as is, but a task's
    output size is recorded after it ran and is never a prediction input (see `Query`)."""

    category: str
    input_bytes: float | None = None
    output_bytes: float | None = None
    family: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.category, str) or not self.category:
            raise PredictionError(f"A task needs a non-empty category, got {self.category!r}")
        object.__setattr__(self, "input_bytes", _check_number(self.input_bytes, f"'{self.category}' input_bytes"))
        object.__setattr__(self, "output_bytes", _check_number(self.output_bytes, f"'{self.category}' output_bytes"))

    @classmethod
    def from_task(cls, task: TaskSpec, family: str | None = None) -> "TaskFeatures":
        return cls(task.category, task.input_bytes, task.output_bytes, family)


@dataclass(frozen=True)
class Execution:
    """One finished execution of a category: its sizes and what it used. `same_run` marks a sibling that
    finished earlier in the run being predicted (as opposed to an execution from an earlier run); `run_id`, where
    known, lets one history serve several runs (`History.for_run`)."""

    category: str
    runtime: float  # seconds
    cpu: float | None = None  # average cores busy
    memory: float | None = None  # peak bytes
    input_bytes: float | None = None
    output_bytes: float | None = None
    same_run: bool = False
    run_id: str | None = None

    def __post_init__(self) -> None:
        what = f"execution of '{self.category}'"
        object.__setattr__(self, "runtime", _check_number(self.runtime, f"{what} runtime", allow_none=False))
        for name in ("cpu", "memory", "input_bytes", "output_bytes"):
            object.__setattr__(self, name, _check_number(getattr(self, name), f"{what} {name}"))

    @classmethod
    def from_task(cls, task: TaskSpec, same_run: bool = False) -> "Execution":
        if task.observed is None:
            raise PredictionError(f"Task '{task.id}' has no observed execution to learn from")
        o = task.observed
        return cls(task.category, o.runtime, o.avg_cpu, o.peak_memory, task.input_bytes, task.output_bytes, same_run)

    def features(self) -> TaskFeatures:
        return TaskFeatures(self.category, self.input_bytes, self.output_bytes)


class History:
    """Finished executions per category, oldest first: earlier runs, then siblings of the current run as they
    finish. `observe` is how an online predictor learns during a run."""

    def __init__(self, executions: Iterable[Execution] = (), max_per_category: int = 256):
        self.max_per_category = max_per_category
        self._by_category: dict[str, list[Execution]] = {}
        for e in executions:
            self.add(e)

    def add(self, execution: Execution) -> None:
        rows = self._by_category.setdefault(execution.category, [])
        rows.append(execution)
        if len(rows) > self.max_per_category:
            del rows[: len(rows) - self.max_per_category]

    def observe(self, task: TaskSpec) -> None:
        """Record a task of the current run that has just finished (its `observed` field must be set)."""
        self.add(Execution.from_task(task, same_run=True))

    def of(self, category: str) -> list[Execution]:
        return list(self._by_category.get(category, ()))

    def for_run(self, category: str, run_id: str) -> list[Execution]:
        """The category's executions as seen by run `run_id`: its own (by `run_id`) are its finished siblings
        (`same_run`), every other run's are earlier runs."""
        return [e if e.same_run == (e.run_id == run_id) else dataclasses.replace(e, same_run=e.run_id == run_id)
                for e in self._by_category.get(category, ())]

    def new_run(self) -> "History":
        """The same history with every execution marked as coming from an earlier run."""
        h = History(max_per_category=self.max_per_category)
        for rows in self._by_category.values():
            for e in rows:
                h.add(Execution(e.category, e.runtime, e.cpu, e.memory, e.input_bytes, e.output_bytes, False, e.run_id))
        return h

    @property
    def categories(self) -> list[str]:
        return sorted(self._by_category)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_category.values())


# ---- traces as flat arrays -------------------------------------------------------------------------------

_EXECUTED_FORMATS = ("%Y%m%dT%H%M%S%z", "%m-%d-%yT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S")


def executed_at(workflow: Workflow) -> float:
    """When a trace was recorded (POSIX seconds), read from its WfCommons file's `executedAt` (`workflow.` in 1.4,
    `workflow.execution.` in 1.5 and later); runs are put in time order with it. Falls back to the file's
    `createdAt`, then 0 (files without a date sort first)."""
    source = workflow.metadata.get("source")
    if not source or not Path(source).exists():
        return 0.0
    raw = Path(source).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return 0.0
    wf = data.get("workflow") if isinstance(data.get("workflow"), dict) else {}
    execution = wf.get("execution") if isinstance(wf.get("execution"), dict) else {}
    for value in (wf.get("executedAt"), execution.get("executedAt"), data.get("createdAt")):  # 1.4, 1.5+
        if not value:
            continue
        text = re.sub(r"\.\d+", "", str(value))
        for fmt in _EXECUTED_FORMATS:
            try:
                dt = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    return 0.0


@dataclass
class ExecutionTable:
    """Every recorded task execution of a set of runs as arrays (one row per task).

    Rows are grouped by run (in time order) and, within a run, kept in the trace's task order, which is the
    order the predictor treats as "finished earlier" (the traces record no start times).
    """

    run: np.ndarray  # int, index into `runs`
    family: np.ndarray  # int, index into `families`
    category: np.ndarray  # int, index into `categories`
    log_runtime: np.ndarray
    log_input: np.ndarray  # log1p(bytes), NaN if unknown
    log_output: np.ndarray
    cpu: np.ndarray  # cores, NaN if unknown
    log_memory: np.ndarray  # log(bytes), NaN if unknown
    runtime: np.ndarray
    memory: np.ndarray
    runs: list[str]
    run_time: np.ndarray  # per run: executedAt
    run_family: np.ndarray  # per run: family index
    families: list[str]
    categories: list[str]  # "family/category" so the same program name in two families stays apart
    task_ids: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> recorded executions left out (`not_observed`)

    def __len__(self) -> int:
        return self.run.size

    def select_runs(self, runs: Sequence[int]) -> np.ndarray:
        """Row indices of the given runs."""
        return np.flatnonzero(np.isin(self.run, np.asarray(runs, dtype=np.int64)))

    def runs_of_family(self, family: str) -> list[int]:
        f = self.families.index(family)
        return [r for r in np.argsort(self.run_time, kind="stable").tolist() if self.run_family[r] == f]

    def execution(self, i: int, same_run: bool) -> Execution:
        def size(v: float) -> float | None:
            return None if np.isnan(v) else float(np.expm1(v))
        return Execution(self.categories[self.category[i]].split("/", 1)[1], float(self.runtime[i]),
                         None if np.isnan(self.cpu[i]) else float(self.cpu[i]),
                         None if np.isnan(self.memory[i]) else float(self.memory[i]),
                         size(self.log_input[i]), size(self.log_output[i]), same_run)

    def features(self, i: int) -> TaskFeatures:
        def size(v: float) -> float | None:
            return None if np.isnan(v) else float(np.expm1(v))
        return TaskFeatures(self.categories[self.category[i]].split("/", 1)[1], size(self.log_input[i]),
                            size(self.log_output[i]), self.families[self.family[i]])


RECORDING_FAILURE = "runtime 0 recorded (a recording failure, not a measurement)"


def not_observed(task: TaskSpec) -> str | None:
    """Why a task's recorded execution is not an observation prediction may learn from or be scored against, or
    None when it is one. A recorded runtime of exactly 0 is a recording failure: a process that reads or writes
    files takes time (in the bundled traces such rows also lack avgCPU, memory and machine). The loader keeps the
    row, and the simulator replays it as an instant task; prediction treats the task as not observed."""
    if task.observed is None:
        return "no recorded execution"
    if task.observed.runtime <= 0:
        return RECORDING_FAILURE
    return None


def build_table(workflows: Sequence[Workflow]) -> ExecutionTable:
    """Flatten recorded workflows into an `ExecutionTable`, runs sorted by `executed_at`. Recorded executions
    that are not observations (`not_observed`: runtime 0) are left out, counted per reason in `dropped` and
    logged with the runs and categories they come from."""
    if not workflows:
        raise PredictionError("No workflows to learn from; give a folder of WfCommons traces")
    times = [executed_at(w) for w in workflows]
    order = sorted(range(len(workflows)), key=lambda i: (times[i], workflows[i].name))
    families = sorted({w.family or "unknown" for w in workflows})
    categories: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in ("run", "family", "category", "runtime", "inp", "out", "cpu", "mem")}
    task_ids: list[str] = []
    dropped: Counter[str] = Counter()
    where: dict[str, Counter[str]] = {}  # run -> category -> executions left out
    for r, wi in enumerate(order):
        wf = workflows[wi]
        fam = families.index(wf.family or "unknown")
        for t in wf.tasks:
            if t.observed is None:
                continue
            reason = not_observed(t)
            if reason is not None:
                dropped[reason] += 1
                where.setdefault(wf.name, Counter())[t.category] += 1
                continue
            key = f"{wf.family or 'unknown'}/{t.category}"
            cols["run"].append(r)
            cols["family"].append(fam)
            cols["category"].append(categories.setdefault(key, len(categories)))
            cols["runtime"].append(float(t.observed.runtime))
            cols["inp"].append(np.nan if t.input_bytes is None else float(t.input_bytes))
            cols["out"].append(np.nan if t.output_bytes is None else float(t.output_bytes))
            cols["cpu"].append(np.nan if t.observed.avg_cpu is None else float(t.observed.avg_cpu))
            cols["mem"].append(np.nan if not t.observed.peak_memory else float(t.observed.peak_memory))
            task_ids.append(t.id)
    if dropped:
        log.warning("build_table left out %d recorded executions (%s): %s", sum(dropped.values()),
                    "; ".join(f"{n} {reason}" for reason, n in dropped.items()),
                    "; ".join(f"{run}: " + ", ".join(f"{c} {n}" for c, n in sorted(cats.items()))
                              for run, cats in where.items()))
    a = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    return ExecutionTable(
        run=a["run"].astype(np.int64), family=a["family"].astype(np.int64), category=a["category"].astype(np.int64),
        log_runtime=np.log(np.maximum(a["runtime"], MIN_RUNTIME)), log_input=log_size(a["inp"]),
        log_output=log_size(a["out"]), cpu=a["cpu"], log_memory=np.log(a["mem"]), runtime=a["runtime"],
        memory=a["mem"], runs=[workflows[i].name for i in order], run_time=np.asarray([times[i] for i in order]),
        run_family=np.asarray([families.index(workflows[i].family or "unknown") for i in order]),
        families=families, categories=list(categories), task_ids=task_ids, dropped=dict(dropped),
    )

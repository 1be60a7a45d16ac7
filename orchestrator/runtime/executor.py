"""What runs inside a Ray worker for one task attempt: a Python callable, a shell command, or a trace replay
(sleep the recorded runtime x time scale). It captures stdout/stderr, enforces the memory request, and measures
duration, cpu time and peak memory. User errors never escape: they come back in the `AttemptReport`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import marshal
import os
import pickle
import resource
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

CAPTURE_LIMIT = 64 * 1024
MEMORY_FLOOR = 256 * 1024**2  # a shell command's address space never gets less than this


@dataclass
class TaskPayload:
    """Everything a worker needs to run one task attempt (small, picklable, built once per task). It travels as
    `as_tuple()` (plain values)."""

    run_id: str
    task_id: str
    attempt: int
    kind: str  # "python" | "shell" | "replay" | "noop"
    entrypoint: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    ref_names: list[str]  # parent ids whose results arrive as extra positional arguments, in this order
    memory_limit: int  # bytes; 0 = not enforced
    timeout: float | None
    replay_seconds: float = 0.0

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in _PAYLOAD_FIELDS)


@dataclass
class AttemptReport:
    ok: bool
    started: float
    finished: float
    cpu_seconds: float
    peak_memory: int
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    error_kind: str | None = None  # "exception" | "exit_code" | "memory" | "timeout" | "import"
    has_value: bool = False  # the task returned something other than None (to be persisted)
    node_id: str | None = None  # the Ray node that actually ran the attempt
    pid: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def as_tuple(self) -> tuple:
        """Plain values in field order: Ray serialises them with msgpack, much cheaper than pickling the class."""
        return tuple(getattr(self, name) for name in _REPORT_FIELDS)


_PAYLOAD_FIELDS = tuple(TaskPayload.__dataclass_fields__)
_REPORT_FIELDS = tuple(AttemptReport.__dataclass_fields__)


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    """Replace {"$ref": "task"} placeholders (at any depth of lists/dicts) by that parent's result."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return results[value["$ref"]]
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    return value


_RESOLVED: dict[str, Any] = {}


def resolve_entrypoint(entrypoint: str):
    """Import `module:function` (once per worker process); raise ImportError/AttributeError naming the
    entrypoint."""
    target = _RESOLVED.get(entrypoint)
    if target is None:
        target = _RESOLVED[entrypoint] = _resolve(entrypoint)
    return target


def _resolve(entrypoint: str):
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module '{module_name}' of entrypoint '{entrypoint}': {exc}") from exc
    try:
        target = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise AttributeError(f"module '{module_name}' has no attribute '{attr}' (entrypoint '{entrypoint}')") from None
    target = getattr(target, "__orchestrator_function__", target)  # unwrap @task
    if not callable(target):
        raise TypeError(f"entrypoint '{entrypoint}' is not callable")
    return target


def _clip(text: str) -> str:
    if len(text) <= CAPTURE_LIMIT:
        return text
    return text[: CAPTURE_LIMIT // 2] + "\n...[truncated]...\n" + text[-CAPTURE_LIMIT // 2:]


@contextlib.contextmanager
def _address_space_limit(extra_bytes: int):
    """Cap this worker's address space at its current size + `extra_bytes` for the duration of the call."""
    if extra_bytes <= 0:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        yield
        return
    limit = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _peak_rss(who=resource.RUSAGE_SELF) -> int:
    return int(resource.getrusage(who).ru_maxrss) * 1024


def run_attempt(payload: TaskPayload, *parent_results: Any) -> tuple[Any, AttemptReport]:
    """Run one attempt; return (value, report). Never raises for a failure of the task itself."""
    started = time.time()
    cpu0 = time.process_time()
    results = dict(zip(payload.ref_names, parent_results))
    value: Any = None
    report = AttemptReport(ok=True, started=started, finished=started, cpu_seconds=0.0, peak_memory=0,
                           pid=os.getpid())
    try:
        if payload.kind == "python":
            fn = resolve_entrypoint(payload.entrypoint)
            args = _substitute(payload.args, results)
            kwargs = _substitute(payload.kwargs, results)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    with _address_space_limit(payload.memory_limit):
                        value = fn(*args, **kwargs)
                finally:
                    report.stdout, report.stderr = _clip(out.getvalue()), _clip(err.getvalue())
        elif payload.kind == "shell":
            value = _run_shell(payload, results, report)
        elif payload.kind == "replay":
            time.sleep(payload.replay_seconds)
        report.peak_memory = _peak_rss()
    except MemoryError:
        report.ok = False
        report.error_kind = "memory"
        report.error = (f"Task '{payload.task_id}' exceeded its memory request of "
                        f"{payload.memory_limit / 1024**2:.0f} MiB (MemoryError)")
    except (ImportError, AttributeError, TypeError) as exc:
        report.ok = False
        is_import = isinstance(exc, ImportError) or "entrypoint" in str(exc)
        report.error_kind = "import" if is_import else "exception"
        report.error = f"{type(exc).__name__}: {exc}" if is_import else traceback.format_exc()
    except (Exception, SystemExit):  # the task's own failure: reported, never raised
        report.ok = False
        if report.error_kind is None:
            report.error_kind = "exception"
        if report.error is None:
            report.error = traceback.format_exc()
    report.finished = time.time()
    report.has_value = report.ok and value is not None
    report.cpu_seconds = time.process_time() - cpu0 + report.extra.pop("child_cpu", 0.0)
    return (value if report.ok else None), report


def _run_shell(payload: TaskPayload, results: dict[str, Any], report: AttemptReport) -> Any:
    command = payload.entrypoint or ""
    args = [str(a) for a in _substitute(payload.args, results)]
    if args:
        command = command + " " + " ".join(shlex.quote(a) for a in args)
    limit = max(payload.memory_limit, MEMORY_FLOOR) if payload.memory_limit else 0

    def _limit():  # runs in the child before exec
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                              timeout=payload.timeout, preexec_fn=_limit)
    except subprocess.TimeoutExpired as exc:
        report.stdout = _clip(exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        report.stderr = _clip(exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or ""))
        report.error_kind = "timeout"
        report.error = f"Task '{payload.task_id}' timed out after {payload.timeout:g} s"
        raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report.extra["child_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report.stdout, report.stderr = _clip(proc.stdout), _clip(proc.stderr)
    if proc.returncode != 0:
        report.error_kind = "exit_code"
        memory_hint = ""
        if limit and ("MemoryError" in proc.stderr or "Cannot allocate memory" in proc.stderr
                      or "out of memory" in proc.stderr.lower()):
            report.error_kind = "memory"
            if limit > payload.memory_limit:
                memory_hint = (f" (exceeded its memory limit of {limit / 1024**2:.0f} MiB: its request of "
                               f"{payload.memory_limit / 1024**2:.0f} MiB raised to the "
                               f"{MEMORY_FLOOR / 1024**2:.0f} MiB floor of a shell command's address space)")
            else:
                memory_hint = f" (exceeded its memory request of {limit / 1024**2:.0f} MiB)"
        report.error = f"Command exited with code {proc.returncode}{memory_hint}: {command}\n{_clip(proc.stderr)[-2000:]}"
        raise RuntimeError(report.error)
    out = proc.stdout.strip()
    return out if out else None


_NODE_ID: list[str | None] = []


def current_node_id() -> str | None:
    """The Ray node of this worker process (looked up once: a worker never moves)."""
    if not _NODE_ID:
        try:
            import ray

            _NODE_ID.append(ray.get_runtime_context().get_node_id())
        except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests)
            return None
    return _NODE_ID[0]


def pack(values: tuple) -> bytes:
    """Payloads and reports cross process boundaries as bytes: `marshal` for plain values (most of them: several
    times cheaper than Ray's general serialiser), pickle for anything else (user objects in task arguments)."""
    try:
        return b"m" + marshal.dumps(values)
    except ValueError:
        return b"p" + pickle.dumps(values, protocol=5)


def unpack(data: bytes) -> tuple:
    return marshal.loads(data[1:]) if data[:1] == b"m" else pickle.loads(data[1:])


def execute(payload: bytes, *parent_outcomes: tuple) -> tuple[Any, bytes]:
    """The body of the Ray task (see `actor.py`): takes `pack(TaskPayload.as_tuple())` and the parents' outcomes,
    returns its own outcome as one object, (value, `pack(AttemptReport.as_tuple())`); `report_from` rebuilds
    the report."""
    value, report = run_attempt(TaskPayload(*unpack(payload)), *(o[0] for o in parent_outcomes))
    report.node_id = current_node_id()
    sys.stdout.flush()
    return value, pack(report.as_tuple())


def report_from(packed: bytes) -> AttemptReport:
    """The report of an attempt from its packed form."""
    return AttemptReport(*unpack(packed))

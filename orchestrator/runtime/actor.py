"""The orchestrator actor: a named, detached Ray actor that owns admission and dispatch of workflow runs.

It keeps the ready set itself and starts a task only when the node the policy chose has room, so the scheduling
policy - not Ray's own queue - decides what runs next and where. Every state change is written to the store
(with its event, in one transaction) before the actor acts on it; on start it resumes every unfinished run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import (
    InvalidTransitionError,
    LeaseLostError,
    OrchestratorError,
    StoreError,
    StoreUnavailableError,
)
from ..model import Workflow, ref_names
from ..scheduling.interface import NodeView
from ..states import TaskStatus, WorkflowStatus
from ..store import Store
from ..store import results as result_codec
from ..store.records import (
    DecisionRecord,
    ExecutionRecord,
    MetricRecord,
    SystemSample,
    TaskChange,
    WorkflowChange,
)
from .config import RuntimeConfig
from .executor import AttemptReport, TaskPayload, execute, pack, report_from
from .journal import WriteJournal
from .metrics import RuntimeMetrics
from .state import RetryPolicy, RunState, RuntimeState

log = logging.getLogger("orchestrator.runtime")

_execute_remote = ray.remote(max_retries=0)(execute)  # one object: (value, packed report)


@dataclass
class _Attempt:
    run: RunState
    index: int
    attempt: int
    node: int
    ref: Any  # the attempt's object: (value, packed report); children take the value from it
    started: float
    deadline: float | None
    recorded: bool = False  # its execution row is already written (stopped by a cancel)


def _payload(run: RunState, i: int, attempt: int) -> TaskPayload:
    spec = run.specs[i]
    time_scale = float(run.workflow.metadata.get("time_scale", 1.0))
    kind = spec.entrypoint_kind
    if kind == "none":
        kind = "replay" if spec.duration is not None else "noop"
    refs = set(ref_names(spec.args, spec.kwargs))
    return TaskPayload(
        run_id=run.run_id,
        task_id=spec.id,
        attempt=attempt,
        kind=kind,
        entrypoint=spec.entrypoint,
        args=list(spec.args),
        kwargs=dict(spec.kwargs),
        ref_names=sorted(refs),
        memory_limit=int(spec.resources.memory),
        timeout=spec.timeout,
        replay_seconds=(spec.duration or 0.0) * time_scale,
    )


_ADMIT_TASKS = 256  # runs recorded and admitted per loop iteration, in tasks (at least one run)
_FINAL_KEPT = 10_000  # final progress of this many ended runs is kept in memory


def _name_of(workflow: Any) -> str | None:
    """The name of a submitted workflow (a model or its dict), for messages about it."""
    if isinstance(workflow, Workflow):
        return workflow.name
    return workflow.get("name") if isinstance(workflow, dict) else None


def _progress_of(run: RunState) -> dict:
    return {"run_id": run.run_id, "name": run.name, "status": run.wf_status.value, "counts": run.counts(),
            "total": run.dag.n, "error": run.error}


@dataclass
class _Admission:
    """A submitted run waiting for the loop to record and admit it (`Orchestrator._admit_waiting`)."""

    workflow: Workflow
    policy: str
    run_id: str | None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class _Launch:
    """What dispatching one task needs besides its attempt number, built at its first dispatch."""

    payload: TaskPayload
    resources: tuple  # (cpus, memory, gpus, custom items)


def _json_logs(data_dir: str) -> None:
    """Structured logs: JSON lines carrying run and task ids, to stderr (Ray's worker log) and to
    <data-dir>/logs/orchestrator.jsonl."""
    from pathlib import Path

    from ..store.logs import JsonFormatter, configure_json_logging

    root = logging.getLogger("orchestrator")
    if any(getattr(h, "_orchestrator_json", False) for h in root.handlers):
        return
    handler = configure_json_logging(logging.INFO, component="orchestrator-actor")
    handler._orchestrator_json = True
    path = Path(data_dir) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path / "orchestrator.jsonl")
    file_handler.setFormatter(JsonFormatter({"component": "orchestrator-actor"}))
    root.addHandler(file_handler)


def _normal_priority() -> str:
    """Ray starts workers (and so this actor) at niceness 15. The orchestrator is the control plane, like the
    raylet and the GCS: run every thread of this process at normal priority where allowed, so that its dispatch
    loop is not starved by the tasks it runs. Without the privilege, say so (RAY_worker_niceness=0 also works)."""
    import os

    try:
        for tid in os.listdir("/proc/self/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), 0)
        return "normal"
    except (OSError, PermissionError) as exc:
        log.warning("orchestrator actor stays at niceness %s (%s); set RAY_worker_niceness=0 for a faster "
                    "dispatch loop", os.getpriority(os.PRIO_PROCESS, 0), exc)
        return "niced"


class Orchestrator:
    """The actor's body (also usable in-process for tests). Thread-safe: one lock guards the state."""

    def __init__(self, config: dict | RuntimeConfig | None = None):
        self.config = config if isinstance(config, RuntimeConfig) else RuntimeConfig(**(config or {}))
        cfg = self.config
        _json_logs(cfg.data_dir)
        self.store = Store.open(cfg.db_url, data_dir=cfg.data_dir)
        self.lock = threading.RLock()
        self._run_ended = threading.Condition(self.lock)  # notified when a run reaches a final status
        self.metrics = RuntimeMetrics()
        self.nodes = NodeView([], [], [], [])
        self.node_ids: list[str] = []
        self.node_alive: list[bool] = []
        self.node_custom: list[dict[str, float]] = []
        self._refresh_nodes(force=True)
        self.state = RuntimeState(
            self.nodes, cfg.default_policy,
            RetryPolicy(cfg.retry_base, cfg.retry_cap, cfg.retry_jitter, cfg.system_retries),
            default_duration=cfg.default_duration, ahead=cfg.dispatch_ahead, ahead_max_s=cfg.dispatch_ahead_max_s,
        )
        self.state.node_filter = self._nodes_offering
        self.running: dict[Any, _Attempt] = {}  # attempt object ref -> attempt
        self._by_task: dict[tuple[str, int], _Attempt] = {}
        self._value_refs: dict[tuple[str, int], Any] = {}  # results of finished tasks, for their children
        self._options_cache: dict[tuple, Any] = {}
        self._launches: dict[tuple[str, int], _Launch] = {}
        self._executions: list[ExecutionRecord] = []
        self._unsaved_results: list[tuple[str, str, Any]] = []  # (run id, task id, value) to persist before flush
        self._to_launch: list[tuple[RunState, Any, int]] = []  # decided, their start not yet written: launched after
        self._decision_rows: list[DecisionRecord] = []
        self._metric_rows: list[MetricRecord] = []  # performance metrics of ended runs, not yet written
        self._stop = threading.Event()
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # a None wakes the loop (submitted, cancelled)
        self._admit_lock = threading.Lock()
        self._final: OrderedDict[str, dict] = OrderedDict()  # progress of the latest runs that ended here
        self._admissions: list[_Admission] = []  # submitted, not yet recorded
        self._last_nodes = time.monotonic()
        self._last_sample = 0.0
        self.loop_error: str | None = None
        self.store_error: str | None = None  # set while the store is unreachable (writes wait in the journal)
        self._needs_resync = False
        self.timing: dict[str, float] = {k: 0.0 for k in ("wait", "complete", "dispatch_and_write",
                                                           "schedule", "write", "submit", "iterations",
                                                           "admit", "admitted", "admission_batches")}
        # One orchestrator per store: a second one would take the first one's running tasks for orphans and run
        # them again. Waits for the lease of one that died to lapse; refuses while another is alive.
        import os
        import socket
        import uuid

        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.journal = WriteJournal(self.store, self._owner)
        self.store.acquire_lease(self._owner, ttl=cfg.lease_ttl_s, wait=cfg.lease_ttl_s + 2.0,
                                 host=socket.gethostname(), pid=os.getpid())
        try:
            self._dispatcher = self._start_event_dispatcher()
            self.predictions = self._start_predictions()
            self.resumed = self._resume_all()
        except BaseException:
            self.store.release_lease(self._owner)  # this one never ran: the next start need not wait
            raise
        self._thread = threading.Thread(target=self._loop, name="orchestrator-loop", daemon=True)
        self._thread.start()
        self._keeper = threading.Thread(target=self._keep_lease, name="orchestrator-lease", daemon=True)
        self._keeper.start()
        self.priority = _normal_priority()
        # Everything made so far (Ray, SQLAlchemy, pydantic, numpy, the store, resumed runs) lives as long as the
        # actor: keep it out of the cyclic collector's full passes, which otherwise rescan it when a burst of
        # submissions allocates many objects (about 0.1 s before the first task of 200 runs started).
        import gc

        gc.freeze()

    # ---- public API (actor methods) ------------------------------------------------------------------------
    def ping(self) -> dict:
        import os

        return {"ok": self.loop_error is None and self.store_error is None,
                "error": self.loop_error or self.store_error, "data_dir": self.config.data_dir,
                "pid": os.getpid(), "priority": getattr(self, "priority", None),
                "db": self.store.url_masked if hasattr(self.store, "url_masked") else None,
                "active_runs": len(self.state.jobs), "policy": self.config.default_policy,
                "resumed_at_start": list(self.resumed)}

    def submit(self, workflow: dict | Workflow, policy: str | None = None, run_id: str | None = None,
               time_scale: float | None = None) -> str:
        """Record a run of `workflow` and start it; returns its run id once the run is durably recorded. A
        workflow refused before it becomes a run is recorded as a `workflow.rejected` event."""
        try:
            admission = self._admission(workflow, policy, run_id, time_scale)
        except Exception as exc:
            self._record_rejection(workflow, exc)
            raise
        return self._submit([admission])[0]

    def submit_many(self, workflows: list[dict | Workflow], policy: str | None = None,
                    time_scale: float | None = None) -> list[str]:
        """`submit` for several workflows in one call and one transaction; their run ids in order. Every
        workflow is checked first: if one is refused, none is recorded."""
        admissions = []
        for k, wf in enumerate(workflows):
            try:
                admissions.append(self._admission(wf, policy, None, time_scale))
            except Exception as exc:
                self._record_rejection(wf, exc)
                raise OrchestratorError(f"Workflow {k + 1} of {len(workflows)} ({_name_of(wf) or 'unnamed'}) was "
                                        f"refused, so none was recorded: {exc}") from exc
        return self._submit(admissions)

    def _record_rejection(self, workflow: Any, exc: BaseException) -> None:
        try:
            self.store.record_rejection(f"{type(exc).__name__}: {exc}", name=_name_of(workflow), source="submit")
        except Exception:  # noqa: BLE001 - the caller still gets the error itself
            log.exception("could not record the rejected workflow %s", _name_of(workflow))

    def _admission(self, workflow: dict | Workflow, policy: str | None, run_id: str | None,
                   time_scale: float | None) -> _Admission:
        """Check a submitted workflow (an unknown policy or a task too large for every node is refused before
        anything is recorded)."""
        wf = workflow if isinstance(workflow, Workflow) else Workflow.model_validate(workflow)
        if time_scale is not None:
            wf = wf.model_copy(update={"metadata": {**wf.metadata, "time_scale": float(time_scale)}})
        name = policy or wf.policy or self.config.default_policy
        from ..scheduling import get_policy

        get_policy(name)
        self._check_fits(wf)
        return _Admission(wf, name, run_id)

    def _submit(self, admissions: list[_Admission]) -> list[str]:
        """Hand runs to the loop, which records them (with every other run submitted meanwhile, in one
        transaction) and admits them; return once that is done. Nothing is recorded for a run if that fails."""
        with self._admit_lock:
            self._admissions.extend(admissions)
        self._done.put(None)
        for admission in admissions:
            while not admission.done.wait(1.0):
                if self._stop.is_set() or not self._thread.is_alive():
                    raise OrchestratorError("The orchestrator is shutting down: the workflow run was not submitted")
        errors = [a for a in admissions if a.error is not None]
        if errors and len(admissions) == 1:
            raise errors[0].error
        if errors:
            recorded = [a.run_id for a in admissions if a.error is None]
            raise OrchestratorError(
                f"{len(errors)} of {len(admissions)} workflow runs could not be recorded (first: "
                f"{errors[0].error}); recorded and running: {', '.join(recorded) or 'none'}") from errors[0].error
        return [a.run_id for a in admissions]

    def _admit_waiting(self) -> None:
        """Record every submitted run in one transaction and start tracking them (with the lock held). Their
        start (running, first tasks ready) is written by this iteration's next transaction, before any of their
        tasks is dispatched."""
        with self._admit_lock:
            # At most about _ADMIT_TASKS tasks' worth per iteration, so that the first runs' tasks start while
            # later ones are still being recorded.
            taken = tasks = 0
            for a in self._admissions:
                taken += 1
                tasks += len(a.workflow.tasks)
                if tasks >= _ADMIT_TASKS:
                    break
            batch, self._admissions = self._admissions[:taken], self._admissions[taken:]
            if self._admissions:
                self._done.put(None)  # the next iteration does not wait for a completion first
        if not batch:
            return
        self.timing["admission_batches"] += 1
        self.timing["admitted"] += len(batch)
        try:
            run_ids = self.store.create_workflows([(a.workflow, a.policy, a.run_id) for a in batch])
        except Exception as exc:  # noqa: BLE001 - one at a time, so that each caller gets its own answer
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            run_ids = []
            for a in batch:
                try:
                    run_ids.extend(self.store.create_workflows([(a.workflow, a.policy, a.run_id)]))
                except Exception as one:  # noqa: BLE001 - handed to that caller
                    a.error = one
                    run_ids.append(None)
        now = time.time()
        for a, run_id in zip(batch, run_ids):
            if run_id is not None:
                try:
                    run = self.state.admit(run_id, a.workflow, now, policy=a.policy)
                    if self.predictions is not None:
                        self.predictions.admitted(run)
                    a.run_id = run_id
                    log.info("workflow run submitted",
                             extra={"run_id": run_id, "tasks": len(a.workflow.tasks), "policy": a.policy})
                except Exception:  # noqa: BLE001 - recorded: the loop re-reads the store and runs it
                    a.run_id = run_id
                    self._needs_resync = True
                    log.exception("could not admit %s; will re-read the store", run_id)
            a.done.set()
        return run_id

    def cancel(self, run_id: str) -> bool:
        with self.lock:
            run = self.state.by_run.get(run_id)
            if run is None or run.wf_status.terminal:
                return False
            now = time.time()
            running = self.state.cancel(run, now)
            stopping = [att for att in (self._by_task.get((run_id, i)) for i in running) if att is not None]
            for att in stopping:  # their execution rows go in the same transaction as the cancel itself
                self._execution(att, TaskStatus.CANCELLED.value, now, error="workflow cancelled while running")
                att.recorded = True
            self._flush()
            for att in stopping:
                ray.cancel(att.ref, force=True)
        self._done.put(None)
        return True

    def resume(self, run_id: str | None = None) -> list[str]:
        """Resume unfinished runs not yet tracked (all of them, or one)."""
        with self.lock:
            return self._resume_all(only=run_id)

    def progress(self, run_id: str) -> dict:
        """A run's status and task counts: from memory while it is tracked or recently finished, else the store."""
        return self.progress_many([run_id])[0]

    def progress_many(self, run_ids: list[str]) -> list[dict]:
        """`progress` of several runs in one call."""
        found: dict[str, dict] = {}
        with self.lock:
            for run_id in run_ids:
                run = self.state.by_run.get(run_id)
                if run is not None:
                    found[run_id] = _progress_of(run)
                elif run_id in self._final:
                    found[run_id] = self._final[run_id]
        for run_id in run_ids:
            if run_id not in found:
                rec = self.store.get_workflow(run_id)
                counts = self.store.task_counts(run_id)
                found[run_id] = {"run_id": run_id, "name": rec.name, "status": rec.status.value, "counts": counts,
                                 "total": sum(counts.values()), "error": rec.error}
        return [found[run_id] for run_id in run_ids]

    def wait(self, run_id: str, timeout: float | None = None) -> dict:
        """Block until the run is final (or `timeout` seconds pass); its progress. No polling: the caller's
        thread sleeps until the run ends."""
        return self.wait_many([run_id], timeout)[0]

    def wait_many(self, run_ids: list[str], timeout: float | None = None) -> list[dict]:
        """Block until every run tracked here is final (or `timeout` seconds pass); the progress of each. A run
        that is not tracked (not submitted here, or still being resumed) is reported as stored, without waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._run_ended:
            while True:
                by_run = self.state.by_run
                if not any((run := by_run.get(r)) is not None and not run.wf_status.terminal for r in run_ids):
                    break
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._run_ended.wait(min(remaining, 1.0))
        return self.progress_many(run_ids)

    def wait_events(self, run_ids: list[str], timeout: float | None = None) -> dict:
        """Block until every event of these runs recorded so far (for an ended run: up to its final event) has been
        delivered to every event sink, or `timeout` seconds pass: {"delivered": bool, "event_id": the newest event
        of the runs, "behind": the sinks that lack it, with their last error}."""
        if self._dispatcher is None:
            return {"delivered": True, "event_id": 0, "behind": []}
        return self._dispatcher.wait_runs_delivered(run_ids, timeout)

    def stats(self) -> dict:
        with self.lock:
            return {"active_runs": len(self.state.jobs), "ready": self.state.num_ready(),
                    "running": len(self.running), "queued_ahead": self.state.num_ahead(),
                    "nodes": len([a for a in self.node_alive if a]),
                    "free_cpus": sum(c for c, a in zip(self.nodes.free_cpus, self.node_alive) if a),
                    "loop_seconds": dict(self.timing)}

    def shutdown(self) -> None:
        self._stop.set()
        self._done.put(None)
        self._thread.join(timeout=5)
        self._keeper.join(timeout=5)
        try:
            with self.lock:
                self._flush_before_stop()
                self._sample(time.time(), force=True)  # the last performance metrics
        except Exception:  # noqa: BLE001 - shutting down: say so, carry on
            log.exception("could not write the last changes, samples and metrics")
        with self._admit_lock:
            left, self._admissions = self._admissions, []
        for a in left:  # never recorded
            a.error = OrchestratorError("The orchestrator shut down: the workflow run was not submitted")
            a.done.set()
        if self._dispatcher is not None:
            self._dispatcher.drain(timeout=10.0)  # everything committed goes out first (bounded; logs what is left)
            self._dispatcher.stop()
        if self.predictions is not None:
            self.predictions.stop()
        try:
            self.store.release_lease(self._owner)
        except Exception:  # noqa: BLE001 - it lapses by itself
            log.warning("could not release the orchestrator lease; it lapses in %s s", self.config.lease_ttl_s)
        self.store.close()

    def _flush_before_stop(self, within_s: float = 10.0) -> None:
        """Write what the journal holds before stopping, trying for up to `within_s` seconds while the store is
        unreachable; what is still unwritten then is named in the log (a later orchestrator resumes the runs)."""
        deadline = time.monotonic() + within_s
        while not self._flush(force=True) and len(self.journal) and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(self.journal):
            log.error("stopping with %d changes, %d execution rows unwritten (store unreachable: %s)",
                      len(self.journal.changes), len(self.journal.executions), self.journal.last_error)

    def _keep_lease(self) -> None:
        """Renew this orchestrator's lease on the store, and carry out cancel requests made through the store
        (`orchestrator cancel` when it cannot reach this actor), about once a second."""
        every = min(1.0, self.config.lease_ttl_s / 4)
        while not self._stop.wait(every):
            try:
                if not self.store.renew_lease(self._owner):
                    log.error("another orchestrator took this store over (this one stalled for more than %s s): "
                              "stopping, it runs the workflows from now on", self.config.lease_ttl_s)
                    self._stop.set()
                    self._done.put(None)
                    return
                for run_id in self.store.cancel_requests():
                    if run_id in self.state.by_run:
                        log.info("cancel requested through the store", extra={"run_id": run_id})
                        self.cancel(run_id)
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable: try again
                log.exception("could not renew the lease or read cancel requests")

    # ---- internals -------------------------------------------------------------------------------------------
    def _nodes_offering(self, custom: dict[str, float]) -> frozenset[int]:
        return frozenset(i for i, res in enumerate(self.node_custom)
                         if self.node_alive[i] and all(res.get(k, 0.0) >= v for k, v in custom.items()))

    def _check_fits(self, wf: Workflow) -> None:
        for t in wf.tasks:
            r = t.resources
            fits = [i for i in range(len(self.node_ids)) if self.node_alive[i]
                    and r.cpus <= self.nodes.cap_cpus[i] + 1e-9 and r.memory <= self.nodes.cap_memory[i]
                    and r.gpus <= self.nodes.cap_gpus[i] + 1e-9]
            if not fits:
                raise OrchestratorError(
                    f"Task '{t.id}' requests cpus={r.cpus:g}, memory={r.memory} B, gpus={r.gpus:g}: no node of "
                    "the Ray cluster is that large, so it could never run; lower the request or add a larger node"
                )
            if r.custom and not set(fits) & self._nodes_offering(r.custom):
                raise OrchestratorError(
                    f"Task '{t.id}' requests custom resources {r.custom}: no node of the Ray cluster offers them "
                    "together with its cpus and memory")

    def _start_predictions(self):
        if not self.config.predict_tasks:
            return None
        from .prediction import TaskPredictions

        try:
            predictions = TaskPredictions(self.store, self.lock, self.config.models_dir)
            predictions.on_predicted = self.state.update_predictions
            return predictions
        except Exception as exc:  # noqa: BLE001 - no trained model: run without predictions, say so
            log.warning("task predictions off: %s", exc)
            return None

    def _start_event_dispatcher(self):
        cfg = self.config
        if not (cfg.redis_url or cfg.webhook_url or cfg.event_subscribers):
            return None
        from ..store import EventDispatcher, RedisStreamSink, WebhookSink

        sinks = []
        if cfg.event_subscribers:
            import importlib

            from ..store.sinks import InProcessSink

            local = InProcessSink("in-process:orchestrator", durable=True)  # resumes where it stopped
            for spec in cfg.event_subscribers:
                target, _, prefix = spec.partition("@")
                module, _, name = target.partition(":")
                try:
                    callback = getattr(importlib.import_module(module), name)
                except (ImportError, AttributeError, ValueError) as exc:
                    raise OrchestratorError(f"Event subscriber '{spec}' cannot be loaded ({exc}); give it as "
                                            "module:function[@type.prefix]") from exc
                local.subscribe(callback, prefix)
            sinks.append(local)
        if self.config.redis_url:
            sinks.append(RedisStreamSink(self.config.redis_url, stream=self.config.redis_stream))
        if self.config.webhook_url:
            sinks.append(WebhookSink(self.config.webhook_url, self.config.webhook_secret))
        if not sinks:
            return None
        dispatcher = EventDispatcher(self.store, sinks)
        dispatcher.start()
        return dispatcher

    def _refresh_nodes(self, force: bool = False) -> None:
        alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        for idx, node_id in enumerate(self.node_ids):
            if self.node_alive[idx] and node_id not in alive:
                # The node is gone: no new work goes there; its tasks fail and are retried elsewhere.
                self.node_alive[idx] = False
                self.nodes.cap_cpus[idx] = self.nodes.cap_memory[idx] = self.nodes.cap_gpus[idx] = 0.0
                self.nodes.free_cpus[idx] = self.nodes.free_memory[idx] = self.nodes.free_gpus[idx] = -1e18
                log.warning("node %s left the cluster", node_id)
        for node_id, info in alive.items():
            if node_id in self.node_ids:
                continue
            res = info.get("Resources", {})
            self.node_ids.append(node_id)
            self.node_alive.append(True)
            self.node_custom.append({k: float(v) for k, v in res.items()
                                     if k not in ("CPU", "GPU", "memory", "object_store_memory")
                                     and not k.startswith("node:")})
            self.nodes.names.append(info.get("NodeManagerAddress", node_id[:8]) + "/" + node_id[:8])
            for cap, free, value in (
                (self.nodes.cap_cpus, self.nodes.free_cpus, float(res.get("CPU", 0.0))),
                (self.nodes.cap_memory, self.nodes.free_memory, float(res.get("memory", 0.0))),
                (self.nodes.cap_gpus, self.nodes.free_gpus, float(res.get("GPU", 0.0))),
            ):
                cap.append(value)
                free.append(value)

    def _resume_all(self, only: str | None = None) -> list[str]:
        """Track every unfinished run of the store (or one). A run that cannot be resumed (its stored workflow is
        refused by today's validation, say) is failed on its own, with the cause recorded."""
        resumed = []
        run_ids = [only] if only else self.store.unfinished_workflows()
        for run_id in run_ids:
            if run_id in self.state.by_run:
                continue
            try:
                loaded = self._read_run(run_id)
            except StoreUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - this run alone
                self._fail_stored_run(run_id, f"cannot be resumed: {type(exc).__name__}: {exc}")
                continue
            if loaded is None:
                continue
            rec, wf, tasks, failures = loaded
            stored = {t.task_id: (t.status, t.attempt, t.result_ref, t.next_attempt_at) for t in tasks}
            now = time.time()
            for t in tasks:
                if t.status == TaskStatus.RUNNING and t.attempt:
                    # The attempt died with the previous orchestrator (Ray fate-shares tasks with their owner);
                    # the task is requeued. Its execution row says so, so that no attempt goes unrecorded.
                    self._executions.append(ExecutionRecord(
                        run_id=run_id, task_id=t.task_id, attempt=t.attempt, status=TaskStatus.CANCELLED.value,
                        node=t.node, started_at=t.started_at, finished_at=now, exit_info="interrupted",
                        error="interrupted: the orchestrator stopped while this attempt ran; the task was requeued"))
            run = self.state.admit(run_id, wf, now, policy=rec.policy, stored=stored, stored_status=rec.status,
                                   failures=failures)
            if getattr(self, "predictions", None) is not None:
                self.predictions.admitted(run)
            resumed.append(run_id)
        self._flush(force=True)
        return resumed

    def _read_run(self, run_id: str):
        """A stored unfinished run as (record, workflow, tasks, failures per task), None if it is finished."""
        rec = self.store.get_workflow(run_id)
        if rec.status.terminal:
            return None
        wf = self.store.load_spec(run_id)
        tasks = self.store.get_tasks(run_id)
        failures: dict[str, list[int]] = {}
        for e in self.store.executions(run_id):
            own, lost = failures.setdefault(e.task_id, [0, 0])
            if e.status in ("failed", "timeout"):
                failures[e.task_id][0] += 1
            elif e.status == "lost":
                failures[e.task_id][1] += 1
        return rec, wf, tasks, {k: (v[0], v[1]) for k, v in failures.items()}

    def _fail_stored_run(self, run_id: str, error: str) -> None:
        """Fail a stored run that this orchestrator cannot run: its unfinished tasks are cancelled, the run failed
        with `error`; in one transaction, so a later orchestrator does not try it again."""
        log.error("workflow run %s %s; it is marked failed", run_id, error, extra={"run_id": run_id})
        now = time.time()
        changes: list = []
        try:
            for t in self.store.get_tasks(run_id):
                if not t.status.terminal:
                    changes.append(TaskChange(run_id, t.task_id, TaskStatus.CANCELLED, error=f"workflow run {error}",
                                              at=now, expected=t.status))
            rec = self.store.get_workflow(run_id)
            if rec.status == WorkflowStatus.PENDING:
                changes.append(WorkflowChange(run_id, WorkflowStatus.RUNNING, at=now))
            changes.append(WorkflowChange(run_id, WorkflowStatus.FAILED, error=error[:4000], at=now))
            self.store.apply(changes)
        except StoreUnavailableError:
            raise
        except Exception:  # noqa: BLE001 - say so; the run stays as it is in the store
            log.exception("could not mark run %s failed", run_id, extra={"run_id": run_id})

    def _flush(self, force: bool = False) -> bool:
        """Write every pending change (and its events) and the history rows in one transaction, through the write
        journal; then start what was decided. False while the store is unreachable: everything stays in the
        journal, is written by a later flush (bounded backoff), and no task starts meanwhile."""
        journal = self.journal
        journal.add(self.state.take_changes(), self._executions, self._decision_rows)
        self._executions, self._decision_rows = [], []
        if self._unsaved_results and not self._save_results():
            self._note_outage()
            return False
        try:
            written = journal.flush(force)
        except LeaseLostError as exc:
            log.error("%s: stopping; the orchestrator that took the store over runs the workflows from now on", exc)
            self._stop.set()
            self._done.put(None)
            return False
        except (StoreError, InvalidTransitionError) as exc:
            self._refused(exc)
            return True
        if written is None:
            self._note_outage()
            return False
        self.store_error = None
        for ch in written:
            if isinstance(ch, WorkflowChange) and ch.status.terminal:
                self._on_run_finished(ch.run_id)
        if self._to_launch:
            self._launch(time.time())
        return True

    def _note_outage(self) -> None:
        journal = self.journal
        since = time.strftime("%H:%M:%S", time.localtime(journal.outage_since or time.time()))
        self.store_error = f"store unreachable since {since}: {journal.last_error}"

    def _save_results(self) -> bool:
        """Persist the results of finished tasks before their success is written (a resumed run hands them to
        the children). False if the store is unreachable (kept for the next flush)."""
        while self._unsaved_results:
            run_id, task_id, value = self._unsaved_results[0]
            try:
                self.store.save_result(run_id, task_id, value)
            except StoreUnavailableError as exc:
                self.journal._failed(exc)
                return False
            except StoreError as exc:  # e.g. unwritable storage_dir: the task's success is still recorded
                log.error("result of task %s not persisted: %s", task_id, exc,
                          extra={"run_id": run_id, "task_id": task_id})
            self._unsaved_results.pop(0)
        return True

    def _refused(self, exc: BaseException) -> None:
        """The store refused a batch (it disagrees with what this orchestrator holds in memory): write each run's
        part on its own, so that only the runs the store refuses are re-read from it; the others go on."""
        journal = self.journal
        changes, executions, decisions = journal.changes, journal.executions, journal.decisions
        journal.changes, journal.executions, journal.decisions = [], [], []
        run_ids = list(dict.fromkeys([c.run_id for c in changes] + [e.run_id for e in executions]))
        refused: dict[str, str] = {}
        for run_id in run_ids:
            part = ([c for c in changes if c.run_id == run_id], [e for e in executions if e.run_id == run_id],
                    [d for d in decisions if d.run_id == run_id])
            journal.add(*part)
            try:
                written = journal.flush(force=True)
            except (StoreError, InvalidTransitionError) as one:
                journal.changes, journal.executions, journal.decisions = [], [], []
                refused[run_id] = str(one)
                continue
            if written is None:  # unreachable after all: keep the rest for later, in order
                rest = run_ids[run_ids.index(run_id) + 1:]
                journal.add([c for c in changes if c.run_id in rest], [e for e in executions if e.run_id in rest],
                            [d for d in decisions if d.run_id in rest])
                break
            for ch in written:
                if isinstance(ch, WorkflowChange) and ch.status.terminal:
                    self._on_run_finished(ch.run_id)
        for run_id, error in refused.items():
            log.error("the store refused the changes of run %s (%s); re-reading that run from the store", run_id,
                      error, extra={"run_id": run_id})
            self._reload_run(run_id)
        if self._to_launch:
            self._launch(time.time())

    def _on_run_finished(self, run_id: str) -> None:
        with self._run_ended:
            run = self.state.by_run.pop(run_id, None)
            if run is not None:  # answered from memory from now on (the store has the same)
                self._final[run_id] = _progress_of(run)
                if len(self._final) > _FINAL_KEPT:
                    self._final.popitem(last=False)
            self._run_ended.notify_all()
        if run is None:
            return
        for i in range(run.dag.n):
            self._value_refs.pop((run_id, i), None)
            self._launches.pop((run_id, i), None)
        now = time.time()
        jct = now - run.arrival
        self.metrics.workflow_finished(run.wf_status.value, jct, run.policy_name)
        # Performance metrics of the run, written with the next system sample (or at shutdown).
        labels = {"policy": run.policy_name, "status": run.wf_status.value, "workflow": run.name}
        counts = run.counts()
        self._metric_rows += [
            MetricRecord("workflow_jct_s", jct, labels, run_id, now),
            MetricRecord("workflow_tasks", float(run.dag.n), labels, run_id, now),
            MetricRecord("workflow_tasks_succeeded", float(counts.get("succeeded", 0)), labels, run_id, now),
            MetricRecord("workflow_attempts", float(sum(run.attempts)), labels, run_id, now),
        ]
        log.info("workflow run %s", run.wf_status.value, extra={"run_id": run_id, "jct_s": jct})

    def _options(self, cpus: float, memory: float, gpus: float, custom: tuple, node: int):
        key = (cpus, memory, gpus, custom, node)
        opts = self._options_cache.get(key)
        if opts is None:
            kwargs: dict[str, Any] = {
                "num_cpus": cpus,
                "num_gpus": gpus,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(self.node_ids[node], soft=False),
            }
            if memory > 0:
                kwargs["memory"] = int(memory)
            if custom:
                kwargs["resources"] = dict(custom)
            opts = self._options_cache[key] = _execute_remote.options(**kwargs)
        return opts

    def _parent_value(self, run: RunState, name: str):
        i = run.dag.index[name]
        ref = self._value_refs.get((run.run_id, i))
        if ref is None:
            # Resumed run: the parent's result was persisted before the restart.
            result_ref = run.result_refs[i]
            value = self.store.load_result(result_ref) if result_ref else None
            ref = self._value_refs[(run.run_id, i)] = ray.put((value, None))
        return ref

    def _dispatch(self, now: float) -> None:
        if self.journal.blocked or self._to_launch:
            return  # earlier writes wait for the store: nothing new starts before they are written
        t0 = time.perf_counter()
        decisions = self.state.schedule(now)
        latency_us = (time.perf_counter() - t0) * 1e6
        self.timing["schedule"] += latency_us / 1e6
        if not decisions:
            return
        per_decision = latency_us / len(decisions)
        self.metrics.decisions(len(decisions), per_decision)
        if self.config.record_decisions:
            ready = self.state.num_ready()
            for run, d in decisions:
                self._decision_rows.append(DecisionRecord(
                    run_id=run.run_id, task_id=run.dag.ids[d.task.task], policy=run.policy_name,
                    node=self.nodes.names[d.node],
                    input={"ready": ready + len(decisions), "predicted": d.task.predicted,
                           "cpus": d.task.cpus, "memory": d.task.memory},
                    output={"node": d.node}, latency_us=per_decision, created_at=now))
        # Durable first: the moves to running (and decisions) are committed before any task starts.
        self._to_launch.extend((run, d, run.attempts[d.task.task]) for run, d in decisions)
        t1 = time.perf_counter()
        self._flush()  # launches them once written
        self.timing["write"] += time.perf_counter() - t1

    def _launch(self, now: float) -> None:
        """Hand the decided tasks, whose start is written, to Ray on the node chosen. A task that cannot be handed
        over (its arguments cannot be built or sent) fails on its own, with the cause recorded."""
        t2 = time.perf_counter()
        decisions, self._to_launch = self._to_launch, []
        launches = self._launches
        started = 0
        for run, d, attempt in decisions:
            i = d.task.task
            if run.detail[i] != TaskStatus.RUNNING or run.attempts[i] != attempt:
                if run.attempts[i] == attempt:  # cancelled while its start was being written: it never ran
                    self._execution(_Attempt(run, i, attempt, d.node, None, now, None), "cancelled", now,
                                    error="cancelled before it started")
                continue
            spec = run.specs[i]
            try:
                launch = launches.get((run.run_id, i))
                if launch is None:
                    t = d.task
                    launch = launches[(run.run_id, i)] = _Launch(
                        _payload(run, i, 0), (t.cpus, t.memory, t.gpus, tuple(sorted(spec.resources.custom.items()))))
                payload = launch.payload
                payload.attempt = run.attempts[i]
                parents = [self._parent_value(run, name) for name in payload.ref_names]
                opts = self._options(*launch.resources, d.node)
                ref = opts.remote(pack(payload.as_tuple()), *parents)
            except Exception as exc:  # noqa: BLE001 - this task's fault (or its inputs'): fail it alone
                self._launch_failed(run, i, d, exc, now)
                continue
            # A task dispatched ahead gets its deadline when it takes a slot (`_start_clocks`).
            deadline = now + spec.timeout if spec.timeout and i not in run.ahead else None
            att = _Attempt(run, i, run.attempts[i], d.node, ref, now, deadline)
            self.running[ref] = att
            self._by_task[(run.run_id, i)] = att
            started += 1
        self.timing["submit"] += time.perf_counter() - t2
        self.metrics.started(started)

    def _launch_failed(self, run: RunState, i: int, d, exc: BaseException, now: float) -> None:
        msg = f"Task '{run.dag.ids[i]}' could not be started: {type(exc).__name__}: {exc}"
        log.error(msg, extra={"run_id": run.run_id, "task_id": run.dag.ids[i], "attempt": run.attempts[i]})
        self._launches.pop((run.run_id, i), None)
        att = _Attempt(run, i, run.attempts[i], d.node, None, now, None)
        self.state.failed(run, i, d.node, msg, now, retryable=False)
        self._execution(att, "failed", now, error=msg)
        self.metrics.failed(1, "launch")

    def _complete(self, att: _Attempt, now: float, outcome: tuple | None = None) -> None:
        """An attempt ended; `outcome` is its (value, packed report), or None to fetch it here (and name the
        cause if it is lost)."""
        run, i = att.run, att.index
        self.running.pop(att.ref, None)
        self._by_task.pop((run.run_id, i), None)
        try:
            value, packed = ray.get(att.ref) if outcome is None else outcome
            report = report_from(packed)
        except TaskCancelledError:
            self.state.failed(run, i, att.node, "cancelled", now, retryable=False)
            self._execution(att, "cancelled", now, error="cancelled")
            return
        except RayError as exc:
            # The worker or its node died, or the task could not be placed: not the task's own fault.
            cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            outcome = self.state.failed(run, i, att.node, f"system failure ({cause})", now, system=True)
            self._execution(att, "lost", now, error=cause)
            self.metrics.failed(1, "system")
            log.warning("task lost with its worker or node: %s -> %s", cause, outcome,
                        extra={"run_id": run.run_id, "task_id": run.dag.ids[i], "attempt": att.attempt})
            return
        if report.ok:
            result_ref = None
            if report.has_value:
                # Persisted (before the success is written) so that a resumed run can hand it to the children.
                self._unsaved_results.append((run.run_id, run.dag.ids[i], value))
                result_ref = result_codec.result_ref(run.run_id, run.dag.ids[i])
            self._value_refs[(run.run_id, i)] = att.ref
            self._launches.pop((run.run_id, i), None)
            self.state.succeeded(run, i, att.node, result_ref, now)
            self._execution(att, "succeeded", now, report=report)
            if self.predictions is not None:
                self.predictions.finished(run, i, report.duration,
                                          report.cpu_seconds / report.duration if report.duration > 0 else None,
                                          report.peak_memory or None)
            self.metrics.finished(1, report.duration)
        else:
            retryable = report.error_kind not in ("import",)
            outcome = self.state.failed(run, i, att.node, report.error or "failed", now, retryable=retryable)
            self._execution(att, "failed", now, report=report, error=report.error)
            self.metrics.failed(1, report.error_kind or "exception")
            last = (report.error or "").strip().splitlines()
            log.info("task attempt failed (%s): %s", outcome, last[-1] if last else "",
                     extra={"run_id": run.run_id, "task_id": run.dag.ids[i], "attempt": att.attempt})

    def _execution(self, att: _Attempt, status: str, now: float, report: AttemptReport | None = None,
                   error: str | None = None) -> None:
        if att.recorded:  # stopped by a cancel, which wrote its row
            return
        duration = report.duration if report else max(0.0, now - att.started)  # (stopped or lost: about)
        # The node that actually ran it (as Ray reports), which the tests compare with the policy's choice.
        node = self.nodes.names[att.node] if att.node < len(self.nodes.names) else None
        if report is not None and report.node_id in self.node_ids:
            node = self.nodes.names[self.node_ids.index(report.node_id)]
        elif report is not None and report.node_id:
            node = report.node_id[:8]
        self._executions.append(ExecutionRecord(
            run_id=att.run.run_id, task_id=att.run.dag.ids[att.index], attempt=att.attempt, status=status,
            node=node,
            started_at=report.started if report else att.started, finished_at=report.finished if report else now,
            exit_info=report.error_kind if report else status, error=error, duration=duration,
            cpu=(report.cpu_seconds / duration) if report and duration else None,
            peak_memory=report.peak_memory if report else None,
            stdout=report.stdout if report else None, stderr=report.stderr if report else None))

    def _start_clocks(self, now: float) -> None:
        """Tasks dispatched ahead that took a freed slot: their timeout counts from now."""
        for run, i in self.state.take_promoted():
            att = self._by_task.get((run.run_id, i))
            if att is not None and run.specs[i].timeout:
                att.deadline = now + run.specs[i].timeout

    def _check_timeouts(self, now: float) -> None:
        self._start_clocks(now)
        for att in [a for a in self.running.values() if a.deadline is not None and a.deadline <= now]:
            spec = att.run.specs[att.index]
            ray.cancel(att.ref, force=True)
            self.running.pop(att.ref, None)
            self._by_task.pop((att.run.run_id, att.index), None)
            msg = f"Task '{spec.id}' timed out after {spec.timeout:g} s (attempt {att.attempt})"
            outcome = self.state.failed(att.run, att.index, att.node, msg, now)
            self._execution(att, "timeout", now, error=msg)
            self.metrics.failed(1, "timeout")
            log.info("%s -> %s", msg, outcome, extra={"run_id": att.run.run_id, "task_id": spec.id,
                                                      "attempt": att.attempt})

    def _sample(self, now: float, force: bool = False) -> None:
        if now - self._last_sample < self.config.sample_every_s and not force:
            return
        self._last_sample = now
        if self.journal.blocked:
            return  # the store is unreachable: metrics wait, the sample of this moment is not taken
        try:
            if self._metric_rows:
                self.store.record_metrics(self._metric_rows)
                self._metric_rows = []
            self._record_sample(now)
        except StoreError as exc:
            log.warning("system sample not recorded: %s", exc)

    def _record_sample(self, now: float) -> None:
        alive = [i for i, a in enumerate(self.node_alive) if a]
        cap_c = sum(self.nodes.cap_cpus[i] for i in alive)
        cap_m = sum(self.nodes.cap_memory[i] for i in alive)
        used_c = cap_c - sum(self.nodes.free_cpus[i] for i in alive)
        used_m = cap_m - sum(self.nodes.free_memory[i] for i in alive)
        self.store.record_system_samples([SystemSample(
            cpus_total=cap_c, cpus_used=used_c, memory_total=int(cap_m), memory_used=int(used_m),
            queue_length=self.state.num_ready(), running_tasks=len(self.running), ts=now)])
        used_g = sum(self.nodes.cap_gpus[i] - self.nodes.free_gpus[i] for i in alive)
        self.metrics.cluster(used_c, cap_c, self.state.num_ready(), len(self.running), used_m, cap_m, used_g,
                             sum(self.nodes.cap_gpus[i] for i in alive))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._needs_resync:
                    with self.lock:
                        self._resync()
                self._iteration()
                self.loop_error = None
            except StoreUnavailableError as exc:  # a read the loop needed: nothing was dropped, try again
                self.loop_error = f"store unreachable: {exc}"
                log.warning("orchestrator loop: %s; trying again", exc)
                time.sleep(0.5)
            except Exception:  # noqa: BLE001 - keep the orchestrator alive, but say loudly what broke
                self.loop_error = traceback.format_exc()
                log.error("orchestrator loop error (state re-read from the store):\n%s", self.loop_error)
                self._needs_resync = True
                time.sleep(0.5)

    def _resync(self) -> None:
        """After an unexpected error in the loop, the store is the truth: write what the journal holds, then re-read
        every tracked run from the store (keeping the attempts still running whose start is recorded) and rebuild
        the free resources. If the store cannot be read now, nothing is dropped and the loop tries again later."""
        if not self._flush(force=True) and len(self.journal):
            return
        for run_id in list(self.state.by_run):
            self._reload_run(run_id)
        self._resume_all()
        for i in range(len(self.nodes)):
            if self.node_alive[i]:
                self.nodes.free_cpus[i] = self.nodes.cap_cpus[i]
                self.nodes.free_memory[i] = self.nodes.cap_memory[i]
                self.nodes.free_gpus[i] = self.nodes.cap_gpus[i]
        held = [(run, d.task.task, d.node) for run, d, _ in self._to_launch]
        for run, i, node in [(a.run, a.index, a.node) for a in self.running.values()] + held:
            if i not in run.ahead:
                self.nodes.reserve(node, float(run.dag.cpus[i]), float(run.dag.memory[i]), float(run.dag.gpus[i]))
        self._needs_resync = False
        self._flush(force=True)

    def _reload_run(self, run_id: str) -> None:
        """Replace a tracked run's in-memory state by the stored one. Its attempts whose start the store has stay
        running; one whose start is not recorded is stopped; decided tasks not yet handed to Ray are dropped.
        Raises StoreUnavailableError (nothing changed) if the store cannot be read."""
        try:
            loaded = self._read_run(run_id)
        except StoreUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - this run alone
            loaded, error = None, f"cannot be re-read from the store: {type(exc).__name__}: {exc}"
        else:
            error = None
        old = self.state.by_run.get(run_id)
        live: dict[int, _Attempt] = {}
        if old is not None:
            stored = {t.task_id: t.status for t in loaded[2]} if loaded else {}
            for i in range(old.dag.n):
                att = self._by_task.get((run_id, i))
                if att is None:
                    continue
                if stored.get(old.dag.ids[i]) == TaskStatus.RUNNING:
                    live[i] = att
                    continue
                ray.cancel(att.ref, force=True)  # its start was never recorded
                self.running.pop(att.ref, None)
                self._by_task.pop((run_id, i), None)
                self.state._release(old, i, att.node)
            held = [x for x in self._to_launch if x[0] is old]
            self._to_launch = [x for x in self._to_launch if x[0] is not old]
            for run, d, _ in held:
                self.state._release(run, d.task.task, d.node)
            self.state.drop(old)
        if error is not None:
            for att in live.values():
                ray.cancel(att.ref, force=True)
                self.running.pop(att.ref, None)
                self._by_task.pop((run_id, att.index), None)
                self.state._release(att.run, att.index, att.node)
            self._fail_stored_run(run_id, error)
            return
        if loaded is None:
            return
        rec, wf, tasks, failures = loaded
        stored = {t.task_id: (t.status, t.attempt, t.result_ref, t.next_attempt_at) for t in tasks}
        run = self.state.admit(run_id, wf, time.time(), policy=rec.policy, stored=stored, stored_status=rec.status,
                               live=set(live), failures=failures)
        for i, att in live.items():
            att.run = run
            run.attempts[i] = att.attempt
            if old is not None and i in old.ahead:
                run.ahead.add(i)
        self.state.replace_in_ahead(old, run)

    def _gather(self, wait: float) -> tuple[list, list]:
        """The object refs of finished attempts and their outcomes (None where fetching failed).

        Blocks in `ray.wait` (without the GIL) until the first attempt finishes, a retry falls due, a timeout
        must be checked, or something is submitted or cancelled (a None in `_done`). Completions are not taken
        through object-ref callbacks: those run Python on Ray's I/O thread, which then waits for the GIL while
        this loop runs, and that thread is the one that hands the next queued task to a freed worker.
        """
        woken = False
        while True:
            try:
                self._done.get_nowait()
                woken = True
            except queue.Empty:
                break
        refs = list(self.running)
        if not refs:
            if not woken:
                try:
                    self._done.get(timeout=wait)
                except queue.Empty:
                    pass
            return [], []
        if not woken:
            first, _ = ray.wait(refs, num_returns=1, timeout=wait, fetch_local=False)
            if first and len(refs) >= 4:
                # A short gathering window when many tasks run: one write for several completions costs less
                # than one write each (a transaction has a fixed cost). While tasks wait ahead at their nodes,
                # the workers stay busy without us, so the window can be longer.
                window = self.config.batch_window_ahead_s if self.state.num_ahead() else self.config.batch_window_s
                if window > 0:
                    time.sleep(window)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        if not ready:
            return [], []
        try:
            return ready, ray.get(ready)
        except Exception:  # noqa: BLE001 - one was lost or cancelled: `_complete` fetches each and names the cause
            return ready, [None] * len(ready)

    def _iteration(self) -> None:
        timing = self.timing
        t0 = time.perf_counter()
        if self.running:
            wait = self.config.poll_s
        else:
            wait = self.config.poll_s * 5
            nxt = self.state.next_retry_time()
            if nxt is not None:
                wait = max(0.0, min(wait, nxt - time.time()))
        ready, reports = self._gather(wait)
        t2 = time.perf_counter()
        timing["wait"] += t2 - t0
        with self.lock:
            if self._admissions:
                self._admit_waiting()
                timing["admit"] += time.perf_counter() - t2
            now = time.time()
            for ref, report in zip(ready, reports):
                att = self.running.get(ref)
                if att is not None:
                    self._complete(att, now, report)
            self._check_timeouts(now)
            if time.monotonic() - self._last_nodes > self.config.node_refresh_s:
                self._last_nodes = time.monotonic()
                self._refresh_nodes()
            self.state.promote_due_retries(now)
            t3 = time.perf_counter()
            timing["complete"] += t3 - t2
            self._dispatch(now)
            self._flush()
            self._sample(now)
            timing["dispatch_and_write"] += time.perf_counter() - t3
            timing["iterations"] += 1


OrchestratorActor = ray.remote(num_cpus=0, max_concurrency=64, max_restarts=0)(Orchestrator)

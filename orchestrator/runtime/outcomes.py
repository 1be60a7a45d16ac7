"""What becomes of an attempt that ends: success, failure, loss with its worker or node, cancellation or timeout,
taken into the run state and recorded as the attempt's execution row."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import RayError, TaskCancelledError

from ..errors import StoreError, StoreUnavailableError
from ..store import results as result_codec
from .executor import AttemptReport, report_from
from .journal import WriteJournal
from .launcher import Attempt, Launcher
from .metrics import RuntimeMetrics
from .nodes import Nodes
from .state import RuntimeState

log = logging.getLogger("orchestrator.runtime")


class Outcomes:
    """Takes ended attempts from the launcher's tables into the run state; their execution rows go to the write
    journal, their results (`unsaved_results`) to the store before their success is written."""

    def __init__(self, store: Any, state: RuntimeState, nodes: Nodes, metrics: RuntimeMetrics,
                 journal: WriteJournal, launcher: Launcher, predictions: Any, memory_requests: Any = None):
        self.store = store
        self.state = state
        self.nodes = nodes
        self.metrics = metrics
        self.journal = journal
        self.launcher = launcher
        self.predictions = predictions
        self.memory_requests = memory_requests  # `MemoryRequests` in "sized" mode: it learns every recorded peak
        # The launcher's tables, bound here for the per-completion path (they are never replaced).
        self.running = launcher.running
        self.by_task = launcher.by_task
        self.value_refs = launcher.value_refs
        self.launches = launcher.launches
        self.unsaved_results: list[tuple[str, str, Any]] = []  # (run id, task id, value) to persist before flush

    def complete(self, att: Attempt, now: float, outcome: tuple | None = None) -> None:
        """An attempt ended; `outcome` is its (value, packed report), or None to fetch it here (and name the
        cause if it is lost)."""
        run, i = att.run, att.index
        self.running.pop(att.ref, None)
        self.by_task.pop((run.run_id, i), None)
        try:
            value, packed = ray.get(att.ref) if outcome is None else outcome
            report = report_from(packed)
        except TaskCancelledError:
            self.state.failed(run, i, att.node, "cancelled", now, retryable=False)
            self.record(att, "cancelled", now, error="cancelled")
            return
        except RayError as exc:
            # The worker or its node died, or the task could not be placed: not the task's own fault.
            cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            outcome = self.state.failed(run, i, att.node, f"system failure ({cause})", now, system=True)
            self.record(att, "lost", now, error=cause)
            self.metrics.failed(1, "system")
            log.warning("task lost with its worker or node: %s -> %s", cause, outcome,
                        extra={"run_id": run.run_id, "task_id": run.dag.ids[i], "attempt": att.attempt})
            return
        if report.ok:
            result_ref = None
            if report.has_value:
                # Persisted (before the success is written) so that a resumed run can hand it to the children.
                self.unsaved_results.append((run.run_id, run.dag.ids[i], value))
                result_ref = result_codec.result_ref(run.run_id, run.dag.ids[i])
            self.value_refs[(run.run_id, i)] = att.ref
            self.launches.pop((run.run_id, i), None)
            self.state.succeeded(run, i, att.node, result_ref, now)
            self.record(att, "succeeded", now, report=report)
            if self.predictions is not None:
                self.predictions.finished(run, i, report.duration,
                                          report.cpu_seconds / report.duration if report.duration > 0 else None,
                                          report.peak_memory or None)
            if self.memory_requests is not None:
                spec = run.specs[i]
                self.memory_requests.observe(run.workflow.family, spec.category, spec.input_bytes,
                                             report.peak_memory)
            self.metrics.finished(1, report.duration)
        else:
            retryable = report.error_kind not in ("import",)
            outcome = self.state.failed(run, i, att.node, report.error or "failed", now, retryable=retryable,
                                        memory=report.error_kind == "memory")
            self.record(att, "failed", now, report=report, error=report.error)
            self.metrics.failed(1, report.error_kind or "exception")
            last = (report.error or "").strip().splitlines()
            log.info("task attempt failed (%s): %s", outcome, last[-1] if last else "",
                     extra={"run_id": run.run_id, "task_id": run.dag.ids[i], "attempt": att.attempt})

    def record(self, att: Attempt, status: str, now: float, report: AttemptReport | None = None,
               error: str | None = None) -> None:
        """The attempt's execution row, into the write journal (unless a cancel already wrote it)."""
        if att.recorded:  # stopped by a cancel, which wrote its row
            return
        self.journal.executions.append(att.execution(status, now, self.nodes, report, error))

    def start_clocks(self, now: float) -> None:
        """Tasks dispatched ahead that took a freed slot: their timeout counts from now."""
        for run, i in self.state.take_promoted():
            att = self.by_task.get((run.run_id, i))
            if att is not None and run.specs[i].timeout:
                att.deadline = now + run.specs[i].timeout

    def check_timeouts(self, now: float) -> None:
        """Stop and fail the attempts past their deadline."""
        self.start_clocks(now)
        for att in [a for a in self.running.values() if a.deadline is not None and a.deadline <= now]:
            spec = att.run.specs[att.index]
            self.launcher.stop(att)
            msg = f"Task '{spec.id}' timed out after {spec.timeout:g} s (attempt {att.attempt})"
            outcome = self.state.failed(att.run, att.index, att.node, msg, now)
            self.record(att, "timeout", now, error=msg)
            self.metrics.failed(1, "timeout")
            log.info("%s -> %s", msg, outcome, extra={"run_id": att.run.run_id, "task_id": spec.id,
                                                      "attempt": att.attempt})

    def save_results(self) -> bool:
        """Persist the results of finished tasks before their success is written (a resumed run hands them to
        the children). False if the store is unreachable (kept for the next flush)."""
        while self.unsaved_results:
            run_id, task_id, value = self.unsaved_results[0]
            try:
                self.store.save_result(run_id, task_id, value)
            except StoreUnavailableError as exc:
                self.journal.record_failure(exc)
                return False
            except StoreError as exc:  # e.g. unwritable storage_dir: the task's success is still recorded
                log.error("result of task %s not persisted: %s", task_id, exc,
                          extra={"run_id": run_id, "task_id": task_id})
            self.unsaved_results.pop(0)
        return True

"""The orchestrator actor: a named, detached Ray actor that owns admission and dispatch of workflow runs.

It keeps the ready set itself and starts a task only when the node the policy chose has room, so the scheduling
policy - not Ray's own queue - decides what runs next and where. Every state change is written to the store
(with its event, in one transaction) before the actor acts on it; on start it resumes every unfinished run.

This file is the loop and the public methods. The parts the loop drives live beside it: `admission` (submitted
runs on their way in), `nodes` (the cluster), `state` (runs, ready queues, policies), `launcher` (tasks handed
to Ray), `outcomes` (attempts that ended), `journal` (writes), `recovery` (re-reading the store), `lease` (one
orchestrator per store) and `startup` (logs, event sinks, predictions).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections import OrderedDict

import ray

from ..errors import (
    InvalidTransitionError,
    LeaseLostError,
    OrchestratorError,
    StoreError,
    StoreUnavailableError,
)
from ..model import Workflow
from ..states import TaskStatus
from ..store import Store
from ..store.records import DecisionRecord, MetricRecord, SystemSample, WorkflowChange
from ..store.runs import check_priority, priority_conflict
from .admission import Admissions, name_of
from .config import RuntimeConfig
from .journal import WriteJournal
from .launcher import Launcher
from .lease import Lease
from .metrics import RuntimeMetrics
from .nodes import Nodes
from .outcomes import Outcomes
from .recovery import Recovery
from .startup import (
    json_logs,
    normal_priority,
    start_event_dispatcher,
    start_memory_sizing,
    start_predictions,
)
from .state import RetryPolicy, RunState, RuntimeState

log = logging.getLogger("orchestrator.runtime")

_FINAL_KEPT = 10_000  # final progress of this many ended runs is kept in memory


def _progress_of(run: RunState) -> dict:
    return {"run_id": run.run_id, "name": run.name, "status": run.wf_status.value, "counts": run.counts(),
            "total": run.dag.n, "error": run.error}


class Orchestrator:
    """The actor's body (also usable in-process for tests). Thread-safe: one lock guards the state."""

    def __init__(self, config: dict | RuntimeConfig | None = None):
        self.config = config if isinstance(config, RuntimeConfig) else RuntimeConfig(**(config or {}))
        cfg = self.config
        json_logs(cfg.data_dir)
        self.store = Store.open(cfg.db_url, data_dir=cfg.data_dir)
        self.lock = threading.RLock()
        self._run_ended = threading.Condition(self.lock)  # notified when a run reaches a final status
        self.metrics = RuntimeMetrics()
        self.nodes = Nodes()
        self.nodes.refresh()
        self.state = RuntimeState(
            self.nodes.view, cfg.default_policy,
            RetryPolicy(cfg.retry_base, cfg.retry_cap, cfg.retry_jitter, cfg.system_retries),
            default_duration=cfg.default_duration, ahead=cfg.dispatch_ahead, ahead_max_s=cfg.dispatch_ahead_max_s,
        )
        self._stop = threading.Event()
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # a None wakes the loop (submitted, cancelled)
        self._final: OrderedDict[str, dict] = OrderedDict()  # progress of the latest runs that ended here
        self._metric_rows: list[MetricRecord] = []  # performance metrics of ended runs, not yet written
        self._last_sample = 0.0
        self.loop_error: str | None = None
        self.store_error: str | None = None  # set while the store is unreachable (writes wait in the journal)
        self._needs_resync = False
        self.timing: dict[str, float] = {k: 0.0 for k in ("wait", "complete", "dispatch_and_write",
                                                           "schedule", "write", "submit", "iterations",
                                                           "admit", "admitted", "admission_batches")}
        self.lease = Lease(self.store, cfg.lease_ttl_s)
        # Every change, execution row and decision row goes through the journal, written under the lease.
        self.journal = WriteJournal(self.store, self.lease.owner)
        self.launcher = Launcher(self.store, self.state, self.nodes, self.metrics, self.journal, self.timing)
        self.lease.acquire()
        try:
            self._dispatcher = start_event_dispatcher(cfg, self.store)
            self.predictions = start_predictions(cfg, self.store, self.lock, self.state)
            self.memory_requests = start_memory_sizing(cfg, self.store, self.state)
            self.outcomes = Outcomes(self.store, self.state, self.nodes, self.metrics, self.journal, self.launcher,
                                     self.predictions, self.memory_requests)
            self.admissions = Admissions(self.store, self.state, self.nodes, cfg.default_policy, self.predictions,
                                         self.timing, wake=lambda: self._done.put(None), stopping=self._stopping)
            self.recovery = Recovery(self.store, self.state, self.nodes, self.journal, self.launcher,
                                     self.predictions, flush=self._flush, written=self._written)
            self.resumed = self.recovery.resume_all()
        except BaseException:
            self.lease.release()  # this one never ran: the next start need not wait
            raise
        self._thread = threading.Thread(target=self._loop, name="orchestrator-loop", daemon=True)
        self._thread.start()
        self.lease.keep(self._stop, lost=self._halt, cancel_requested=self._cancel_requested)
        self.priority = normal_priority()
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
        admissions = self.admissions
        try:
            admission = admissions.check(workflow, policy, run_id, time_scale)
        except Exception as exc:
            admissions.record_rejection(workflow, exc)
            raise
        return admissions.submit([admission])[0]

    def submit_many(self, workflows: list[dict | Workflow], policy: str | None = None,
                    time_scale: float | None = None) -> list[str]:
        """`submit` for several workflows in one call and one transaction; their run ids in order. Every
        workflow is checked first: if one is refused, none is recorded."""
        admissions = self.admissions
        checked = []
        for k, wf in enumerate(workflows):
            try:
                checked.append(admissions.check(wf, policy, None, time_scale))
            except Exception as exc:
                admissions.record_rejection(wf, exc)
                raise OrchestratorError(f"Workflow {k + 1} of {len(workflows)} ({name_of(wf) or 'unnamed'}) was "
                                        f"refused, so none was recorded: {exc}") from exc
        return admissions.submit(checked)

    def cancel(self, run_id: str) -> bool:
        with self.lock:
            run = self.state.by_run.get(run_id)
            if run is None or run.wf_status.terminal:
                return False
            now = time.time()
            running = self.state.cancel(run, now)
            by_task = self.launcher.by_task
            stopping = [att for att in (by_task.get((run_id, i)) for i in running) if att is not None]
            for att in stopping:  # their execution rows go in the same transaction as the cancel itself
                self.outcomes.record(att, TaskStatus.CANCELLED.value, now, error="workflow cancelled while running")
                att.recorded = True
            self._flush()
            for att in stopping:
                ray.cancel(att.ref, force=True)
        self._done.put(None)
        return True

    def set_priority(self, run_id: str, task_id: str, priority: int) -> dict:
        """Change the scheduling priority of a task that has not started yet (pending, ready or retrying) of a run:
        {"run_id", "task_id", "priority", "previous"}.

        The store is written first (`Store.change_task_priority`: the task's row and a `task.priority_changed`
        event, in one transaction), so a store outage fails the call and changes nothing in memory; then a run
        tracked here follows at once (its ready queue re-keyed, `RuntimeState.set_priority`). A run not tracked
        here (not resumed yet) takes the stored priority when it is resumed (`Recovery.read_run`).

        StoreInvalidError for a priority out of range; StoreNotFoundError for an unknown run or task;
        StoreConflictError for a task running or ended (here or in the store): its priority can no longer matter."""
        check_priority(task_id, priority)
        with self.lock:
            run = self.state.by_run.get(run_id)
            i = run.dag.index.get(task_id) if run is not None else None
            if i is not None and (run.detail[i].terminal or run.detail[i] == TaskStatus.RUNNING):
                # What this orchestrator holds is ahead of the store (its writes follow): refuse on it.
                raise priority_conflict(run_id, task_id, run.detail[i])
            _, previous = self.store.change_task_priority(run_id, task_id, priority)
            if i is not None and self.state.by_run.get(run_id) is run:
                self.state.set_priority(run, i, priority)
        log.info("task priority changed from %s to %s", previous, priority,
                 extra={"run_id": run_id, "task_id": task_id})
        self._done.put(None)  # the loop schedules with the new order at once
        return {"run_id": run_id, "task_id": task_id, "priority": priority, "previous": previous}

    def resume(self, run_id: str | None = None) -> list[str]:
        """Resume unfinished runs not yet tracked (all of them, or one)."""
        with self.lock:
            return self.recovery.resume_all(only=run_id)

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
        """Block until every run tracked here is final and its final status written to the store (or `timeout`
        seconds pass); the progress of each. A run that is not tracked (not submitted here, or still being resumed)
        is reported as stored, without waiting. (A run leaves `by_run` when its final status is written.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._run_ended:
            while True:
                by_run = self.state.by_run
                if not any(r in by_run for r in run_ids):
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
                    "running": len(self.launcher.running), "queued_ahead": self.state.num_ahead(),
                    "nodes": len([a for a in self.nodes.alive if a]),
                    "free_cpus": sum(c for c, a in zip(self.nodes.view.free_cpus, self.nodes.alive) if a),
                    "loop_seconds": dict(self.timing)}

    def shutdown(self) -> None:
        self._halt()
        self._thread.join(timeout=5)
        self.lease.join(timeout=5)
        try:
            with self.lock:
                self._flush_before_stop()
                self._sample(time.time(), force=True)  # the last performance metrics
        except Exception:  # noqa: BLE001 - shutting down: say so, carry on
            log.exception("could not write the last changes, samples and metrics")
        self.admissions.refuse_waiting()  # never recorded
        if self._dispatcher is not None:
            self._dispatcher.drain(timeout=10.0)  # everything committed goes out first (bounded; logs what is left)
            self._dispatcher.stop()
        if self.predictions is not None:
            self.predictions.stop()
        try:
            self.lease.release()
        except Exception:  # noqa: BLE001 - it lapses by itself
            log.warning("could not release the orchestrator lease; it lapses in %s s", self.config.lease_ttl_s)
        self.store.close()

    # ---- stopping ------------------------------------------------------------------------------------------------
    def _halt(self) -> None:
        """Stop the loop (shutdown, or the lease went to another orchestrator)."""
        self._stop.set()
        self._done.put(None)

    def _stopping(self) -> bool:
        return self._stop.is_set() or not self._thread.is_alive()

    def _cancel_requested(self, run_id: str) -> None:
        """A cancel request made through the store (`orchestrator cancel` when it cannot reach this actor)."""
        if run_id in self.state.by_run:
            log.info("cancel requested through the store", extra={"run_id": run_id})
            self.cancel(run_id)

    def _flush_before_stop(self, within_s: float = 10.0) -> None:
        """Write what the journal holds before stopping, trying for up to `within_s` seconds while the store is
        unreachable; what is still unwritten then is named in the log (a later orchestrator resumes the runs)."""
        deadline = time.monotonic() + within_s
        while not self._flush(force=True) and len(self.journal) and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(self.journal):
            log.error("stopping with %d changes, %d execution rows unwritten (store unreachable: %s)",
                      len(self.journal.changes), len(self.journal.executions), self.journal.last_error)

    # ---- the loop ------------------------------------------------------------------------------------------------
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
        """After an unexpected error in the loop, the store is the truth: every tracked run is re-read from it
        (`Recovery.resync`); if the store cannot be read now, the loop tries again later."""
        if self.recovery.resync():
            self._needs_resync = False
            self._flush(force=True)

    def _iteration(self) -> None:
        timing = self.timing
        t0 = time.perf_counter()
        if self.launcher.running:
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
            if self.admissions.waiting:
                if self.admissions.admit_waiting():
                    self._needs_resync = True  # a recorded run could not be admitted: re-read the store
                timing["admit"] += time.perf_counter() - t2
            now = time.time()
            running = self.launcher.running
            outcomes = self.outcomes
            complete = outcomes.complete
            for ref, report in zip(ready, reports):
                att = running.get(ref)
                if att is not None:
                    complete(att, now, report)
            outcomes.check_timeouts(now)
            if time.monotonic() - self.nodes.refreshed_at > self.config.node_refresh_s:
                self.nodes.refresh()
            self.state.promote_due_retries(now)
            t3 = time.perf_counter()
            timing["complete"] += t3 - t2
            self._dispatch(now)
            self._flush()
            self._sample(now)
            timing["dispatch_and_write"] += time.perf_counter() - t3
            timing["iterations"] += 1

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
        refs = list(self.launcher.running)
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
        except Exception:  # noqa: BLE001 - one was lost or cancelled: `Outcomes.complete` fetches each, names the cause
            return ready, [None] * len(ready)

    def _dispatch(self, now: float) -> None:
        launcher = self.launcher
        if self.journal.blocked or launcher.pending:
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
            names = self.nodes.view.names
            self.journal.add(decisions=[DecisionRecord(
                run_id=run.run_id, task_id=run.dag.ids[d.task.task], policy=run.policy_name, node=names[d.node],
                input={"ready": ready + len(decisions), "predicted": d.task.predicted,
                       "cpus": d.task.cpus, "memory": d.task.memory},
                output={"node": d.node}, latency_us=per_decision, created_at=now) for run, d in decisions])
        # Durable first: the moves to running (and decisions) are committed before any task starts.
        launcher.pending.extend((run, d, run.attempts[d.task.task]) for run, d in decisions)
        t1 = time.perf_counter()
        self._flush()  # launches them once written
        self.timing["write"] += time.perf_counter() - t1

    def _flush(self, force: bool = False) -> bool:
        """Write every pending change (and its events) and the history rows in one transaction, through the write
        journal; then start what was decided. False while the store is unreachable: everything stays in the
        journal, is written by a later flush (bounded backoff), and no task starts meanwhile."""
        journal = self.journal
        journal.add(self.state.take_changes())  # execution and decision rows are in the journal already
        outcomes = self.outcomes
        if outcomes.unsaved_results and not outcomes.save_results():
            self._note_outage()
            return False
        try:
            written = journal.flush(force)
        except LeaseLostError as exc:
            log.error("%s: stopping; the orchestrator that took the store over runs the workflows from now on", exc)
            self._halt()
            return False
        except (StoreError, InvalidTransitionError) as exc:
            self.recovery.refused(exc)
            return True
        if written is None:
            self._note_outage()
            return False
        self.store_error = None
        self._written(written)
        if self.launcher.pending:
            self.launcher.launch(time.time())
        return True

    def _written(self, changes: list) -> None:
        """After a write: the runs whose final status it stored are answered from memory and their metrics taken."""
        for ch in changes:
            if isinstance(ch, WorkflowChange) and ch.status.terminal:
                self._on_run_finished(ch.run_id)

    def _note_outage(self) -> None:
        journal = self.journal
        since = time.strftime("%H:%M:%S", time.localtime(journal.outage_since or time.time()))
        self.store_error = f"store unreachable since {since}: {journal.last_error}"

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
        self.launcher.forget(run)
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
        view = self.nodes.view
        alive = [i for i, a in enumerate(self.nodes.alive) if a]
        cap_c = sum(view.cap_cpus[i] for i in alive)
        cap_m = sum(view.cap_memory[i] for i in alive)
        used_c = cap_c - sum(view.free_cpus[i] for i in alive)
        used_m = cap_m - sum(view.free_memory[i] for i in alive)
        running = len(self.launcher.running)
        self.store.record_system_samples([SystemSample(
            cpus_total=cap_c, cpus_used=used_c, memory_total=int(cap_m), memory_used=int(used_m),
            queue_length=self.state.num_ready(), running_tasks=running, ts=now)])
        used_g = sum(view.cap_gpus[i] - view.free_gpus[i] for i in alive)
        self.metrics.cluster(used_c, cap_c, self.state.num_ready(), running, used_m, cap_m, used_g,
                             sum(view.cap_gpus[i] for i in alive))


OrchestratorActor = ray.remote(num_cpus=0, max_concurrency=64, max_restarts=0)(Orchestrator)

"""The store is the truth about every run: unfinished runs are resumed from it at start, a run that cannot be
resumed is failed on its own, and after an error the runs are re-read from it (all, or those the store refused)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import InvalidTransitionError, StoreError, StoreUnavailableError
from ..model import Workflow
from ..states import TaskStatus, WorkflowStatus
from ..store.records import ExecutionRecord, TaskChange, TaskRecord, WorkflowChange
from .journal import WriteJournal
from .launcher import Attempt, Launcher
from .nodes import Nodes
from .state import RuntimeState

log = logging.getLogger("orchestrator.runtime")


def with_stored_priorities(wf: Workflow, tasks: list[TaskRecord]) -> Workflow:
    """`wf` with each task's priority as stored (`Store.set_task_priority` changes the task row, not the stored
    spec), so that a priority changed while the run ran survives a restart or a re-read; `wf` itself when none
    differs."""
    stored = {t.task_id: t.priority for t in tasks}
    specs = [t if stored.get(t.id, t.priority) == t.priority else t.model_copy(update={"priority": stored[t.id]})
             for t in wf.tasks]
    if all(a is b for a, b in zip(specs, wf.tasks)):
        return wf
    return wf.model_copy(update={"tasks": specs})


class Recovery:
    """Brings the in-memory runs back in line with the store. `flush` is the orchestrator's write (through the
    journal, then the launch of what it held); `written` is handed the changes each write stored."""

    def __init__(self, store: Any, state: RuntimeState, nodes: Nodes, journal: WriteJournal, launcher: Launcher,
                 predictions: Any, flush: Callable[..., bool], written: Callable[[list], None]):
        self.store = store
        self.state = state
        self.nodes = nodes
        self.journal = journal
        self.launcher = launcher
        self.predictions = predictions
        self.flush = flush
        self.written = written

    def resume_all(self, only: str | None = None) -> list[str]:
        """Track every unfinished run of the store (or one). A run that cannot be resumed (its stored workflow is
        refused by today's validation, say) is failed on its own, with the cause recorded."""
        resumed = []
        run_ids = [only] if only else self.store.unfinished_workflows()
        for run_id in run_ids:
            if run_id in self.state.by_run:
                continue
            try:
                loaded = self.read_run(run_id)
            except StoreUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - this run alone
                self.fail_stored_run(run_id, f"cannot be resumed: {type(exc).__name__}: {exc}")
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
                    self.journal.executions.append(ExecutionRecord(
                        run_id=run_id, task_id=t.task_id, attempt=t.attempt, status=TaskStatus.CANCELLED.value,
                        node=t.node, started_at=t.started_at, finished_at=now, exit_info="interrupted",
                        error="interrupted: the orchestrator stopped while this attempt ran; the task was requeued"))
            run = self.state.admit(run_id, wf, now, policy=rec.policy, stored=stored, stored_status=rec.status,
                                   failures=failures)
            if self.predictions is not None:
                self.predictions.admitted(run)
            resumed.append(run_id)
        self.flush(force=True)
        return resumed

    def read_run(self, run_id: str):
        """A stored unfinished run as (record, workflow, tasks, failures per task), None if it is finished. The
        workflow carries each task's stored priority (an operator may have changed it since it was submitted)."""
        rec = self.store.get_workflow(run_id)
        if rec.status.terminal:
            return None
        tasks = self.store.get_tasks(run_id)
        wf = with_stored_priorities(self.store.load_spec(run_id), tasks)
        failures: dict[str, tuple[int, int]] = {}  # task id -> (own failures, lost with its worker)
        # With sized memory requests, a memory failure of a task that declares no memory was a sizing miss (its
        # request was then doubled): it does not use up the task's retries (`RuntimeState.failed`).
        undeclared = ({t.id for t in wf.tasks if not t.resources.memory} if self.state.memory_sizer is not None
                      else set())
        for e in self.store.executions(run_id):
            own, lost = failures.get(e.task_id, (0, 0))
            sizing_miss = e.exit_info == "memory" and e.task_id in undeclared
            failures[e.task_id] = (own + (e.status in ("failed", "timeout") and not sizing_miss),
                                   lost + (e.status == "lost"))
        return rec, wf, tasks, failures

    def fail_stored_run(self, run_id: str, error: str) -> None:
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

    def resync(self) -> bool:
        """After an unexpected error in the loop: write what the journal holds, then re-read every tracked run from
        the store (keeping the attempts still running whose start is recorded) and rebuild the free resources.
        False if the store cannot be read now: nothing is dropped, and the loop tries again later."""
        if not self.flush(force=True) and len(self.journal):
            return False
        for run_id in list(self.state.by_run):
            self.reload_run(run_id)
        self.resume_all()
        self.nodes.reset_free()
        view = self.nodes.view
        held = [(run, d.task.task, d.node) for run, d, _ in self.launcher.pending]
        for run, i, node in [(a.run, a.index, a.node) for a in self.launcher.running.values()] + held:
            if i not in run.ahead:
                view.reserve(node, float(run.cpus[i]), float(run.memory[i]), float(run.gpus[i]))
        return True

    def reload_run(self, run_id: str) -> None:
        """Replace a tracked run's in-memory state by the stored one. Its attempts whose start the store has stay
        running; one whose start is not recorded is stopped; decided tasks not yet handed to Ray are dropped.
        Raises StoreUnavailableError (nothing changed) if the store cannot be read."""
        try:
            loaded = self.read_run(run_id)
        except StoreUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - this run alone
            loaded, error = None, f"cannot be re-read from the store: {type(exc).__name__}: {exc}"
        else:
            error = None
        launcher = self.launcher
        old = self.state.by_run.get(run_id)
        live: dict[int, Attempt] = {}
        if old is not None:
            stored = {t.task_id: t.status for t in loaded[2]} if loaded else {}
            for i in range(old.dag.n):
                att = launcher.by_task.get((run_id, i))
                if att is None:
                    continue
                if stored.get(old.dag.ids[i]) == TaskStatus.RUNNING:
                    live[i] = att
                    continue
                launcher.stop(att)  # its start was never recorded
                self.state.release(old, i, att.node)
            for run, d, _ in launcher.take_pending(old):
                self.state.release(run, d.task.task, d.node)
            self.state.drop(old)
        if error is not None:
            for att in live.values():
                launcher.stop(att)
                self.state.release(att.run, att.index, att.node)
            self.fail_stored_run(run_id, error)
            return
        if loaded is None:
            return
        rec, wf, tasks, failures = loaded
        stored = {t.task_id: (t.status, t.attempt, t.result_ref, t.next_attempt_at) for t in tasks}
        run = self.state.admit(run_id, wf, time.time(), policy=rec.policy, stored=stored, stored_status=rec.status,
                               live=set(live), failures=failures, sized=dict(old.sized) if old is not None else None)
        for i, att in live.items():
            att.run = run
            run.attempts[i] = att.attempt
            if old is not None and i in old.ahead:
                run.ahead.add(i)
        self.state.replace_in_ahead(old, run)

    def refused(self, exc: BaseException) -> None:
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
            self.written(written)
        for run_id, error in refused.items():
            log.error("the store refused the changes of run %s (%s); re-reading that run from the store", run_id,
                      error, extra={"run_id": run_id})
            self.reload_run(run_id)
        if self.launcher.pending:
            self.launcher.launch(time.time())

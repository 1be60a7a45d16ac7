"""Admission of submitted workflows: each is checked as it is submitted (its policy exists, every task fits some
node), then recorded and admitted by the orchestrator's loop, every run submitted meanwhile in one transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import OrchestratorError
from ..model import Workflow
from .nodes import Nodes
from .state import RuntimeState

log = logging.getLogger("orchestrator.runtime")

ADMIT_TASKS = 256  # runs recorded and admitted per loop iteration, in tasks (at least one run)


def name_of(workflow: Any) -> str | None:
    """The name of a submitted workflow (a model or its dict), for messages about it."""
    if isinstance(workflow, Workflow):
        return workflow.name
    return workflow.get("name") if isinstance(workflow, dict) else None


@dataclass
class Admission:
    """A submitted run waiting for the loop to record and admit it (`Admissions.admit_waiting`)."""

    workflow: Workflow
    policy: str
    run_id: str | None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def check_fits(wf: Workflow, nodes: Nodes) -> None:
    """Refuse a workflow with a task that no node of the cluster could ever run."""
    for t in wf.tasks:
        r = t.resources
        fits = nodes.large_enough(r.cpus, r.memory, r.gpus)
        if not fits:
            raise OrchestratorError(
                f"Task '{t.id}' requests cpus={r.cpus:g}, memory={r.memory} B, gpus={r.gpus:g}: no node of "
                "the Ray cluster is that large, so it could never run; lower the request or add a larger node"
            )
        if r.custom and not set(fits) & nodes.offering(r.custom):
            raise OrchestratorError(
                f"Task '{t.id}' requests custom resources {r.custom}: no node of the Ray cluster offers them "
                "together with its cpus and memory")


class Admissions:
    """Submitted runs on their way in: checked on the caller's thread, handed to the loop (`waiting`), recorded and
    admitted there, and the caller answered once that is done."""

    def __init__(self, store: Any, state: RuntimeState, nodes: Nodes, default_policy: str, predictions: Any,
                 timing: dict[str, float], wake: Callable[[], None], stopping: Callable[[], bool]):
        self.store = store
        self.state = state
        self.nodes = nodes
        self.default_policy = default_policy
        self.predictions = predictions
        self.timing = timing
        self.wake = wake  # wakes the loop
        self.stopping = stopping  # whether the loop is stopping or gone
        self.lock = threading.Lock()
        self.waiting: list[Admission] = []  # submitted, not yet recorded

    def check(self, workflow: dict | Workflow, policy: str | None, run_id: str | None,
              time_scale: float | None) -> Admission:
        """Check a submitted workflow (an unknown policy or a task too large for every node is refused before
        anything is recorded)."""
        wf = workflow if isinstance(workflow, Workflow) else Workflow.model_validate(workflow)
        if time_scale is not None:
            wf = wf.model_copy(update={"metadata": {**wf.metadata, "time_scale": float(time_scale)}})
        name = policy or wf.policy or self.default_policy
        from ..scheduling import check_policy

        check_policy(name)
        check_fits(wf, self.nodes)
        return Admission(wf, name, run_id)

    def record_rejection(self, workflow: Any, exc: BaseException) -> None:
        """Record a workflow refused before it became a run, as a `workflow.rejected` event."""
        try:
            self.store.record_rejection(f"{type(exc).__name__}: {exc}", name=name_of(workflow), source="submit")
        except Exception:  # noqa: BLE001 - the caller still gets the error itself
            log.exception("could not record the rejected workflow %s", name_of(workflow))

    def submit(self, admissions: list[Admission]) -> list[str]:
        """Hand runs to the loop, which records them (with every other run submitted meanwhile, in one
        transaction) and admits them; return once that is done. Nothing is recorded for a run if that fails."""
        with self.lock:
            self.waiting.extend(admissions)
        self.wake()
        for admission in admissions:
            while not admission.done.wait(1.0):
                if self.stopping():
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

    def admit_waiting(self) -> bool:
        """Record the submitted runs in one transaction and start tracking them (with the orchestrator's lock held).
        Their start (running, first tasks ready) is written by this iteration's next transaction, before any of
        their tasks is dispatched. True if a recorded run could not be admitted: the loop must re-read the store."""
        with self.lock:
            # At most about ADMIT_TASKS tasks' worth per iteration, so that the first runs' tasks start while
            # later ones are still being recorded.
            taken = tasks = 0
            for a in self.waiting:
                taken += 1
                tasks += len(a.workflow.tasks)
                if tasks >= ADMIT_TASKS:
                    break
            batch, self.waiting = self.waiting[:taken], self.waiting[taken:]
            if self.waiting:
                self.wake()  # the next iteration does not wait for a completion first
        if not batch:
            return False
        self.timing["admission_batches"] += 1
        self.timing["admitted"] += len(batch)
        try:
            run_ids = self.store.create_workflows([(a.workflow, a.policy, a.run_id) for a in batch])
        except Exception as exc:  # noqa: BLE001 - one at a time, so that each caller gets its own answer
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return False
            run_ids = []
            for a in batch:
                try:
                    run_ids.extend(self.store.create_workflows([(a.workflow, a.policy, a.run_id)]))
                except Exception as one:  # noqa: BLE001 - handed to that caller
                    a.error = one
                    run_ids.append(None)
        now = time.time()
        resync = False
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
                    resync = True
                    log.exception("could not admit %s; will re-read the store", run_id)
            a.done.set()
        return resync

    def refuse_waiting(self) -> None:
        """Answer every run still waiting (never recorded) with a refusal: the orchestrator is stopping."""
        with self.lock:
            left, self.waiting = self.waiting, []
        for a in left:
            a.error = OrchestratorError("The orchestrator shut down: the workflow run was not submitted")
            a.done.set()

"""Starting decided tasks on Ray: each task's payload and Ray options are built once, its parents' values taken
from their attempts (or the store, for a resumed run), and the task handed to Ray on the node the policy chose."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..model import ref_names
from ..states import TaskStatus
from ..store.records import ExecutionRecord
from .executor import AttemptReport, TaskPayload, execute, pack
from .journal import WriteJournal
from .metrics import RuntimeMetrics
from .nodes import Nodes
from .state import RunState, RuntimeState

log = logging.getLogger("orchestrator.runtime")

_execute_remote = ray.remote(max_retries=0)(execute)  # one object: (value, packed report)


@dataclass
class Attempt:
    """One attempt of a task handed to Ray (or one that never got there, for its execution row)."""

    run: RunState
    index: int
    attempt: int
    node: int
    ref: Any  # the attempt's object: (value, packed report); children take the value from it
    started: float
    deadline: float | None
    recorded: bool = False  # its execution row is already written (stopped by a cancel)

    def execution(self, status: str, now: float, nodes: Nodes, report: AttemptReport | None = None,
                  error: str | None = None) -> ExecutionRecord:
        """This attempt's execution row; without the attempt's own `report` (stopped, lost, never started) its
        times are the orchestrator's."""
        duration = report.duration if report else max(0.0, now - self.started)  # (stopped or lost: about)
        node = nodes.ran_on(self.node, report.node_id if report is not None else None)
        return ExecutionRecord(
            run_id=self.run.run_id, task_id=self.run.dag.ids[self.index], attempt=self.attempt, status=status,
            node=node,
            started_at=report.started if report else self.started, finished_at=report.finished if report else now,
            exit_info=report.error_kind if report else status, error=error, duration=duration,
            cpu=(report.cpu_seconds / duration) if report and duration else None,
            peak_memory=report.peak_memory if report else None,
            stdout=report.stdout if report else None, stderr=report.stderr if report else None)


@dataclass
class _Launch:
    """What dispatching one task needs besides its attempt number, built at its first dispatch."""

    payload: TaskPayload
    resources: tuple  # (cpus, memory, gpus, custom items)


def _payload(run: RunState, i: int, attempt: int, memory: float) -> TaskPayload:
    """The task's payload; `memory` is its request as reserved (declared, or sized: `RuntimeState._size_memory`)."""
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
        memory_limit=int(memory),
        timeout=spec.timeout,
        replay_seconds=(spec.duration or 0.0) * time_scale,
    )


class Launcher:
    """Hands decided tasks to Ray once their start is written (`pending` until then), and keeps the attempts in
    flight (`running`, by object ref, and `by_task`) and the objects that finished tasks hand to their children."""

    def __init__(self, store: Any, state: RuntimeState, nodes: Nodes, metrics: RuntimeMetrics,
                 journal: WriteJournal, timing: dict[str, float]):
        self.store = store
        self.state = state
        self.nodes = nodes
        self.metrics = metrics
        self.journal = journal
        self.timing = timing
        self.running: dict[Any, Attempt] = {}  # attempt object ref -> attempt
        self.by_task: dict[tuple[str, int], Attempt] = {}
        self.pending: list[tuple[RunState, Any, int]] = []  # (run, decision, attempt) decided, start not yet written
        self.value_refs: dict[tuple[str, int], Any] = {}  # results of finished tasks, for their children
        self.launches: dict[tuple[str, int], _Launch] = {}
        self._options_cache: dict[tuple, Any] = {}

    def launch(self, now: float) -> None:
        """Hand the decided tasks, whose start is written, to Ray on the node chosen. A task that cannot be handed
        over (its arguments cannot be built or sent) fails on its own, with the cause recorded."""
        t2 = time.perf_counter()
        decisions, self.pending = self.pending, []
        launches = self.launches
        started = 0
        for run, d, attempt in decisions:
            i = d.task.task
            if run.detail[i] != TaskStatus.RUNNING or run.attempts[i] != attempt:
                if run.attempts[i] == attempt:  # cancelled while its start was being written: it never ran
                    self.journal.executions.append(Attempt(run, i, attempt, d.node, None, now, None).execution(
                        "cancelled", now, self.nodes, error="cancelled before it started"))
                continue
            spec = run.specs[i]
            try:
                launch = launches.get((run.run_id, i))
                t = d.task
                if launch is None or launch.resources[1] != t.memory:  # first dispatch, or a raised memory request
                    launch = launches[(run.run_id, i)] = _Launch(
                        _payload(run, i, 0, t.memory),
                        (t.cpus, t.memory, t.gpus, tuple(sorted(spec.resources.custom.items()))))
                payload = launch.payload
                payload.attempt = run.attempts[i]
                parents = [self._parent_value(run, name) for name in payload.ref_names]
                opts = self._options(*launch.resources, d.node)
                ref = opts.remote(pack(payload.as_tuple()), *parents)
            except Exception as exc:  # noqa: BLE001 - this task's fault (or its inputs'): fail it alone
                self._launch_failed(run, i, d, exc, now)
                continue
            # A task dispatched ahead gets its deadline when it takes a slot (`Outcomes.start_clocks`).
            deadline = now + spec.timeout if spec.timeout and i not in run.ahead else None
            att = Attempt(run, i, run.attempts[i], d.node, ref, now, deadline)
            self.running[ref] = att
            self.by_task[(run.run_id, i)] = att
            started += 1
        self.timing["submit"] += time.perf_counter() - t2
        self.metrics.started(started)

    def _launch_failed(self, run: RunState, i: int, d, exc: BaseException, now: float) -> None:
        msg = f"Task '{run.dag.ids[i]}' could not be started: {type(exc).__name__}: {exc}"
        log.error(msg, extra={"run_id": run.run_id, "task_id": run.dag.ids[i], "attempt": run.attempts[i]})
        self.launches.pop((run.run_id, i), None)
        att = Attempt(run, i, run.attempts[i], d.node, None, now, None)
        self.state.failed(run, i, d.node, msg, now, retryable=False)
        self.journal.executions.append(att.execution("failed", now, self.nodes, error=msg))
        self.metrics.failed(1, "launch")

    def _options(self, cpus: float, memory: float, gpus: float, custom: tuple, node: int):
        key = (cpus, memory, gpus, custom, node)
        opts = self._options_cache.get(key)
        if opts is None:
            if len(self._options_cache) >= 4096:  # sized memory requests make many distinct keys: stay bounded
                self._options_cache.clear()
            kwargs: dict[str, Any] = {
                "num_cpus": cpus,
                "num_gpus": gpus,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(self.nodes.ids[node], soft=False),
            }
            if memory > 0:
                kwargs["memory"] = int(memory)
            if custom:
                kwargs["resources"] = dict(custom)
            opts = self._options_cache[key] = _execute_remote.options(**kwargs)
        return opts

    def _parent_value(self, run: RunState, name: str):
        i = run.dag.index[name]
        ref = self.value_refs.get((run.run_id, i))
        if ref is None:
            # Resumed run: the parent's result was persisted before the restart.
            result_ref = run.result_refs[i]
            value = self.store.load_result(result_ref) if result_ref else None
            ref = self.value_refs[(run.run_id, i)] = ray.put((value, None))
        return ref

    def stop(self, att: Attempt) -> None:
        """Cancel an attempt on Ray and stop following it."""
        ray.cancel(att.ref, force=True)
        self.running.pop(att.ref, None)
        self.by_task.pop((att.run.run_id, att.index), None)

    def take_pending(self, run: RunState) -> list[tuple[RunState, Any, int]]:
        """Take out the decided tasks of `run` that are not handed to Ray yet."""
        held = [x for x in self.pending if x[0] is run]
        self.pending = [x for x in self.pending if x[0] is not run]
        return held

    def forget(self, run: RunState) -> None:
        """Drop what was kept for a run that ended (its tasks' launches and results)."""
        for i in range(run.dag.n):
            self.value_refs.pop((run.run_id, i), None)
            self.launches.pop((run.run_id, i), None)

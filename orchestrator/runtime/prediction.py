"""Task predictions inside the runtime: tasks that come without an expected duration are predicted (runtime, cpu,
memory quantiles) when their run is admitted; the median runtime becomes what the scheduling policy is told;
every prediction is stored in `resource_predictions`, and the actual use is filled in when the task finishes,
so that accuracy is tracked over time. Finished tasks feed the predictor's history (online learning), and a
category's waiting tasks are predicted again when 1, 2, 4, ... 32 of their siblings in the run have finished:
what the run's own tasks took is the best evidence there is for the rest (each refresh is stored as a new row).

Runs in a background thread of the orchestrator actor: predictions are advisory and never hold up dispatch.
"""

from __future__ import annotations

import logging
import math
import queue
from collections import OrderedDict
import threading
from typing import Any

log = logging.getLogger("orchestrator.runtime.prediction")

# Refresh a category's waiting predictions when this many of its siblings finished (powers of two up to the
# predictors' history window): at most six extra passes over a category, however large.
REFRESH_AT = frozenset(2**k for k in range(6))
RUN_ERRORS = 200  # a run's own prediction errors kept for its runtime band


class TaskPredictions:
    def __init__(self, store, lock: threading.RLock, models_dir: str | None = None):
        from ..prediction import History, Predictor

        self.store = store
        self.lock = lock
        self.predictor = Predictor.load(models_dir=models_dir)  # raises PredictionError without a checkpoint
        self.version = f"predictor/{self.predictor.version}"
        self.history = History()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queue.put(("seed", None, None))  # first, learn from the runs already in the store
        self._thread = threading.Thread(target=self._work, name="orchestrator-predictions", daemon=True)
        self._thread.start()
        self.errors = 0
        self.refreshes = 0
        # (run id, category) -> siblings finished in the run; the oldest forgotten beyond 4,096 entries
        self._finished: OrderedDict[tuple[str, str], int] = OrderedDict()
        # run id -> `Predictor.runtime_error` of its finished tasks (up to RUN_ERRORS), for a family the models
        # never trained on: enough of them set the runtime band of the run's later predictions
        self._run_errors: OrderedDict[str, list[float]] = OrderedDict()
        # Called with (run, {task index: predicted seconds}) under the lock: `RuntimeState.update_predictions`.
        self.on_predicted = None

    # Called by the actor under its lock: cheap, only enqueues.
    def admitted(self, run) -> None:
        unknown = [i for i, t in enumerate(run.specs) if t.duration is None]
        if unknown:
            self._queue.put(("admit", run, unknown))

    def finished(self, run, i: int, duration: float, cpu: float | None, peak_memory: int | None) -> None:
        self._queue.put(("done", run, (i, duration, cpu, peak_memory)))

    def stop(self) -> None:
        self._queue.put(("stop", None, None))
        self._thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            kind, run, data = self._queue.get()
            if kind == "stop":
                return
            try:
                if kind == "seed":
                    self._seed()
                elif kind == "admit":
                    self._predict(run, data)
                else:
                    self._observe(run, *data)
            except Exception:  # noqa: BLE001 - advisory: log, count, carry on
                self.errors += 1
                log.exception("task prediction failed", extra={"run_id": getattr(run, "run_id", None)})

    def _seed(self, runs: int = 20) -> None:
        """The history starts with the successful attempts of the most recent runs in the store."""
        from ..prediction import Execution
        from .recent import recent_successes

        seeded = 0
        for rec, _, spec, e in recent_successes(self.store, runs):
            if e.duration is None:
                continue
            self.history.add(Execution(spec.category, e.duration, e.cpu,
                                       float(e.peak_memory) if e.peak_memory else None, spec.input_bytes,
                                       spec.output_bytes, same_run=False, run_id=rec.run_id))
            seeded += 1
        log.info("prediction history seeded with %d executions", seeded)

    def _predict(self, run, indices: list[int]) -> None:
        from ..prediction.store_adapter import record_predictions

        family = run.workflow.family
        pairs: list[tuple[str, Any]] = []
        medians: dict[int, float] = {}
        seen: dict[str, list] = {}  # category -> its history as this run sees it (its own finished siblings)
        for i in indices:
            spec = run.specs[i]
            try:
                rows = seen.get(spec.category)
                if rows is None:
                    rows = seen[spec.category] = self.history.for_run(spec.category, run.run_id)
                p = self.predictor.predict(spec, rows, family, self._run_errors.get(run.run_id))
            except Exception as exc:  # noqa: BLE001 - e.g. a category never seen and no prior
                log.info("no prediction for %s: %s", spec.id, exc, extra={"run_id": run.run_id, "task_id": spec.id})
                continue
            pairs.append((spec.id, p))
            medians[i] = max(float(p.runtime.median), 0.0)
        if pairs:
            record_predictions(self.store, run.run_id, pairs, self.version)
        if medians and self.on_predicted is not None:
            with self.lock:  # the policy sees the predicted durations from now on, its queue re-keyed
                self.on_predicted(run, medians)

    def _observe(self, run, i: int, duration: float, cpu: float | None, peak_memory: int | None) -> None:
        from ..prediction import Execution
        from ..store.records import PredictionActual

        spec = run.specs[i]
        self._record_error(run, spec, duration)
        self.history.add(Execution(spec.category, duration, cpu, float(peak_memory) if peak_memory else None,
                                   spec.input_bytes, spec.output_bytes, same_run=True, run_id=run.run_id))
        if spec.duration is None:
            self.store.update_prediction_actuals([PredictionActual(
                run.run_id, spec.id, duration, cpu, float(peak_memory) if peak_memory else None)])
        key = (run.run_id, spec.category)
        done = self._finished[key] = self._finished.get(key, 0) + 1
        self._finished.move_to_end(key)
        if len(self._finished) > 4096:
            self._finished.popitem(last=False)
        if done in REFRESH_AT:
            self._refresh(run, spec.category)

    def _record_error(self, run, spec, duration: float) -> None:
        """The finished task's runtime error from what had finished before it (one more prediction per task,
        only for a family the models never trained on, and only until the run has RUN_ERRORS of them)."""
        family = run.workflow.family
        errors = self._run_errors.get(run.run_id)
        if self.predictor.trained_on(family) or (errors is not None and len(errors) >= RUN_ERRORS):
            return
        error = self.predictor.runtime_error(spec, self.history.for_run(spec.category, run.run_id), family,
                                             duration)
        if error is not None and math.isfinite(error):
            self._run_errors.setdefault(run.run_id, []).append(error)
            self._run_errors.move_to_end(run.run_id)
            if len(self._run_errors) > 1024:
                self._run_errors.popitem(last=False)

    def _refresh(self, run, category: str) -> None:
        """Predict again the tasks of `category` in this run that came without a duration and have not started."""
        from ..scheduling.interface import TASK_PENDING, TASK_READY

        with self.lock:  # a run that ended has nothing waiting (and `update_predictions` ignores it)
            codes = bytes(run.status)
            waiting = [i for i, t in enumerate(run.specs) if t.category == category and t.duration is None
                       and codes[i] in (TASK_PENDING, TASK_READY)]
        if waiting:
            self.refreshes += 1
            self._predict(run, waiting)

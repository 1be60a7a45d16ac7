"""The one bridge between prediction and the state store: write task predictions (and later their actuals)
to `resource_predictions`, and read cluster samples as a usage series for the forecaster. The store is passed
in; its record types are imported only when these functions run."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ..model import TaskSpec
from .predictor import Prediction
from .series import series_from_frame


def prediction_records(run_id: str | None, predictions: Iterable[tuple[str | None, Prediction]],
                       model_version: str) -> list[Any]:
    """`PredictionRecord`s (median as the prediction, lowest/highest quantile as the band) for (task id,
    prediction) pairs."""
    from ..store.records import PredictionRecord

    rows = []
    for task_id, p in predictions:
        def band(q):
            return (q.median, q.low, q.high) if q is not None else (None, None, None)
        rt, cpu, mem = band(p.runtime), band(p.cpu), band(p.memory)
        rows.append(PredictionRecord(
            run_id=run_id, task_id=task_id, category=p.category, model_version=model_version,
            predicted_runtime=rt[0], predicted_cpu=cpu[0], predicted_memory=mem[0],
            runtime_lower=rt[1], runtime_upper=rt[2], cpu_lower=cpu[1], cpu_upper=cpu[2],
            memory_lower=mem[1], memory_upper=mem[2]))
    return rows


def record_predictions(store: Any, run_id: str | None, predictions: Iterable[tuple[str | None, Prediction]],
                       model_version: str) -> int:
    """Write predictions with `store.record_predictions`; returns how many rows were written."""
    rows = prediction_records(run_id, predictions, model_version)
    if rows:
        store.record_predictions(rows)
    return len(rows)


def record_actuals(store: Any, run_id: str, tasks: Sequence[TaskSpec]) -> int:
    """Fill what finished tasks really used (their `observed` field) into their predictions."""
    from ..store.records import PredictionActual

    rows = [PredictionActual(run_id, t.id, t.observed.runtime, t.observed.avg_cpu,
                             float(t.observed.peak_memory) if t.observed.peak_memory else None)
            for t in tasks if t.observed is not None]
    return store.update_prediction_actuals(rows) if rows else 0


def usage_series(store: Any, column: str = "cpus_used", since: float | None = None, step_minutes: int = 5,
                 max_gap_steps: int = 3) -> pd.Series:
    """Cluster-wide samples (node=None) from `store.system_samples` as a regular series for the forecaster
    (`cpus_used`, `memory_used`, `queue_length`, ...), averaged onto the step grid."""
    samples = [s for s in store.system_samples(since=since) if s.node is None]
    frame = pd.DataFrame({"timestamp": pd.to_datetime([s.ts for s in samples], unit="s"),
                          "value": [getattr(s, column) for s in samples]})
    if len(frame):
        frame = frame.set_index("timestamp").resample(f"{step_minutes}min").mean().dropna().reset_index()
    return series_from_frame(frame, step_minutes, max_gap_steps, source=f"system samples ({column})")

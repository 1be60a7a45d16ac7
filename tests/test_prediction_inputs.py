"""Bad input to the prediction package: each gets a clear PredictionError or a documented fallback."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import PredictionError
from orchestrator.prediction import Execution, History, Predictor, TaskFeatures
from orchestrator.prediction.baselines import Prior
from orchestrator.prediction.checkpoints import resolve_version
from orchestrator.prediction.config import ForecasterConfig, load_config
from orchestrator.prediction.cost import cheapest_cluster
from orchestrator.prediction.forecast_model import DemandLSTM
from orchestrator.prediction.forecaster import Forecaster, min_history
from orchestrator.prediction.node_types import load_node_types
from orchestrator.prediction.series import load_series, series_from_frame


# ---- task records ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("runtime", float("nan"), "not finite"),
    ("runtime", -1.0, "negative"),
    ("runtime", "fast", "not a number"),
    ("runtime", None, "missing"),
    ("cpu", float("inf"), "not finite"),
    ("memory", -5, "negative"),
    ("input_bytes", float("nan"), "not finite"),
])
def test_bad_execution_values_are_rejected(field, value, message):
    kwargs = {"category": "mProject", "runtime": 3.0, field: value}
    with pytest.raises(PredictionError, match=message):
        Execution(**kwargs)


def test_bad_task_features_are_rejected():
    with pytest.raises(PredictionError, match="negative"):
        TaskFeatures("mProject", input_bytes=-1)
    with pytest.raises(PredictionError, match="category"):
        TaskFeatures("")


def _prior() -> Prior:
    p = Prior(np.array([0.1, 0.5, 0.9]))
    p.table["*"] = np.array([[1.0, 5.0, 30.0], [0.2, 0.8, 1.0], [np.nan, np.nan, np.nan]])
    return p


def test_unknown_category_with_empty_history_uses_the_prior():
    pred = Predictor(None, {"runtime": "category-mean", "cpu": "category-mean", "memory": "category-mean"},
                     prior=_prior()).predict(TaskFeatures("never-seen", 1e6), history=[])
    assert pred.methods == {"runtime": "prior", "cpu": "prior", "memory": "prior"}
    assert pred.runtime.values == (1.0, 5.0, 30.0)
    assert pred.memory is None  # no memory known anywhere: None, not a made-up number
    assert pred.history_size == 0


def test_empty_history_without_a_prior_is_an_error():
    with pytest.raises(PredictionError, match="history is empty"):
        Predictor(None, {}, prior=None).predict(TaskFeatures("x"), [])


def test_single_execution_history_gives_a_finite_ordered_prediction():
    history = [Execution("mAdd", 4.0, 0.9, 7e7, 1e6, 2e6)]
    for method in ("category-mean", "last-value", "log-linear"):
        pred = Predictor(None, {t: method for t in ("runtime", "cpu", "memory")}, prior=_prior()).predict(
            TaskFeatures("mAdd", 1e6, 2e6), history)
        for q in (pred.runtime, pred.cpu, pred.memory):
            assert all(math.isfinite(v) and v >= 0 for v in q.values)
            assert list(q.values) == sorted(q.values)


def test_history_of_other_categories_is_ignored_and_wrong_types_rejected():
    pred = Predictor(None, {}, prior=_prior()).predict(TaskFeatures("a"), [Execution("b", 100.0)])
    assert pred.methods["runtime"] == "prior"
    with pytest.raises(PredictionError, match="Execution"):
        Predictor(None, {}, prior=_prior()).predict(TaskFeatures("a"), [{"runtime": 1}])


def test_history_keeps_a_bounded_window():
    h = History(max_per_category=5)
    for i in range(12):
        h.add(Execution("c", float(i + 1)))
    assert [e.runtime for e in h.of("c")] == [8.0, 9.0, 10.0, 11.0, 12.0]


# ---- series ------------------------------------------------------------------------------------------------------
def _csv(tmp_path, text: str):
    p = tmp_path / "s.csv"
    p.write_text(text)
    return p


def test_series_errors_name_the_problem(tmp_path):
    with pytest.raises(PredictionError, match="empty"):
        load_series(_csv(tmp_path, "timestamp,value\n"))
    with pytest.raises(PredictionError, match="does not exist"):
        load_series(tmp_path / "missing.csv")
    with pytest.raises(PredictionError, match=r"row 2 has value 'high'"):
        load_series(_csv(tmp_path, "timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,high\n"))
    with pytest.raises(PredictionError, match="negative"):
        load_series(_csv(tmp_path, "timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,-3\n"))
    with pytest.raises(PredictionError, match="not a date"):
        load_series(_csv(tmp_path, "timestamp,value\nyesterday,1\n2024-01-01 00:05,2\n"))
    with pytest.raises(PredictionError, match="no column 'value'"):
        load_series(_csv(tmp_path, "timestamp,cpu\n2024-01-01 00:00,1\n"))
    with pytest.raises(PredictionError, match="at least 2"):
        load_series(_csv(tmp_path, "timestamp,value\n2024-01-01 00:00,1\n"))


def test_long_gap_raises_and_short_gap_is_interpolated(tmp_path):
    with pytest.raises(PredictionError, match="gap of 60 minutes"):
        load_series(_csv(tmp_path, "timestamp,value\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n"))
    # 15 min hole (2 missing points), a NaN value, unsorted rows and a duplicate timestamp.
    s = load_series(_csv(tmp_path, "timestamp,value\n2024-01-01 00:20,4\n2024-01-01 00:00,1\n"
                                   "2024-01-01 00:05,2\n2024-01-01 00:05,2\n2024-01-01 00:25,\n2024-01-01 00:30,6\n"))
    assert (s.index[1:] - s.index[:-1] == pd.Timedelta(minutes=5)).all()
    assert s.index[0] == pd.Timestamp("2024-01-01 00:00") and s.index[-1] == pd.Timestamp("2024-01-01 00:30")
    np.testing.assert_allclose(s.to_numpy(), [1, 2, 8 / 3, 10 / 3, 4, 5, 6])


def test_frame_input_with_datetime_index():
    idx = pd.date_range("2024-01-01", periods=4, freq="5min")
    s = series_from_frame(pd.DataFrame({"cpu_used": [1.0, 2.0, 3.0, 4.0]}, index=idx), value_column="cpu_used",
                          time_column=None)
    assert list(s) == [1.0, 2.0, 3.0, 4.0]


def test_forecast_needs_enough_history():
    cfg = ForecasterConfig(window=12, season=24)
    forecaster = Forecaster(DemandLSTM(cfg.horizon, 8), cfg)
    short = pd.Series(np.ones(min_history(cfg) - 1), index=pd.date_range("2024-01-01", periods=min_history(cfg) - 1,
                                                                         freq="5min"))
    with pytest.raises(PredictionError, match="at least 36"):
        forecaster.forecast(short)


# ---- config, checkpoints, planners -----------------------------------------------------------------------------------
def test_config_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("task_model: {hidden_size: many}\n")
    with pytest.raises(PredictionError, match="task_model.hidden_size"):
        load_config(bad)
    bad.write_text("task_model: [1, 2\n")
    with pytest.raises(PredictionError, match="Cannot parse"):
        load_config(bad)
    with pytest.raises(PredictionError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_missing_checkpoint_version(tmp_path):
    with pytest.raises(PredictionError, match="No trained model"):
        resolve_version(tmp_path)
    with pytest.raises(PredictionError, match="not found"):
        resolve_version(tmp_path, "v7")


def test_bad_node_types_and_deadline(tmp_path, trace_dir):
    bad = tmp_path / "n.yaml"
    bad.write_text("node_types:\n  - {name: a, cpus: -2, memory_gib: 4, price_per_hour: 1}\n")
    with pytest.raises(PredictionError, match="Invalid node type"):
        load_node_types(bad)
    from orchestrator.loaders import load_workflow
    wf = load_workflow(trace_dir / "wfcommons/montage/montage-chameleon-2mass-005d-001.json.gz")
    with pytest.raises(PredictionError, match="deadline"):
        cheapest_cluster(wf, load_node_types(), deadline=-1)


def test_store_adapter_writes_prediction_rows_and_actuals_to_a_real_store(sqlite_url):
    """Predictions written through the adapter come back from the store with the median as the prediction and
    the outer quantiles as the band; actuals of finished tasks fill in those rows only."""
    from orchestrator.model import Observation, Workflow
    from orchestrator.prediction.predictor import Prediction, Quantiles
    from orchestrator.prediction.store_adapter import record_actuals, record_predictions
    from orchestrator.store import Store

    q = (0.1, 0.5, 0.9)
    with_memory = Prediction("mAdd", Quantiles(q, (1.0, 2.0, 4.0)), Quantiles(q, (0.5, 0.9, 1.0)),
                             Quantiles(q, (1e6, 2e6, 3e6)), {"runtime": "lstm"}, 3)
    without = Prediction("mAdd", Quantiles(q, (3.0, 5.0, 8.0)), None, None, {"runtime": "prior"}, 0)
    wf = Workflow(name="w", tasks=[{"id": "t1", "category": "mAdd"}, {"id": "t2", "category": "mAdd"}])
    with Store.open(sqlite_url) as store:
        run_id = store.create_workflow(wf, "fifo")
        other = store.create_workflow(wf, "fifo")
        assert record_predictions(store, run_id, [("t1", with_memory), ("t2", without)], "v3") == 2
        assert record_predictions(store, other, [("t1", without)], "v3") == 1
        assert record_predictions(store, run_id, [], "v3") == 0
        rows = {r.task_id: r for r in store.predictions(run_id=run_id)}
        assert sorted(rows) == ["t1", "t2"]
        r1, r2 = rows["t1"], rows["t2"]
        assert (r1.predicted_runtime, r1.runtime_lower, r1.runtime_upper) == (2.0, 1.0, 4.0)
        assert (r1.predicted_cpu, r1.cpu_lower, r1.cpu_upper) == (0.9, 0.5, 1.0)
        assert (r1.predicted_memory, r1.memory_lower, r1.memory_upper) == (2e6, 1e6, 3e6)
        assert (r2.predicted_runtime, r2.runtime_lower, r2.runtime_upper) == (5.0, 3.0, 8.0)
        assert r2.predicted_cpu is None and r2.cpu_lower is None and r2.predicted_memory is None
        assert {r.model_version for r in rows.values()} == {"v3"} and {r.category for r in rows.values()} == {"mAdd"}
        assert all(r.actual_runtime is None for r in rows.values())

        observed = Observation(runtime=2.5, avg_cpu=0.8, peak_memory=1_500_000)
        finished = [wf.tasks[0].model_copy(update={"observed": observed}), wf.tasks[1]]  # t2 has no actual
        assert record_actuals(store, run_id, finished) == 1
        done = store.predictions(run_id=run_id, with_actuals=True)
        assert [(r.task_id, r.actual_runtime, r.actual_cpu, r.actual_memory) for r in done] == [
            ("t1", 2.5, 0.8, 1_500_000.0)]
        assert store.predictions(run_id=other, with_actuals=True) == []  # another run's t1 is left alone


def test_checkpoint_from_other_feature_version_refuses_to_load(tmp_path):
    from orchestrator.prediction.config import TaskModelConfig
    from orchestrator.prediction.predictor import LSTMTaskPredictor
    from orchestrator.prediction.task_model import TaskHistoryLSTM

    cfg = TaskModelConfig(hidden_size=4)
    lstm = LSTMTaskPredictor(TaskHistoryLSTM(4), cfg, _prior())
    state = lstm.state()
    state["feature_version"] = 1
    with pytest.raises(PredictionError, match="retrain"):
        LSTMTaskPredictor.from_state(state)
    lstm.save(tmp_path, {})
    loaded, meta = LSTMTaskPredictor.load(tmp_path)
    assert meta["version"] == "v1" and loaded.cfg.hidden_size == 4


def test_shipped_predictor_checkpoint_loads_with_this_feature_version():
    """models/predictor/ (latest) must match the features this code computes, or `Predictor.load()` fails."""
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "models" / "predictor"
    predictor = Predictor.load(models_dir=models)
    history = [Execution("mProject", 10.0 + i, 0.9, 2e7, 1e6 * (i + 1), 2e6 * (i + 1)) for i in range(5)]
    pred = predictor.predict(TaskFeatures("mProject", 3e6), history)
    assert 0 < pred.runtime.low <= pred.runtime.median <= pred.runtime.high

"""Ray Tune trains the task predictor and the forecaster with a tiny search on the session Ray cluster, and
the saved versions load back and predict."""

from __future__ import annotations

import shutil

import numpy as np

from orchestrator.prediction import Execution, Predictor, TaskFeatures
from orchestrator.prediction.checkpoints import list_versions
from orchestrator.prediction.config import ROOT
from orchestrator.prediction.forecaster import Forecaster
from orchestrator.prediction.series import load_series
from orchestrator.prediction.tuning import load_training_script

SMALL_TRACES = ["montage/montage-chameleon-2mass-005d-001", "montage/montage-chameleon-dss-05d-001",
                "montage/montage-chameleon-2mass-01d-001", "epigenomics/epigenomics-chameleon-hep-1seq-100k-001",
                "epigenomics/epigenomics-chameleon-hep-1seq-50k-001", "epigenomics/epigenomics-chameleon-hep-2seq-100k-001"]


def test_tune_predictor_saves_a_loadable_version(ray_cluster, tmp_path, trace_dir):
    traces = tmp_path / "traces"
    traces.mkdir()
    for name in SMALL_TRACES:
        shutil.copy(trace_dir / "wfcommons" / f"{name}.json.gz", traces)
    script = load_training_script("tune_predictor")
    models = tmp_path / "models"
    tiny = {"task_model.episodes_per_group": 4, "task_model.hidden_size": 8, "tune_predictor.grace_period": 1,
            "tune_predictor.search_space": {"lr": {"loguniform": [0.001, 0.01]}}}
    path = script.main(script.Args(traces=traces, samples=2, epochs=2, models_dir=models, overrides=tiny))
    assert path.name == "v1" and list_versions(models) == ["v1"]
    predictor = Predictor.load(models_dir=models)
    assert predictor.version == "v1" and predictor.selection["runtime"] == "lstm"
    history = [Execution("mProject", 12.0, 0.9, 3e7, 2e6, 8e6, same_run=True)] * 3
    pred = predictor.predict(TaskFeatures("mProject", 2e6, 8e6), history)
    assert 0 < pred.runtime.low <= pred.runtime.median <= pred.runtime.high
    import json
    meta = json.loads((path / "metadata.json").read_text())
    assert len(meta["trials"]) == 2 and meta["data"]["runs"] == len(SMALL_TRACES)


def test_tune_forecaster_saves_a_loadable_version(ray_cluster, tmp_path):
    script = load_training_script("tune_forecaster")
    series = sorted((ROOT / "data" / "series").glob("*.csv"))[:2]
    tiny = {"forecaster.hidden_size": 8, "forecaster.train_fraction": 0.3, "tune_forecaster.grace_period": 1,
            "tune_forecaster.search_space": {"lr": {"loguniform": [0.001, 0.01]}}}
    path = script.main(script.Args(series=series, samples=1, epochs=1, models_dir=tmp_path, overrides=tiny))
    forecaster, meta = Forecaster.load(tmp_path, path.name)
    fc = forecaster.forecast(load_series(series[0]))
    assert fc.values.shape == (12, 3) and np.isfinite(fc.values).all()
    assert meta["kind"] == "demand-forecaster"

"""The task predictor on real traces with a tiny LSTM: online learning within a run, ordered and roughly
calibrated quantile bands, baselines scored on the same tasks, the facade's selection, latency."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from orchestrator.loaders import load_workflow
from orchestrator.errors import PredictionError
from orchestrator.prediction import Execution, History, Predictor, TaskFeatures
from orchestrator.prediction.baselines import Prior
from orchestrator.prediction.config import load_config
from orchestrator.prediction.features import build_table
from orchestrator.prediction.history_arrays import HistoryArrays, Query
from orchestrator.prediction.metrics import wape
from orchestrator.prediction.predictor import LSTMTaskPredictor, write_selection
from orchestrator.prediction.task_evaluation import (
    evaluate_task_predictors,
    measure_latency,
    held_out_episodes,
    time_split,
)
from orchestrator.prediction.task_training import fit_task_model

FILES = [
    "montage/montage-chameleon-2mass-005d-001", "montage/montage-chameleon-2mass-01d-001",
    "montage/montage-chameleon-2mass-015d-001", "montage/montage-chameleon-dss-075d-001",
    "1000genome/1000genome-chameleon-2ch-100k-001", "1000genome/1000genome-chameleon-4ch-100k-001",
    "1000genome/1000genome-chameleon-6ch-100k-001",
    "epigenomics/epigenomics-chameleon-hep-1seq-100k-001", "epigenomics/epigenomics-chameleon-hep-2seq-100k-001",
    "epigenomics/epigenomics-chameleon-hep-3seq-100k-001",
]
TINY = {"task_model.epochs": 4, "task_model.episodes_per_group": 12, "task_model.hidden_size": 24,
        "evaluation.latency_trials": 200, "evaluation.online_fractions": [0.0, 0.2]}


@pytest.fixture(scope="module")
def workflows(trace_dir):
    return [load_workflow(trace_dir / "wfcommons" / f"{name}.json.gz") for name in FILES]


@pytest.fixture(scope="module")
def table(workflows):
    return build_table(workflows)


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def trained(table, cfg):
    """A tiny LSTM trained on the earlier runs (time split), with its prior."""
    train_runs, test_runs = time_split(table, cfg.evaluation.test_fraction)
    model, info = fit_task_model(table, train_runs, cfg.task_model)
    prior = Prior.fit(table, table.select_runs(train_runs), cfg.task_model.quantiles)
    return LSTMTaskPredictor(model, cfg.task_model, prior, info["memory_examples"] > 0), train_runs, test_runs


def test_runs_are_split_in_time_order(table, trained):
    _, train_runs, test_runs = trained
    assert not set(train_runs) & set(test_runs)
    for fam in range(len(table.families)):
        tr = [table.run_time[r] for r in train_runs if table.run_family[r] == fam]
        te = [table.run_time[r] for r in test_runs if table.run_family[r] == fam]
        assert te and max(tr) <= min(te)


def test_online_error_falls_as_siblings_finish(table, trained, workflows):
    """On a held-out run, the same mProject/mDiffFit tasks are predicted better once more siblings finished."""
    lstm, _, test_runs = trained
    run = next(r for r in test_runs if table.families[table.run_family[r]] == "montage")
    wf = next(w for w in workflows if w.name == table.runs[run])
    predictor = Predictor(lstm, {"runtime": "lstm", "cpu": "lstm", "memory": "lstm"})
    for category in ("mProject", "mDiffFit"):
        tasks = [t for t in wf.tasks if t.category == category]
        queries = tasks[len(tasks) // 2:]
        truth = np.array([t.observed.runtime for t in queries])
        errors = []
        for k in (0, 1, len(tasks) // 2):
            history = History()  # this family was never seen in this run before: no earlier runs
            for t in tasks[:k]:
                history.observe(t)
            pred = np.array([predictor.predict(t, history, "montage").runtime.median for t in queries])
            errors.append(wape(truth, pred))
        # no history (the family prior) -> one sibling -> half the siblings: better, then no worse
        assert errors[1] < 0.5 * errors[0] and errors[2] <= errors[1] + 0.01, (category, errors)


def test_quantile_bands_are_ordered_and_cover_about_80_percent(table, trained, cfg):
    lstm, _, test_runs = trained
    episodes = held_out_episodes(table, test_runs, 0.2, True, cfg.task_model.max_history)
    from orchestrator.prediction.history_arrays import HistoryArrays, Query
    hs = [HistoryArrays.from_table(table, e.history, e.same_run) for e in episodes]
    qs = [Query.from_table(table, e.query) for e in episodes]
    pred = lstm.predict_batch(hs, qs)
    finite = np.isfinite(pred).all(axis=2)
    assert finite[:, :2].all()  # runtime and cpu always predicted
    assert (np.diff(pred[finite], axis=-1) >= 0).all()
    q = np.array([e.query for e in episodes])
    y = table.runtime[q]
    inside = (y >= pred[:, 0, 0]) & (y <= pred[:, 0, -1])
    assert 0.6 <= inside.mean() <= 0.95, inside.mean()


@pytest.fixture(scope="module")
def evaluation(table, cfg):
    return evaluate_task_predictors(table, cfg, lofo=True)


def test_every_method_scored_on_the_same_tasks(evaluation):
    ev = evaluation
    main = [r for r in ev.rows if r["eval"] == "time-split@20%" and r["family"] == "ALL"]
    methods = {"lstm", "lightgbm", "category-mean", "category-median-32", "last-value", "log-linear", "prior",
               "selected"}
    assert methods <= {r["method"] for r in main} <= methods | {"per-family"}
    assert len({r["tasks"] for r in main}) == 1 and main[0]["tasks"] > 100
    assert len({r["memory_n"] for r in main}) == 1 and main[0]["memory_n"] > 0  # montage only, same rows
    # the selection was made on the calibration runs, which are training runs, never the scored ones
    info = ev.info["time-split"]
    assert info["selection"] == ev.selection and not set(info["calibration_runs"]) & set(info["test_runs"])
    # 'selected' is, per family and target, exactly the chosen method's prediction
    fam_rows = [r for r in ev.rows if r["eval"] == "time-split@20%" and r["family"] != "ALL"]
    # ('per-family', when the calibration runs found a family its own winner, is that choice)
    for fam in {r["family"] for r in fam_rows}:
        by_method = {r["method"]: r for r in fam_rows if r["family"] == fam}
        rows = [("selected", {**ev.selection, **ev.family_selection.get(fam, {})})]
        if "per-family" in by_method:
            rows.append(("per-family", {**ev.selection, **ev.info["family_choice"].get(fam, {})}))
        for row, choice in rows:
            for target, method in choice.items():
                a, b = by_method[row][f"{target}_accuracy"], by_method[method][f"{target}_accuracy"]
                assert a == pytest.approx(b, nan_ok=True), (row, fam, target, method)
    # the online curve reuses one query set, so its accuracy is comparable across history fractions
    online = [r for r in ev.rows if r["eval"].startswith("online") and r["method"] == "lstm"]
    assert len(online) == 2 and online[0]["tasks"] == online[1]["tasks"]


def test_calibrated_bands_cover_closer_to_nominal(evaluation):
    """Every method's p10-p90, recalibrated on the calibration runs, covers the held-out runtimes nearer to 80%
    than the methods' own bands do on average."""
    main = [r for r in evaluation.rows if r["eval"] == "time-split@20%" and r["family"] == "ALL"
            and r["method"] not in ("prior", "selected")]
    calibrated = np.array([r["runtime_coverage"] for r in main])
    raw = np.array([r["runtime_coverage_raw"] for r in main])
    assert np.abs(calibrated - 0.8).mean() < np.abs(raw - 0.8).mean(), (calibrated, raw)
    assert 0.7 <= np.median(calibrated) <= 0.92, calibrated  # a tiny calibration set: about, not exactly
    assert all(np.isfinite(r["runtime_width"]) and r["runtime_width"] > 0 for r in main)


def test_leave_one_family_out_never_trains_on_the_family(table, evaluation):
    ev = evaluation
    for fam in table.families:
        info = ev.info[f"lofo:{fam}"]
        fam_runs = sum(1 for r in range(len(table.runs)) if table.families[table.run_family[r]] == fam)
        assert info["train_runs"] + info["validation_runs"] == len(table.runs) - fam_runs
    lofo_montage = [r for r in ev.rows if r["eval"] == "lofo:montage@20%" and r["method"] == "lstm"]
    assert lofo_montage and np.isfinite(lofo_montage[0]["runtime_accuracy"])


def test_facade_follows_the_written_selection(tmp_path, trained):
    lstm, _, _ = trained
    lstm.save(tmp_path, {"kind": "task-predictor"})
    write_selection(tmp_path, {"runtime": "log-linear", "cpu": "lstm", "memory": "category-mean"}, {},
                    families={"montage": {"runtime": "category-median-32"}})
    predictor = Predictor.load(models_dir=tmp_path)
    history = [Execution("mProject", 10.0 + i, 0.9, 2e7, 1e6 * (i + 1), 2e6 * (i + 1)) for i in range(5)]
    pred = predictor.predict(TaskFeatures("mProject", 3e6, 6e6), history)
    assert pred.methods == {"runtime": "log-linear", "cpu": "lstm", "memory": "category-mean"}
    assert pred.memory.median == pytest.approx(2e7)
    montage = predictor.predict(TaskFeatures("mProject", 3e6, 6e6, "montage"), history)
    assert montage.methods["runtime"] == "category-median-32" and montage.runtime.median == pytest.approx(12.0)
    # a selection naming the gradient-boosted model needs a checkpoint that holds one
    write_selection(tmp_path, {"runtime": "lightgbm"}, {})
    with pytest.raises(PredictionError, match="gradient-boosted"):
        Predictor.load(models_dir=tmp_path)


def test_gradient_boosted_model_round_trips_and_ignores_output_sizes(tmp_path, table, trained, cfg):
    """The LightGBM model saved beside the LSTM (its median models) loads to the same medians, applies its
    calibrated band through the facade, and reads no query output size."""
    from orchestrator.prediction.calibration import ConformalBands
    from orchestrator.prediction.task_gbm import TaskGBM

    lstm, train_runs, _ = trained
    gbm = TaskGBM.fit(table, train_runs, cfg.task_model, lstm.prior, num_boost_round=20)
    lstm.save(tmp_path, {"kind": "task-predictor"}, gbm=gbm)
    bands = ConformalBands(0.1, 0.9, {"0": {"*": (-1.0, 2.0)}})
    write_selection(tmp_path, {"runtime": "lightgbm", "cpu": "lightgbm", "memory": "lightgbm"}, {},
                    bands={"lightgbm": bands})
    predictor = Predictor.load(models_dir=tmp_path)
    history = [Execution("mProject", 10.0 + 3 * i, 0.8, 2e7, 1e6 * (i + 1), 2e6 * (i + 1)) for i in range(8)]
    arrays = HistoryArrays.from_executions(history)
    preds = [predictor.predict(TaskFeatures("mProject", 3e6, out, "montage"), history) for out in (1e3, 5e9, None)]
    assert preds[0] == preds[1] == preds[2]
    assert preds[0].methods == {"runtime": "lightgbm", "cpu": "lightgbm", "memory": "lightgbm"}
    direct = gbm.predict(arrays, Query(float(np.log1p(3e6)), "montage"))
    rt = preds[0].runtime
    assert rt.median == pytest.approx(direct[0, 1])
    spread = np.sqrt(np.log([10.0 + 3 * i for i in range(8)]).var() + 0.1**2)
    assert rt.low == pytest.approx(rt.median * np.exp(-1.0 * spread))
    assert rt.high == pytest.approx(rt.median * np.exp(2.0 * spread))
    assert preds[0].cpu.median == pytest.approx(direct[1, 1])
    # the checkpoint keeps the medians only: a selection naming the model without its band is refused
    write_selection(tmp_path, {"runtime": "lightgbm"}, {})
    with pytest.raises(PredictionError, match="band"):
        Predictor.load(models_dir=tmp_path)


def test_prediction_latency(trained):
    lstm, _, _ = trained
    lat = measure_latency(Predictor(lstm), trials=200)
    assert lat["p50_ms"] < 10.0
    assert lat["p99_ms"] < 50.0  # the requirement (10 ms) is measured by `orchestrator eval predictor`


def test_query_output_size_is_not_a_prediction_input(table, trained):
    """A task's own output size is recorded after it ran: changing it (all else equal) must change neither the
    LSTM's inputs nor any method's prediction. The history's output sizes may be read (they finished earlier)."""
    from orchestrator.prediction.baselines import BASELINES
    from orchestrator.prediction.task_model import encode
    from orchestrator.prediction.task_training import encode_episodes, sample_episodes

    lstm, train_runs, _ = trained
    history = [Execution("mProject", 10.0 + 3 * i, 0.8 + 0.02 * i, 2e7 + 1e6 * i, 1e6 * (i + 1), 2e6 * (i + 1),
                         same_run=bool(i % 2)) for i in range(8)]
    small, large, unknown = (TaskFeatures("mProject", 3e6, out, "montage") for out in (1e3, 5e9, None))
    arrays = HistoryArrays.from_executions(history)
    batches = [encode([arrays], [Query.from_features(f)], lstm.cfg.max_history) for f in (small, large, unknown)]
    for b in batches[1:]:
        np.testing.assert_array_equal(b.query, batches[0].query)
        np.testing.assert_array_equal(b.steps, batches[0].steps)
    selections = [{t: "lstm" for t in ("runtime", "cpu", "memory")}] + [
        {t: name for t in ("runtime", "cpu", "memory")} for name in BASELINES]
    for selection in selections:
        predictor = Predictor(lstm, selection)
        preds = [predictor.predict(f, history) for f in (small, large, unknown)]
        assert preds[0] == preds[1] == preds[2], selection

    # The training/evaluation path (rows of a trace table) does not read the query row's output size either.
    rng = np.random.default_rng(0)
    episodes = sample_episodes(table, train_runs, lstm.cfg, rng)[:200]
    before = encode_episodes(table, episodes, lstm.cfg.max_history)
    queries = np.array([e.query for e in episodes])
    in_history = np.isin(queries, np.concatenate([e.history for e in episodes]))
    assert (~in_history).sum() > 50
    changed = copy.deepcopy(table)
    changed.log_output[queries[~in_history]] += 3.0
    after = encode_episodes(changed, episodes, lstm.cfg.max_history)
    np.testing.assert_array_equal(after.batch.query, before.batch.query)
    np.testing.assert_array_equal(after.batch.steps, before.batch.steps)


def test_an_unseen_familys_runtime_band_follows_its_runs_own_errors(trained):
    """For a family the models never trained on, the run's own errors (once there are enough) set the runtime
    band: large errors widen it; a family the models trained on, or too few errors, keep the calibrated band."""
    from orchestrator.prediction.calibration import MIN_RUN_ERRORS, ConformalBands

    lstm, _, _ = trained
    bands = ConformalBands(0.1, 0.9, {"0": {"*": (-0.5, 0.5)}}, unseen_scale={"0": 1.0})
    predictor = Predictor(lstm, {"runtime": "category-median-32", "cpu": "lstm", "memory": "category-mean"},
                          bands={"category-median-32": bands})
    history = [Execution("mProject", 10.0 + i, 0.9, 2e7, 1e6, None) for i in range(8)]
    wide = [-3.0, 3.0] * (MIN_RUN_ERRORS // 2)
    assert not predictor.trained_on("a-new-family") and predictor.trained_on("montage")

    def band(family, errors):
        p = predictor.predict(TaskFeatures("mProject", 1e6, None, family), history, run_errors=errors).runtime
        return p.low, p.median, p.high

    plain = band("a-new-family", None)
    widened = band("a-new-family", wide)
    assert widened[1] == plain[1] and widened[0] < plain[0] and widened[2] > plain[2]
    assert band("a-new-family", wide[:MIN_RUN_ERRORS - 1]) == plain  # too few errors yet
    assert band("montage", wide) == band("montage", None)  # a family the models trained on
    # the error measured for a finished task is on the calibration's scale: log ratio / the history's spread
    err = predictor.runtime_error(TaskFeatures("mProject", 1e6, None, "a-new-family"), history, "a-new-family",
                                  actual=2 * plain[1])
    spread = np.sqrt(np.log([10.0 + i for i in range(8)]).var() + 0.1**2)
    assert err == pytest.approx(np.log(2) / spread)

"""`orchestrator eval forecaster|predictor` and `orchestrator predict tasks` through the real command line, on the
bundled series and traces: several series after one flag, the runtime's selection left alone unless asked, and
task predictions from the bundled history of the workflow's family: only the runs executed before it, and
`predict capacity` naming the forecast it follows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator import resources
from orchestrator.cli import app
from orchestrator.loaders import default_trace_dir, load_traces
from orchestrator.prediction.features import executed_at

RUN = "montage-chameleon-2mass-005d-001"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def flat(text: str) -> str:
    """Output with rich's line wrapping undone (words joined by single spaces)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def two_series() -> list[str]:
    paths = sorted(resources.series_dir().glob("*.csv"))[:2]
    assert len(paths) == 2
    return [str(p) for p in paths]


@pytest.mark.parametrize("form", ["one-flag", "repeated-flag", "positional"])
def test_eval_forecaster_takes_several_series(runner, tmp_path, two_series, form):
    a, b = two_series
    given = {"one-flag": ["--series", a, b], "repeated-flag": ["--series", a, "--series", b],
             "positional": [a, b]}[form]
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "forecaster", *given, "--epochs", "1", "--no-held-out-series",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    scored = set(pd.read_csv(out / "forecaster_eval.csv")["series"])
    assert {Path(a).stem, Path(b).stem} <= scored


def test_eval_forecaster_missing_series_is_named(runner, tmp_path, two_series):
    missing = tmp_path / "nope.csv"
    for args in (["--series", two_series[0], str(missing)], ["--series", str(missing)]):
        result = runner.invoke(app, ["eval", "forecaster", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code != 0
        assert "nope.csv" in flat(result.output) and "does not exist" in flat(result.output)
        assert not (tmp_path / "out").exists()


@pytest.fixture
def small_eval(tmp_path):
    """Four bundled montage runs, and a config whose models_dir is a copy of the predictor's selection."""
    traces = tmp_path / "traces"
    traces.mkdir()
    for p in sorted((default_trace_dir() / "wfcommons" / "montage").glob("*2mass*.json.gz"))[:4]:
        shutil.copy(p, traces)
    models = tmp_path / "models" / "predictor"
    models.mkdir(parents=True)
    shutil.copy(resources.root() / "models" / "predictor" / "selection.json", models / "selection.json")
    config = tmp_path / "prediction.yaml"
    config.write_text(f"models_dir: {tmp_path / 'models'}\n")
    return traces, models / "selection.json", config


def _eval_predictor(runner, traces, config, out, *extra):
    return runner.invoke(app, ["eval", "predictor", "--traces", str(traces), "--config", str(config),
                               "--epochs", "1", "--no-lofo", "--no-rightsizing", "--out", str(out), *extra])


def test_eval_predictor_leaves_selection_alone_by_default(runner, tmp_path, small_eval):
    traces, selection, config = small_eval
    bundled = resources.root() / "models" / "predictor" / "selection.json"
    before, bundled_before = selection.read_bytes(), bundled.read_bytes()
    out = tmp_path / "out"
    result = _eval_predictor(runner, traces, config, out)
    assert result.exit_code == 0, result.output
    assert selection.read_bytes() == before
    assert bundled.read_bytes() == bundled_before
    text = flat(result.output)
    assert f"selection NOT written to {selection}" in text and "--write-selection" in text
    written = pd.read_json(out / "selection.json", typ="series")["selection"]
    assert set(written) == {"runtime", "cpu", "memory"}
    assert "would be: " + ", ".join(f"{t} {m}" for t, m in written.items()) in text


def test_eval_predictor_write_selection(runner, tmp_path, small_eval):
    traces, selection, config = small_eval
    before = selection.read_bytes()
    result = _eval_predictor(runner, traces, config, tmp_path / "out", "--write-selection")
    assert result.exit_code == 0, result.output
    assert selection.read_bytes() != before  # a new "written" time at least
    assert pd.read_json(selection, typ="series")["selection"].keys() == {"runtime", "cpu", "memory"}
    assert not (tmp_path / "out" / "selection.json").exists()


def _own_and_earlier(name: str) -> tuple[pd.Series, pd.Series, list[str]]:
    """Executions per category of the run `name`, and of the other bundled runs of its family executed before it
    (their recorded runtime-0 executions aside: recording failures), and the runs executed at or after it."""
    runs = [w for w in load_traces(default_trace_dir()) if w.family == "montage"]
    when = {w.name: executed_at(w) for w in runs}
    count = lambda ws: pd.Series([t.category for w in ws for t in w.tasks  # noqa: E731
                                  if t.observed is not None and t.observed.runtime > 0]).value_counts()
    earlier = [w for w in runs if when[w.name] < when[name]]
    later = sorted(w.name for w in runs if when[w.name] >= when[name] and w.name != name)
    return count([w for w in runs if w.name == name]), count(earlier), later


@pytest.mark.parametrize("where", ["bundled", "copy"])
def test_predict_tasks_default_history_is_the_family_runs_executed_before(runner, tmp_path, where):
    workflow = default_trace_dir() / "wfcommons" / "montage" / f"{RUN}.json.gz"
    if where == "copy":  # the same run outside the bundled folder: still recognised by its name
        workflow = Path(shutil.copy(workflow, tmp_path / workflow.name))
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "tasks", str(workflow), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    own, earlier, later = _own_and_earlier(RUN)
    n_montage = len([w for w in load_traces(default_trace_dir()) if w.family == "montage"])
    assert later and len(later) < n_montage - 1  # the bundled run has runs after it, and before it
    assert (f"history: {n_montage - 1 - len(later)} runs of montage (bundled traces) executed before this run"
            in text)
    assert f"left out: {RUN} (the run predicted); {len(later)} run" in text and all(n in text for n in later)
    assert "runtime 0 recorded" in text  # 2mass-02d-001's recording failures, left out
    assert "source" in result.output
    frame = pd.read_csv(out)
    assert frame["source"].str.startswith("history: ").all()
    assert frame["source"].str.contains("montage (bundled traces)", regex=False).all()
    # different categories, different medians (the prior would give one value for all)
    p50 = frame.groupby("category")["runtime_p50"].median()
    assert p50.nunique() == len(p50) > 3
    # the history holds the earlier runs' executions, not the run's own nor later runs': a category with few
    # executions per run
    small = [c for c in own.index if earlier[c] < 256]  # below the History's per-category cap
    assert small
    for c in small:
        assert set(frame.loc[frame["category"] == c, "history_size"]) == {earlier[c]}, c


def test_predict_tasks_without_executed_at_uses_every_other_run_and_says_so(runner, tmp_path):
    import gzip
    import json

    data = json.loads(gzip.decompress((default_trace_dir() / "wfcommons" / "montage" / f"{RUN}.json.gz").read_bytes()))
    del data["workflow"]["executedAt"]
    data.pop("createdAt", None)
    workflow = tmp_path / f"{RUN}.json"
    workflow.write_text(json.dumps(data))
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "tasks", str(workflow), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    n_montage = len([w for w in load_traces(default_trace_dir()) if w.family == "montage"])
    assert f"history: {n_montage - 1} runs of montage (bundled traces), without {RUN} (the run predicted)" in text
    assert f"note: {workflow.name} records no executedAt" in text and "including any executed after it" in text


def test_predict_tasks_history_folder_leaves_out_later_runs(runner, tmp_path):
    """--history DIR follows the same rule: a run of the folder executed after the predicted one is left out."""
    own, earlier, later = _own_and_earlier(RUN)
    folder = tmp_path / "hist"
    folder.mkdir()
    montage = default_trace_dir() / "wfcommons" / "montage"
    for name in [later[0], "montage-chameleon-dss-05d-001"]:
        shutil.copy(montage / f"{name}.json.gz", folder)
    result = runner.invoke(app, ["predict", "tasks", str(montage / f"{RUN}.json.gz"), "--history", str(folder)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert f"history: 1 runs of --history {folder} executed before this run" in text
    assert f"1 run executed at or after it ({later[0]})" in text


def test_predict_tasks_no_history_is_the_prior(runner, tmp_path):
    workflow = default_trace_dir() / "wfcommons" / "montage" / f"{RUN}.json.gz"
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "tasks", str(workflow), "--no-history", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "history: none (--no-history)" in flat(result.output)
    frame = pd.read_csv(out)
    assert (frame["source"] == "prior (--no-history)").all()
    assert (frame["runtime_method"] == "prior").all() and (frame["history_size"] == 0).all()
    assert frame["runtime_p50"].nunique() == 1

    both = runner.invoke(app, ["predict", "tasks", str(workflow), "--no-history", "--history", str(tmp_path)])
    assert both.exit_code != 0 and "--no-history" in flat(both.output)


def test_predict_capacity_says_which_forecast_it_follows(runner, tmp_path):
    """`predict capacity` plans from online-best: it names the method that erred least over the series' last day
    and writes it into the autoscaler hint."""
    import yaml

    series = resources.series_dir() / "ec2_cpu_utilization_53ea38.csv"
    out = tmp_path / "hint.yaml"
    result = runner.invoke(app, ["predict", "capacity", str(series), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "forecast: lstm (least mean absolute error over the last day" in text and "exp-smoothing" in text
    assert yaml.safe_load(out.read_text())["forecast_method"] == "lstm"

"""The optimizer's evaluation: ground truth is cached and reproducible, metrics mean what they say, and on a tight
cluster the Monte Carlo baselines see the contention that the critical path on means ignores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.optimization.evaluation import EvalConfig, _precision_at_k, _spearman, ground_truth, run_evaluation
from orchestrator.loaders import load_traces


def test_precision_at_k_counts_ties_in_the_truth_and_spearman_of_constants_is_undefined():
    true = np.array([5.0, 4.0, 4.0, 1.0, 0.0, 0.0, 0.0])
    assert _precision_at_k(np.array([0, 0, 0, 0, 9, 8, 7.0]), true, k=3) == 0.0
    assert _precision_at_k(np.array([9, 1, 8, 7, 0, 0, 0.0]), true, k=3) == pytest.approx(2 / 3)
    assert _precision_at_k(np.array([9, 8, 7, 0, 0, 0, 0.0]), true, k=3) == 1.0
    assert np.isnan(_spearman(np.ones(5), np.arange(5.0)))


def test_ground_truth_is_cached_and_reproducible(tmp_path, trace_dir):
    wf = min(load_traces(trace_dir / "wfcommons" / "montage"), key=lambda w: len(w.tasks))
    cfg = EvalConfig(out=tmp_path, gt_samples=400, gain_samples=40)
    a, cluster, td = ground_truth(wf, cfg, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    b, _, _ = ground_truth(wf, cfg, tmp_path)  # from the cache
    c, _, _ = ground_truth(wf, cfg, None)  # computed again, same seed
    assert a.mean == b.mean == pytest.approx(c.mean)
    assert np.allclose(a.gains, c.gains)
    assert a.p50 <= a.p90 and a.gains.shape == (len(wf.tasks),)


def test_monte_carlo_baseline_sees_contention_that_the_critical_path_ignores(tmp_path):
    cfg = EvalConfig(out=tmp_path, per_family=1, max_tasks=120, gt_samples=600, gain_samples=30, unseen=(),
                     baseline_samples=200)
    res = run_evaluation(cfg, progress=lambda m: None, learned=lambda family: None)
    by = {r["method"]: r for r in res.summary}
    assert by["critical path on means"]["workflows"] == 4  # one per bundled family
    # the tight cluster makes tasks wait: infinite-resource critical path is far below the truth
    assert by["monte carlo 200"]["mean_ape"] < 0.05 < by["critical path on means"]["mean_ape"]
    assert by["monte carlo 200"]["spearman"] > by["critical path on means"]["spearman"]
    assert {r["shape"] for r in res.rows} <= {"serial", "one-dominant-path", "several-near-critical"}


def test_eval_optimizer_command_writes_its_tables(tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "optimizer", "--out", str(out), "--per-family", "1", "--max-tasks",
                                      "70", "--samples", "200", "--gain-samples", "20", "--unseen", "",
                                      "--no-learned"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "optimizer_eval.json").read_text())["summary"]
    assert {r["method"] for r in summary} >= {"critical path on means", "monte carlo 1000"}
    assert (out / "optimizer_eval.md").read_text().startswith("# Optimizer evaluation")

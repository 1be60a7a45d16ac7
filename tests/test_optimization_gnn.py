"""The optimizer's graph featurisation and GNN: shapes and edge symmetry, nothing known only after a task ran, status
and scale handled, the dataset split by workflow, the shipped model predicts, training lowers the loss, and
`orchestrator train optimizer` runs end to end through Ray Tune on a tiny dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from orchestrator.dag import dag_arrays
from orchestrator.loaders import load_workflow
from orchestrator.optimization.dataset import DatasetSpec, build_dataset, split_by_workflow, training_workflows
from orchestrator.optimization.durations import AnalysisInputError, durations_for
from orchestrator.optimization.gnn import OptimizerModel, train_model
from orchestrator.optimization.graph import (GLOBAL_FEATURES, NODE_FEATURES, featurize, featurize_workflow,
                                             remaining_mean)
from orchestrator.optimization.groundtruth import tight_cluster
from orchestrator.prediction.checkpoints import list_versions
from orchestrator.sim.cluster import Cluster

SMALL = ["montage/montage-chameleon-2mass-005d-001", "epigenomics/epigenomics-chameleon-hep-1seq-100k-001",
         "montage/montage-chameleon-dss-05d-001", "epigenomics/epigenomics-chameleon-hep-1seq-50k-001"]


@pytest.fixture(scope="module")
def montage(trace_dir):
    wf = load_workflow(trace_dir / "wfcommons" / "montage" / "montage-chameleon-2mass-01d-001.json.gz")
    dag = dag_arrays(wf)
    td = durations_for(wf)
    return wf, dag, td, tight_cluster(dag, td.mean)


@pytest.fixture(scope="module")
def tiny_examples(trace_dir, tmp_path_factory):
    traces = tmp_path_factory.mktemp("traces")
    for name in SMALL:
        shutil.copy(trace_dir / "wfcommons" / f"{name}.json.gz", traces)
    spec = DatasetSpec(traces=str(traces), synthetic_per_family=0, shares=(0.5, 1.0), samples=200, gain_samples=24,
                       min_gain_samples=8, mid_run=1)
    return build_dataset(spec, tmp_path_factory.mktemp("cache"), progress=lambda m: None), traces


def test_shapes_and_both_edge_directions(montage):
    wf, dag, td, cluster = montage
    data = featurize_workflow(wf, dag, td, cluster)
    m = len(dag.src)
    assert data.x.shape == (dag.n, len(NODE_FEATURES)) and data.u.shape == (1, len(GLOBAL_FEATURES))
    assert torch.isfinite(data.x).all() and torch.isfinite(data.u).all()
    assert data.edge_index.shape == (2, 2 * m) and data.edge_attr.shape == (2 * m, 2)
    forward = {tuple(e) for e, a in zip(data.edge_index.T.tolist(), data.edge_attr.tolist()) if a == [1.0, 0.0]}
    backward = {tuple(e) for e, a in zip(data.edge_index.T.tolist(), data.edge_attr.tolist()) if a == [0.0, 1.0]}
    assert forward == set(zip(dag.src.tolist(), dag.dst.tolist()))
    assert backward == {(b, a) for a, b in forward}
    assert float(data.time_scale[0]) > 0


def test_features_ignore_actual_runtime_and_output_size(montage):
    """What is known only after a task ran (its runtime, its output) never changes a feature: the featurisation
    reads the predicted durations, not the trace's recorded ones."""
    wf, _, td, cluster = montage
    base = featurize_workflow(wf, dag_arrays(wf), td, cluster)
    tasks = list(wf.tasks)
    for i in (0, len(tasks) // 2, len(tasks) - 1):
        t = tasks[i]
        tasks[i] = t.model_copy(update={"duration": (t.duration or 1.0) * 17 + 3, "output_bytes": 10**12,
                                        "observed": t.observed.model_copy(update={"runtime": 12345.0})})
    changed = wf.model_copy(update={"tasks": tasks})
    other = featurize_workflow(changed, dag_arrays(changed), td, cluster)
    assert torch.equal(base.x, other.x) and torch.equal(base.u, other.u)
    # while the prediction it is given does change it
    bumped = featurize_workflow(wf, dag_arrays(wf), td.scaled(np.where(np.arange(td.n) == 0, 3.0, 1.0)), cluster)
    assert not torch.equal(base.x, bumped.x)


def test_features_do_not_depend_on_the_unit_of_time(montage):
    wf, dag, td, cluster = montage
    a = featurize_workflow(wf, dag, td, cluster)
    b = featurize_workflow(wf, dag, td.scaled(60.0), cluster)
    assert torch.allclose(a.x, b.x, atol=1e-5) and torch.allclose(a.u, b.u, atol=1e-5)
    assert float(b.time_scale[0]) == pytest.approx(60 * float(a.time_scale[0]))


def test_status_and_elapsed_change_the_features(montage):
    wf, dag, td, cluster = montage
    before = featurize(dag, td, cluster)
    col = {name: i for i, name in enumerate(NODE_FEATURES)}
    sources = np.flatnonzero(dag.in_degree == 0)
    assert before.x[sources, col["ready"]].eq(1).all() and before.x[:, col["done"]].eq(0).all()
    status = np.zeros(dag.n, dtype=np.int64)
    status[sources] = 3  # done
    kids = np.unique(dag.children[dag.children_ptr[sources[0]]:dag.children_ptr[sources[0] + 1]])
    status[kids] = 2  # running
    mid = featurize(dag, td, cluster, status=status, elapsed=np.full(dag.n, 1.0))
    assert mid.x[sources, col["done"]].eq(1).all() and mid.x[kids, col["running"]].eq(1).all()
    assert mid.x[sources, col["mean"]].eq(0).all()  # a done task takes no more time
    assert not torch.equal(before.u, mid.u) and float(mid.time_scale[0]) < float(before.time_scale[0])
    later = featurize(dag, td, cluster, status=status, elapsed=np.full(dag.n, 5.0))
    assert not torch.equal(mid.x[kids], later.x[kids])
    # statuses by name are the same as by code
    named = featurize(dag, td, cluster, status=[["pending", "ready", "running", "succeeded"][s] for s in status],
                      elapsed=np.full(dag.n, 1.0))
    assert torch.equal(named.x, mid.x)
    with pytest.raises(AnalysisInputError, match="unknown task status"):
        featurize(dag, td, cluster, status=["sleeping"] * dag.n)


def test_remaining_mean_of_a_running_task():
    from orchestrator.optimization.durations import TaskDurations

    d = TaskDurations(np.array([100.0, 100.0, 100.0]), np.array([0.5, 0.5, 0.0]))
    rest = remaining_mean(d, np.array([0.0, 50.0, 50.0]))
    assert rest[0] == pytest.approx(100.0)
    assert 50.0 < rest[1] < 100.0  # a log-normal task that has run 50 s expects more than mean - 50 s
    assert rest[2] == pytest.approx(50.0)  # no spread: exactly the rest


def test_a_task_that_fits_nowhere_is_refused(montage):
    wf, dag, td, _ = montage
    small = Cluster.homogeneous(1, cpus=0.5, memory_gib=64)
    with pytest.raises(AnalysisInputError, match="fit on no node"):
        featurize(dag, td, small)


def test_dataset_is_labelled_and_split_by_workflow(tiny_examples):
    examples, _ = tiny_examples
    assert len(examples) >= len(SMALL)
    for d in examples:
        assert d.y.shape == (1, 3) and torch.isfinite(d.y).all()
        assert d.y[0, 2] >= d.y[0, 1]  # P90 >= P50
        assert d.gain.shape == (d.num_nodes,)
        assert d.gain_mask.all() or d.mid_run  # small graphs: every task labelled (every task not done)
    train, val = split_by_workflow(examples, 0.5, seed=1)
    assert {d.workflow for d in train}.isdisjoint({d.workflow for d in val}) and val and train
    assert len(train) + len(val) == len(examples)


def test_a_cut_in_the_middle_of_a_run_is_consistent(montage):
    """Done tasks have done parents, running and ready ones too; labels are for what remains, from now."""
    from orchestrator.optimization.dataset import example, label_mid_run
    from orchestrator.optimization.graph import DONE, PENDING, READY, RUNNING

    wf, dag, td, _ = montage
    spec = DatasetSpec(samples=200, gain_samples=16, min_gain_samples=8)
    labels = label_mid_run(wf, 0.5, spec, seed=3)
    status = labels.status
    parents_done = np.ones(dag.n, dtype=bool)
    np.logical_and.at(parents_done, dag.dst, status[dag.src] == DONE)
    assert np.all(parents_done[np.isin(status, (DONE, RUNNING, READY))])
    assert not np.any(parents_done[status == PENDING])
    assert np.all(labels.elapsed[status != RUNNING] == 0) and np.all(labels.elapsed[status == RUNNING] >= 0)
    assert not labels.gain_mask[status == DONE].any() and labels.gain_mask[status != DONE].any()
    data = example(labels)
    assert data.mid_run and torch.isfinite(data.y).all() and data.y[0, 2] >= data.y[0, 1]


def test_unseen_families_never_enter_training():
    with pytest.raises(AnalysisInputError, match="kept out of training"):
        training_workflows(DatasetSpec(families=("montage", "blast")), progress=lambda m: None)


def test_training_lowers_the_loss(tiny_examples):
    examples, _ = tiny_examples
    losses = []
    train_model(examples, {"hidden": 16, "layers": 2, "lr": 0.005, "batch_size": 4}, 12, seed=0,
                report=lambda epoch, metrics, model: losses.append(metrics["train_loss"]), threads=1)
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])


def test_shipped_model_predicts(montage):
    wf, dag, td, cluster = montage
    model = OptimizerModel.load()
    assert model.version is not None and model.version.startswith("v")
    pred = model.predict(dag, td, cluster)
    assert np.isfinite([pred.mean, pred.p50, pred.p90]).all() and 0 < pred.p50 <= pred.p90 and pred.mean > 0
    assert pred.gain.shape == (dag.n,) and np.isfinite(pred.gain).all()
    assert pred.seconds > 0
    # a workflow with everything done but one running task: gains of done tasks are zero
    status = np.full(dag.n, 3)
    status[-1] = 2
    late = model.predict(dag, td, cluster, status=status, elapsed=np.zeros(dag.n))
    assert np.all(late.gain[:-1] == 0) and late.mean > 0


def test_train_optimizer_through_ray_tune(ray_cluster, tiny_examples, tmp_path, cli_main):
    """`orchestrator train optimizer` on the session's Ray: a tiny search on a tiny dataset saves a loadable
    version with its validation figures."""
    _, traces = tiny_examples
    config = tmp_path / "optimizer.yaml"
    config.write_text(json.dumps({
        "dataset": {"synthetic_per_family": 0, "shares": [0.5], "samples": 200, "gain_samples": 16,
                    "min_gain_samples": 8, "cache_dir": str(tmp_path / "cache")},
        "model": {"hidden": 16, "layers": 2, "batch_size": 2},
        "train": {"validation_fraction": 0.5},
        "tune": {"num_samples": 2, "max_epochs": 2, "grace_period": 1, "max_concurrent": 2,
                 "search_space": {"conv": {"choice": ["sage", "gine"]}}},
    }))
    models = tmp_path / "models"
    code, out, err = cli_main("train", "optimizer", "--config", config, "--traces", traces, "--models-dir", models)
    assert code == 0, out + err
    assert list_versions(models) == ["v1"]
    meta = json.loads((models / "v1" / "metadata.json").read_text())
    assert len(meta["trials"]) == 2 and meta["validation"]["mape_mean"] >= 0
    assert set(meta["data"]["families"]) == {"montage", "epigenomics"}
    model = OptimizerModel.load(models)
    assert model.version == "v1" and model.config["conv"] in ("sage", "gine")

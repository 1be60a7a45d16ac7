"""Forecaster, capacity planner, cost optimizer and right-sizing: properties checked on real data and in the
simulator."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.loaders import load_workflow
from orchestrator.prediction.baselines import CategoryMean, Prior
from orchestrator.prediction.capacity import erlang_c, plan_capacity, servers_for_wait
from orchestrator.prediction.config import ROOT, CapacityConfig, RightSizingConfig, load_config
from orchestrator.prediction.cost import cheapest_cluster
from orchestrator.prediction.features import build_table
from orchestrator.prediction.forecast_evaluation import score_series
from orchestrator.prediction.forecaster import (
    Forecast,
    Forecaster,
    Normaliser,
    fit_forecaster,
    min_history,
    naive_forecast,
    rolling_mean_forecast,
    seasonal_naive_forecast,
    smoothing_forecast,
)
from orchestrator.prediction.node_types import NodeType, load_node_types
from orchestrator.prediction.rightsizing import evaluate_rightsizing
from orchestrator.prediction.series import load_series
from orchestrator.prediction.task_evaluation import time_split, with_prior
from orchestrator.prediction.task_training import split_validation_runs
from orchestrator.scheduling import get_policy
from orchestrator.sim import Cluster, TraceEntry, simulate, single_workload

SERIES = sorted((ROOT / "data" / "series").glob("*.csv"))


# ---- forecaster -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def series():
    return {p.stem: load_series(p) for p in SERIES}


@pytest.fixture(scope="module")
def tiny_forecaster(series):
    cfg = load_config(overrides={"forecaster.epochs": 4, "forecaster.hidden_size": 16}).forecaster
    forecaster, _ = fit_forecaster(list(series.values()), cfg)
    return forecaster


def test_forecasts_of_the_later_part_read_no_point_at_or_after_their_origin(series, tiny_forecaster):
    """The forecasts `score_series` makes (the training part's normaliser, one per origin of the later part): each
    is horizon x quantiles, quantiles in order, non-negative, dated at the steps after its origin; replacing every
    point from the origin on changes none of them (nor the naive and seasonal-naive baselines), while changing the
    window just before the origin does change the forecast. Whether the LSTM beats the baselines is a benchmark
    figure (`orchestrator predict evaluate`), not asserted here."""
    cfg = tiny_forecaster.cfg
    step = pd.Timedelta(minutes=cfg.step_minutes)
    for name, s in series.items():
        x = s.to_numpy(dtype=np.float64)
        n_train = int(len(x) * cfg.train_fraction)
        norm = Normaliser.fit(x[:n_train])
        origins = np.arange(max(n_train, min_history(cfg)), len(x) - cfg.horizon + 1, 6)
        rows = score_series(tiny_forecaster, s, name, "later-part", cfg, stride=6)
        assert [r["method"] for r in rows] == ["lstm", "naive", "rolling-mean-1h", "exp-smoothing", "seasonal-naive",
                                               "lstm-conformal", "online-best"]
        assert all(r["forecasts"] == len(origins) and np.isfinite(r["mase"]) for r in rows)
        forecasts = tiny_forecaster.forecast_at(s, origins, norm)
        for o, fc in zip(origins, forecasts):
            assert fc.values.shape == (cfg.horizon, len(cfg.quantiles)) and fc.levels == tuple(cfg.quantiles)
            assert (np.diff(fc.values, axis=1) >= 0).all() and (fc.values >= 0).all()
            assert list(fc.index) == [s.index[o - 1] + step * (h + 1) for h in range(cfg.horizon)]
        for k in np.linspace(0, len(origins) - 1, 5).astype(int):
            o = int(origins[k])
            alone = tiny_forecaster.forecast_at(s, [o], norm)[0].values
            np.testing.assert_allclose(alone, forecasts[k].values, rtol=1e-5, atol=1e-6)  # batching aside
            future = s.copy()
            future.iloc[o:] = future.iloc[o:] * 10 + 100
            np.testing.assert_array_equal(tiny_forecaster.forecast_at(future, [o], norm)[0].values, alone)
            y = future.to_numpy(dtype=np.float64)
            for baseline in (lambda v: naive_forecast(v, np.array([o]), cfg.horizon),
                             lambda v: rolling_mean_forecast(v, np.array([o]), cfg.horizon, 12),
                             lambda v: smoothing_forecast(v, np.array([o]), cfg.horizon, 0.3),
                             lambda v: seasonal_naive_forecast(v, np.array([o]), cfg.horizon, cfg.season)):
                np.testing.assert_array_equal(baseline(y), baseline(x))
            past = s.copy()
            past.iloc[o - cfg.window:o] = past.iloc[o - cfg.window:o] * 10 + 100
            assert not np.allclose(tiny_forecaster.forecast_at(past, [o], norm)[0].values, alone), \
                f"{name}: the forecast at {o} ignores the window before it"


def test_forecast_at_without_a_normaliser_reads_no_point_after_its_origin(series, tiny_forecaster):
    s = next(iter(series.values()))
    o = min_history(tiny_forecaster.cfg) + 100
    future = s.copy()
    future.iloc[o:] = future.iloc[o:] * 10 + 100
    np.testing.assert_array_equal(tiny_forecaster.forecast_at(future, [o])[0].values,
                                  tiny_forecaster.forecast_at(s, [o])[0].values)


def test_forecast_shape_order_and_time_index(series, tiny_forecaster):
    s = next(iter(series.values()))
    fc = tiny_forecaster.forecast(s)
    assert fc.values.shape == (12, 3)
    assert (np.diff(fc.values, axis=1) >= 0).all() and (fc.values >= 0).all()
    assert fc.index[0] == s.index[-1] + pd.Timedelta(minutes=5) and len(fc.index) == 12


def test_forecaster_checkpoint_round_trip(tmp_path, series, tiny_forecaster):
    path = tiny_forecaster.save(tmp_path, {"kind": "demand-forecaster"})
    loaded, meta = Forecaster.load(tmp_path)
    assert meta["version"] == path.name == "v1"
    s = next(iter(series.values()))
    np.testing.assert_allclose(loaded.forecast(s).values, tiny_forecaster.forecast(s).values, rtol=1e-5)
    assert tiny_forecaster.save(tmp_path, {}).name == "v2"


# ---- capacity planner -------------------------------------------------------------------------------------------
def test_erlang_c_known_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0


def test_servers_for_wait_is_the_smallest_meeting_the_objective():
    load, service, wait = 7.3, 60.0, 10.0
    c = servers_for_wait(load, service, wait)
    p = lambda k: erlang_c(k, load) * math.exp(-(k - load) * wait / service)  # noqa: E731
    assert p(c) <= 0.05 < p(c - 1)


def _forecast(values) -> Forecast:
    index = pd.date_range("2024-01-01", periods=len(values), freq="5min")
    v = np.asarray(values, dtype=float)
    return Forecast(index, (0.1, 0.5, 0.9), np.stack([0.8 * v, v, 1.2 * v], axis=1))


@pytest.mark.parametrize("objective", [{"target_utilisation": 0.6}, {"p95_wait_seconds": 5.0}])
def test_capacity_plan_covers_demand_and_is_the_cheapest_type(objective):
    cfg = CapacityConfig(cores_per_unit=1.0, **objective)
    fc = _forecast([10, 12, 30, 45, 44, 20, 8, 8, 9, 10, 60, 12])
    types = load_node_types()
    plan = plan_capacity(fc, types, cfg)
    demand = fc.quantile(cfg.quantile)
    for step, d in zip(plan.steps, demand):
        assert step.nodes * plan.node_type.cpus >= step.needed_cores - 1e-9
        assert step.needed_cores >= d  # never plan below the forecast demand
    assert plan.cost == pytest.approx(min(plan.alternatives.values()))
    hint = plan.autoscaler_hint()["available_node_types"][plan.node_type.name]
    assert hint["min_workers"] == plan.steps[0].nodes <= hint["max_workers"] == max(s.nodes for s in plan.steps)
    assert plan.schedule()[0]["nodes"] == plan.steps[0].nodes


# ---- cost optimizer ----------------------------------------------------------------------------------------------
def test_cheapest_cluster_meets_the_deadline_and_nothing_cheaper_does(trace_dir):
    wf = load_workflow(trace_dir / "wfcommons/montage/montage-chameleon-2mass-01d-001.json.gz")
    types = [NodeType(name="small", cpus=2, memory_gib=8, price_per_hour=0.1),
             NodeType(name="big", cpus=8, memory_gib=32, price_per_hour=0.45),
             NodeType(name="tiny-mem", cpus=4, memory_gib=0.05, price_per_hour=0.01)]  # tasks do not fit
    entry = TraceEntry.from_workflow(wf)
    one = simulate(single_workload(entry, noise=0.0), Cluster.homogeneous(1, 2, 8), get_policy("srpt-cp")).makespan
    deadline = 0.4 * one  # a single small node is too slow
    plan = cheapest_cluster(wf, types, deadline, "srpt-cp", max_nodes=8)
    best = plan.best
    assert best is not None and best.makespan <= deadline
    # re-check the choice independently in the simulator
    t = next(t for t in types if t.name == best.node_type)
    again = simulate(single_workload(entry, noise=0.0), Cluster.homogeneous(best.nodes, t.cpus, t.memory_gib),
                     get_policy("srpt-cp")).makespan
    assert again == pytest.approx(best.makespan) and again <= deadline
    assert not any(o.meets_deadline and o.cost < best.cost - 1e-12 for o in plan.options)
    assert any(o.node_type == "tiny-mem" and not o.meets_deadline and math.isinf(o.makespan) for o in plan.options)
    assert cheapest_cluster(wf, types, deadline=1.0, max_nodes=4).best is None  # below the critical path


# ---- right-sizing ------------------------------------------------------------------------------------------------
def test_right_sized_requests_cover_usage_and_reserve_less_memory(trace_dir):
    names = ["montage-chameleon-2mass-005d-001", "montage-chameleon-2mass-01d-001", "montage-chameleon-dss-075d-001",
             "montage-chameleon-2mass-015d-001", "montage-chameleon-2mass-02d-001"]
    workflows = [load_workflow(trace_dir / "wfcommons/montage" / f"{n}.json.gz") for n in names]
    table = build_table(workflows)
    train_runs, test_runs = time_split(table, 0.4)
    _, val_runs = split_validation_runs(table, train_runs, 0.4)
    q = (0.1, 0.5, 0.9)
    prior = Prior.fit(table, table.select_runs(train_runs), q)
    cm = with_prior(CategoryMean(q), prior)
    cfg = RightSizingConfig(cluster_nodes=2)
    rows = evaluate_rightsizing(workflows, table, train_runs, test_runs, {"category-mean": cm}, q, cfg, 32, val_runs)
    by = {r["requests"].split(":")[0]: r for r in rows}
    sized = by["right-sized"]
    assert sized["tasks"] == sum(len(w.tasks) for w in workflows if w.name in {table.runs[r] for r in test_runs})
    assert sized["under_cpu_pct"] <= 1.0 and sized["under_memory_pct"] <= 1.0
    assert by["category max (hindsight)"]["under_cpu_pct"] == 0 == by["category max (hindsight)"]["under_memory_pct"]
    assert sized["reserved_mem_gib_s_recorded"] < 0.8 * by["category max (hindsight)"]["reserved_mem_gib_s_recorded"]
    assert sized["reserved_cpu_s"] <= by["category max (online)"]["reserved_cpu_s"] + 1e-6  # capped at that max

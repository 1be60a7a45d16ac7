"""Tune and train the per-task LSTM with Ray Tune (ASHA early stopping over the search space in
configs/prediction.yaml), fit the gradient-boosted task model on the same runs, and save both as the next
version under models/predictor/.

Run: `orchestrator train predictor [--samples N --epochs N --address ray://...]`, or this file directly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from orchestrator.loaders import default_trace_dir, load_traces
from orchestrator.prediction.baselines import Prior
from orchestrator.prediction.config import load_config
from orchestrator.prediction.features import build_table
from orchestrator.prediction.predictor import LSTMTaskPredictor
from orchestrator.prediction.task_gbm import TaskGBM
from orchestrator.prediction.task_model import TaskHistoryLSTM
from orchestrator.prediction.task_training import (
    encode_episodes,
    sample_episodes,
    split_validation_runs,
    train_task_model,
)
from orchestrator.prediction.tuning import asha_search, report_epoch, search_space

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass
class Args:
    config: Path | None = None  # configs/prediction.yaml by default
    traces: Path = field(default_factory=default_trace_dir)
    samples: int | None = None  # overrides tune_predictor.num_samples
    epochs: int | None = None  # overrides tune_predictor.max_epochs
    address: str | None = None  # Ray cluster address; local Ray when None
    models_dir: Path | None = None  # where versions are written (default models/predictor)
    overrides: dict = field(default_factory=dict)  # dotted config overrides, e.g. {"task_model.episodes_per_group": 4}


def main(args: Args) -> Path:
    # ---- config -------------------------------------------------------------------------------------------
    overrides = dict(args.overrides)
    if args.samples is not None:
        overrides["tune_predictor.num_samples"] = args.samples
    if args.epochs is not None:
        overrides["tune_predictor.max_epochs"] = args.epochs
    cfg = load_config(args.config, overrides)
    tm, tc = cfg.task_model, cfg.tune_predictor
    np.random.seed(tm.seed)
    torch.manual_seed(tm.seed)

    # ---- data: every run; the latest runs of each family validate --------------------------------------------
    workflows = load_traces(args.traces)
    table = build_table(workflows)
    train_runs, val_runs = split_validation_runs(table, range(len(table.runs)), tm.validation_fraction)
    rng = np.random.default_rng(tm.seed)
    train_set = encode_episodes(table, sample_episodes(table, train_runs, tm, rng), tm.max_history)
    val_set = encode_episodes(table, sample_episodes(table, val_runs, tm, rng), tm.max_history) if val_runs else None
    prior = Prior.fit(table, quantiles=tm.quantiles)
    print(f"{len(table)} executions in {len(table.runs)} runs; {len(train_set)} training and "
          f"{len(val_set) if val_set else 0} validation episodes")

    # ---- model + loop, as a Tune trial ------------------------------------------------------------------------
    def trial(config: dict, train_set=None, val_set=None) -> None:
        torch.set_num_threads(1)
        trial_cfg = tm.model_copy(update={**config, "epochs": tc.max_epochs})

        def report(epoch: int, loss: float, model: TaskHistoryLSTM) -> None:
            report_epoch({"loss": loss, "epoch": epoch}, {"model": model.state_dict(), "config": trial_cfg.model_dump()})

        train_task_model(train_set, val_set, trial_cfg, report)

    state, trials = asha_search(trial, "predictor", tc, args.address, train_set=train_set, val_set=val_set)

    # ---- checkpoint ---------------------------------------------------------------------------------------------
    best_cfg = tm.model_copy(update=state["config"])
    model = TaskHistoryLSTM(best_cfg.hidden_size, best_cfg.num_layers, best_cfg.dropout, len(best_cfg.quantiles))
    model.load_state_dict(state["model"])
    memory_trained = bool(np.isfinite(train_set.targets[:, 2]).any())
    predictor = LSTMTaskPredictor(model, best_cfg, prior, memory_trained)
    # The gradient-boosted model beside it, on the same runs (it leaves the same latest runs out to validate).
    gbm = TaskGBM.fit(table, range(len(table.runs)), best_cfg, prior)
    print(f"gradient-boosted task model: {gbm.info}")
    directory = args.models_dir or cfg.models_path("predictor")
    path = predictor.save(directory, gbm=gbm, metadata={
        "kind": "task-predictor",
        "best_validation_loss": min(t["best_loss"] for t in trials if t["best_loss"] is not None),
        "best_config": {k: getattr(best_cfg, k) for k in search_space(tc)},
        "trials": trials,
        "data": {"traces": str(args.traces), "runs": len(table.runs), "executions": len(table),
                 "train_runs": len(train_runs), "validation_runs": len(val_runs),
                 "train_episodes": len(train_set), "validation_episodes": len(val_set) if val_set else 0},
        "tune": tc.model_dump(),
        "gbm": gbm.info,
    })
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main(Args(samples=int(sys.argv[1]) if len(sys.argv) > 1 else None))

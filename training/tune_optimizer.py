"""Tune and train the optimization engine's makespan GNN with Ray Tune (ASHA early stopping over the search space
in configs/optimizer.yaml), then save the best trial as the next version under models/optimizer/.

Trains on the training families only (1000genome, cycles, epigenomics, montage: real traces and synthetic
instances), validating on a split by workflow; the unseen families never enter.
Run: `orchestrator train optimizer [--samples N --epochs N --address ray://... --traces DIR]`, or this file.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from orchestrator.optimization.dataset import build_dataset, split_by_workflow
from orchestrator.optimization.gnn import ModelConfig, OptimizerModel, evaluate, load_config, train_model
from orchestrator.prediction.tuning import asha_search, report_epoch

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass
class Args:
    config: Path | None = None  # configs/optimizer.yaml by default
    traces: Path | None = None  # folder of WfCommons files (default: the bundled traces)
    samples: int | None = None  # overrides tune.num_samples
    epochs: int | None = None  # overrides tune.max_epochs
    address: str | None = None  # Ray cluster address; local Ray when None
    models_dir: Path | None = None  # where versions are written (default models/optimizer)
    cache_dir: Path | None = None  # where the labelled dataset is cached (default dataset.cache_dir)
    overrides: dict = field(default_factory=dict)  # dotted config overrides, e.g. {"dataset.synthetic_per_family": 2}


def main(args: Args) -> Path:
    # ---- config -------------------------------------------------------------------------------------------
    overrides = dict(args.overrides)
    if args.samples is not None:
        overrides["tune.num_samples"] = args.samples
    if args.epochs is not None:
        overrides["tune.max_epochs"] = args.epochs
    cfg = load_config(args.config, overrides)
    tc = cfg.tune
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)

    # ---- data: the training families, labelled by Monte Carlo (cached); a split by workflow validates ----------
    t0 = time.perf_counter()
    spec = cfg.dataset.spec(args.traces)
    examples = build_dataset(spec, args.cache_dir or cfg.dataset.cache_path())
    data_seconds = time.perf_counter() - t0
    train_set, val_set = split_by_workflow(examples, cfg.train.validation_fraction, cfg.train.seed)
    print(f"{len(examples)} graphs: {len(train_set)} training, {len(val_set)} validation "
          f"({len({d.workflow for d in val_set})} workflows held out); data ready in {data_seconds:.0f}s")

    # ---- model + loop, as a Tune trial --------------------------------------------------------------------------
    base = cfg.model.model_dump()

    def trial(config: dict, train_set=None, val_set=None) -> None:
        params = {**base, **config}

        def report(epoch: int, metrics: dict, model) -> None:
            report_epoch({**metrics, "loss": metrics["score"]},
                         {"model": model.state_dict(), "config": params, "epoch": epoch})

        train_model(train_set, params, tc.max_epochs, cfg.train.seed, validation=val_set, report=report, threads=1)

    t1 = time.perf_counter()
    state, trials = asha_search(trial, "optimizer", tc, args.address, train_set=train_set, val_set=val_set)
    tune_seconds = time.perf_counter() - t1

    # ---- checkpoint ---------------------------------------------------------------------------------------------
    params = state["config"]
    model = OptimizerModel.load_state(state["model"], params)
    metrics = evaluate(model.module, val_set) if val_set else {}
    best_epoch = int(state.get("epoch") or tc.max_epochs)
    refit_seconds = 0.0
    if cfg.train.refit and val_set:  # the shipped model learns from every workflow of the training families
        t2 = time.perf_counter()
        model = OptimizerModel.from_module(
            train_model(examples, params, best_epoch, cfg.train.seed, threads=cfg.train.threads), params)
        refit_seconds = time.perf_counter() - t2
    directory = args.models_dir or cfg.models_path()
    path = model.save(directory, {
        "validation": metrics,
        "best_config": {k: params[k] for k in tc.search_space},
        "config": {k: params[k] for k in ModelConfig.model_fields},
        "trials": trials,
        "data": {"spec": {k: str(v) if isinstance(v, Path) else v for k, v in vars(spec).items()},
                 "graphs": len(examples), "train_graphs": len(train_set), "validation_graphs": len(val_set),
                 "validation_workflows": sorted({d.workflow for d in val_set}),
                 "families": sorted({d.family for d in examples})},
        "seconds": {"data": data_seconds, "tune": tune_seconds, "refit": refit_seconds},
        "refit": {"on": "all graphs" if refit_seconds else "training split only", "epochs": best_epoch},
        "tune": tc.model_dump(),
    })
    print(f"validation (best trial, held-out workflows): {metrics}")
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main(Args(samples=int(sys.argv[1]) if len(sys.argv) > 1 else None))

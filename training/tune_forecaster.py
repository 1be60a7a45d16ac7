"""Tune and train the demand LSTM with Ray Tune (ASHA over the search space in configs/prediction.yaml) on the
earlier part of each usage series, then save the best trial as the next version under models/forecaster/.

Run: `orchestrator train forecaster [--series a.csv ... --samples N --epochs N --address ...]`, or this file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from orchestrator import resources
from orchestrator.prediction.config import load_config
from orchestrator.prediction.forecast_model import DemandLSTM
from orchestrator.prediction.forecaster import Forecaster, train_forecaster, training_sets
from orchestrator.prediction.series import load_series
from orchestrator.prediction.tuning import asha_search, report_epoch, search_space

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass
class Args:
    config: Path | None = None
    series: list[Path] = field(default_factory=lambda: sorted(resources.series_dir().glob("*.csv")))
    samples: int | None = None
    epochs: int | None = None
    address: str | None = None
    models_dir: Path | None = None
    overrides: dict = field(default_factory=dict)


def main(args: Args) -> Path:
    # ---- config ---------------------------------------------------------------------------------------------
    overrides = dict(args.overrides)
    if args.samples is not None:
        overrides["tune_forecaster.num_samples"] = args.samples
    if args.epochs is not None:
        overrides["tune_forecaster.max_epochs"] = args.epochs
    cfg = load_config(args.config, overrides)
    fc, tc = cfg.forecaster, cfg.tune_forecaster
    np.random.seed(fc.seed)
    torch.manual_seed(fc.seed)

    # ---- data: the earlier part of each series (the later part is left for evaluation) -------------------------
    series = [load_series(p, fc.step_minutes, fc.max_gap_steps) for p in args.series]
    train_set, val_set = training_sets(series, fc)
    print(f"{len(series)} series; {len(train_set)} training and {len(val_set)} validation windows")

    # ---- model + loop, as a Tune trial ----------------------------------------------------------------------
    def trial(config: dict, train_set=None, val_set=None) -> None:
        torch.set_num_threads(1)
        trial_cfg = fc.model_copy(update={**config, "epochs": tc.max_epochs})

        def report(epoch: int, loss: float, model: DemandLSTM) -> None:
            report_epoch({"loss": loss, "epoch": epoch}, {"model": model.state_dict(), "config": trial_cfg.model_dump()})

        train_forecaster(train_set, val_set, trial_cfg, report)

    state, trials = asha_search(trial, "forecaster", tc, args.address, train_set=train_set, val_set=val_set)

    # ---- checkpoint -----------------------------------------------------------------------------------------
    best_cfg = fc.model_copy(update=state["config"])
    model = DemandLSTM(best_cfg.horizon, best_cfg.hidden_size, len(best_cfg.quantiles))
    model.load_state_dict(state["model"])
    path = Forecaster(model, best_cfg).save(args.models_dir or cfg.models_path("forecaster"), {
        "kind": "demand-forecaster",
        "best_validation_loss": min(t["best_loss"] for t in trials if t["best_loss"] is not None),
        "best_config": {k: getattr(best_cfg, k) for k in search_space(tc)},
        "trials": trials,
        "data": {"series": [str(p) for p in args.series], "train_windows": len(train_set),
                 "validation_windows": len(val_set)},
        "tune": tc.model_dump(),
    })
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main(Args(samples=int(sys.argv[1]) if len(sys.argv) > 1 else None))

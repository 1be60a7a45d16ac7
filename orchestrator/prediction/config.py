"""Configuration of the prediction package (task predictor, demand forecaster, planners), loaded from
`configs/prediction.yaml` into pydantic models (every field has a default; the bundled file itself must exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import resources
from ..errors import PredictionError

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_CONFIG = resources.location("configs") / "prediction.yaml"
DEFAULT_NODE_TYPES = resources.location("configs") / "node_types.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskModelConfig(_Section):
    """The per-task LSTM and its training loop."""

    hidden_size: int = 48
    num_layers: int = 1
    dropout: float = 0.0
    max_history: int = 32  # most recent executions of the category the LSTM reads
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    lr: float = 3e-3
    weight_decay: float = 1e-5
    epochs: int = 8
    batch_size: int = 256
    episodes_per_group: int = 64  # training examples drawn per (run, category)
    prior_run_probability: float = 0.5  # share of examples whose history also holds earlier runs
    validation_fraction: float = 0.15
    runtime_weighted_loss: bool = True  # weight the runtime loss by the category's runtime (as WAPE does)
    clip_to_history: float = 1.0  # predicted log runtime stays within the history's range widened by this
    clip_memory_to_history: float = 0.1  # same for log memory (peaks barely move within a category)
    seed: int = 0


class ForecasterConfig(_Section):
    """The demand LSTM over a usage time series and its training loop."""

    step_minutes: int = 5
    window: int = 72  # input steps (6 h at 5 min)
    horizon: int = 12  # output steps (1 h at 5 min)
    season: int = 288  # one day at 5 min
    max_gap_steps: int = 3  # gaps up to this many missing steps are interpolated; longer ones raise
    hidden_size: int = 32
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    lr: float = 3e-3
    weight_decay: float = 1e-5
    epochs: int = 15
    batch_size: int = 128
    train_fraction: float = 0.7  # the earlier part of each series trains, the later part evaluates
    validation_fraction: float = 0.15  # of the training part, the latest stretch, for early stopping / Tune
    seed: int = 0


class TuneConfig(_Section):
    """A Ray Tune search: sampled hyperparameters, ASHA early stopping, resources per trial."""

    num_samples: int = 6
    max_epochs: int = 12
    grace_period: int = 3
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0
    max_concurrent: int = 2
    # name -> {"choice": [...]} | {"loguniform": [lo, hi]} | {"uniform": [lo, hi]}
    search_space: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)


class EvaluationConfig(_Section):
    history_fraction: float = 0.2  # predict once this share of each category has finished in the run
    test_fraction: float = 0.25  # latest runs of each family (by execution time) held out
    online_fractions: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4, 0.6)
    latency_trials: int = 1000
    # Ship a method per target AND family (chosen on the calibration runs) instead of per target only. Off: on
    # the bundled traces the per-family choices did not carry over to the later runs (see the README).
    family_selection: bool = False


class RightSizingConfig(_Section):
    """Autopilot-style requests: a high predicted quantile times (1 + margin), never below a floor."""

    quantile: float = 0.9
    cpu_margin: float = 0.25
    memory_margin: float = 0.15
    min_cpus: float = 0.05
    min_memory_mib: float = 16.0
    cap_at_observed_max: bool = True  # never request more than the category's maximum observed so far
    calibrate: bool = True  # choose the margins on validation runs (<= 0.5% under-provisioned there)
    cluster_nodes: int = 4
    node_cpus: float = 16.0
    node_memory_gib: float = 64.0
    policy: str = "srpt-cp"


class CapacityConfig(_Section):
    quantile: float = 0.9  # which forecast quantile capacity must cover
    target_utilisation: float = 0.7
    p95_wait_seconds: float | None = None  # if set, size by M/M/c queueing delay instead of utilisation
    mean_task_seconds: float = 60.0
    cores_per_unit: float = 0.16  # demand units -> cores (EC2 CPU % of a 16-core host: 16 / 100)
    memory_gib_per_core: float = 0.0  # extra memory demand per busy core, 0 = cpu only


class CostConfig(_Section):
    policy: str = "srpt-cp"
    max_nodes: int = 16
    min_billed_seconds: float = 60.0


class PredictionConfig(_Section):
    task_model: TaskModelConfig = Field(default_factory=TaskModelConfig)
    forecaster: ForecasterConfig = Field(default_factory=ForecasterConfig)
    tune_predictor: TuneConfig = Field(default_factory=TuneConfig)
    tune_forecaster: TuneConfig = Field(default_factory=TuneConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    rightsizing: RightSizingConfig = Field(default_factory=RightSizingConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    models_dir: str = "models"
    results_dir: str = "results/prediction"

    def models_path(self, kind: str) -> Path:
        path = Path(self.models_dir)
        return (path if path.is_absolute() else resources.root() / path) / kind


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PredictionConfig:
    """Read `configs/prediction.yaml` (or `path`), then apply dotted overrides such as {"task_model.epochs": 2}."""
    path = Path(path) if path else resources.config_file("prediction.yaml")
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise PredictionError(f"Cannot parse prediction config '{path}': {exc}") from None
        if not isinstance(data, dict):
            raise PredictionError(f"Prediction config '{path}' must be a mapping at the top level")
    elif path != DEFAULT_CONFIG:
        raise PredictionError(f"Prediction config '{path}' does not exist")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return PredictionConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PredictionError(f"Invalid prediction config '{path}': {loc}: {first['msg']}") from None

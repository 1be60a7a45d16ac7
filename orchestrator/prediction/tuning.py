"""Ray Tune plumbing shared by the training scripts: the search space from the config, connecting to Ray
(local by default, a cluster with `address`), and turning a trial's weights into a Tune checkpoint."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import PredictionError
from .config import TuneConfig


def search_space(cfg: TuneConfig) -> dict[str, Any]:
    """{"hidden_size": {"choice": [32, 64]}, "lr": {"loguniform": [1e-3, 1e-2]}} -> Tune sampling objects."""
    from ray import tune

    space: dict[str, Any] = {}
    for name, spec in cfg.search_space.items():
        if len(spec) != 1:
            raise PredictionError(f"Search space entry '{name}' must have exactly one kind, got {list(spec)}")
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            space[name] = tune.choice(list(args))
        elif kind in ("loguniform", "uniform", "randint") and len(args) == 2:
            space[name] = getattr(tune, kind)(*args)
        else:
            raise PredictionError(f"Search space entry '{name}': unknown kind '{kind}' or wrong arguments {args}; "
                                  "use choice: [...], loguniform: [lo, hi], uniform: [lo, hi] or randint: [lo, hi]")
    return space


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the Ray already initialised in this process, else connect to `address`, else start a local Ray
    (shut down again afterwards)."""
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PredictionError(f"Cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def report_epoch(metrics: dict[str, float], state: dict[str, Any]) -> None:
    """Report one epoch to Tune with the weights as a checkpoint (`state.pt` in the checkpoint folder)."""
    from ray import tune

    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "state.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def load_trial_state(checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)


def storage_path() -> str:
    from .config import ROOT

    return str(ROOT / "checkpoints" / "tune")


def load_training_script(name: str):
    """Import `training/<name>.py` from the repository by path (the scripts are not an installed package)."""
    import importlib.util
    import sys

    from .config import ROOT

    path = ROOT / "training" / f"{name}.py"
    if not path.exists():
        raise PredictionError(f"Training script '{path}' is missing; run from a checkout of the repository")
    module_name = f"_training_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def asha_search(trial, name: str, cfg: TuneConfig, address: str | None, **data: Any) -> tuple[dict[str, Any],
                                                                                              list[dict[str, Any]]]:
    """Run `trial(config, **data)` over the search space with ASHA; return the best checkpoint's state and a
    summary of every trial (config, best and last loss, epochs)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    with ray_session(address):
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trial, **data), {"cpu": cfg.cpus_per_trial}),
            param_space=search_space(cfg),
            tune_config=tune.TuneConfig(
                metric="loss", mode="min", num_samples=cfg.num_samples, max_concurrent_trials=cfg.max_concurrent,
                scheduler=ASHAScheduler(max_t=cfg.max_epochs, grace_period=min(cfg.grace_period, cfg.max_epochs),
                                        reduction_factor=cfg.reduction_factor),
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage_path(), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(
                                          num_to_keep=1, checkpoint_score_attribute="loss",
                                          checkpoint_score_order="min")),
        )
        results = tuner.fit()
        best = results.get_best_result(metric="loss", mode="min", scope="all")
        state = load_trial_state(best.get_best_checkpoint("loss", "min"))
        trials = [{"config": r.config,
                   "best_loss": float(r.metrics_dataframe["loss"].min()) if r.metrics_dataframe is not None else None,
                   "last_loss": r.metrics.get("loss") if r.metrics else None,
                   "epochs": r.metrics.get("training_iteration") if r.metrics else None} for r in results]
    return state, trials

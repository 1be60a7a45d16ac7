"""`orchestrator train predictor|forecaster|optimizer`: tune and train the learned models with Ray Tune and save
the best as a new version under models/."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    train = typer.Typer(help="Train learned models (Ray Tune; local Ray unless --address).", no_args_is_help=True)
    app.add_typer(train, name="train")
    console = Console()

    @train.command("predictor")
    def predictor(
        traces: Path = typer.Option(None, help="Folder of WfCommons traces (default: the bundled data/traces)"),
        samples: int = typer.Option(None, help="Tune trials (default from configs/prediction.yaml)"),
        epochs: int = typer.Option(None, help="Max epochs per trial (ASHA stops weak trials earlier)"),
        address: str = typer.Option(None, help="Ray cluster address; a local Ray is started when omitted"),
        config: Path = typer.Option(None, help="Prediction config (default configs/prediction.yaml)"),
        models_dir: Path = typer.Option(None, help="Where versions go (default models/predictor)"),
    ):
        """Tune the per-task LSTM (runtime, cpu, memory quantiles) and save models/predictor/<version>/."""
        from ..prediction.tuning import load_training_script

        script = load_training_script("tune_predictor")
        args = script.Args(config=config, samples=samples, epochs=epochs, address=address, models_dir=models_dir)
        if traces is not None:
            args.traces = traces
        path = script.main(args)
        console.print(f"[green]saved[/] {path}")

    @train.command("forecaster")
    def forecaster(
        series: list[Path] = typer.Option(None, help="CSV series (timestamp,value); default data/series/*.csv"),
        samples: int = typer.Option(None, help="Tune trials"),
        epochs: int = typer.Option(None, help="Max epochs per trial"),
        address: str = typer.Option(None, help="Ray cluster address; a local Ray is started when omitted"),
        config: Path = typer.Option(None, help="Prediction config (default configs/prediction.yaml)"),
        models_dir: Path = typer.Option(None, help="Where versions go (default models/forecaster)"),
    ):
        """Tune the demand LSTM (next hour of usage, quantiles) and save models/forecaster/<version>/."""
        from ..prediction.tuning import load_training_script

        script = load_training_script("tune_forecaster")
        args = script.Args(config=config, samples=samples, epochs=epochs, address=address, models_dir=models_dir)
        if series:
            args.series = list(series)
        path = script.main(args)
        console.print(f"[green]saved[/] {path}")

    @train.command("optimizer")
    def optimizer(
        traces: Path = typer.Option(None, help="Folder of WfCommons traces (default: the bundled data/traces); "
                                               "only the training families are used"),
        samples: int = typer.Option(None, help="Tune trials (default from configs/optimizer.yaml)"),
        epochs: int = typer.Option(None, help="Max epochs per trial (ASHA stops weak trials earlier)"),
        address: str = typer.Option(None, help="Ray cluster address; a local Ray is started when omitted"),
        config: Path = typer.Option(None, help="Optimizer config (default configs/optimizer.yaml)"),
        models_dir: Path = typer.Option(None, help="Where versions go (default models/optimizer)"),
        cache_dir: Path = typer.Option(None, help="Where the labelled dataset is cached (default from the config)"),
    ):
        """Tune the makespan GNN (makespan distribution and per-task gains, Monte Carlo labels) and save
        models/optimizer/<version>/."""
        from ..prediction.tuning import load_training_script

        script = load_training_script("tune_optimizer")
        args = script.Args(config=config, traces=traces, samples=samples, epochs=epochs, address=address,
                           models_dir=models_dir, cache_dir=cache_dir)
        path = script.main(args)
        console.print(f"[green]saved[/] {path}")

    @train.command("scheduler")
    def scheduler(
        iterations: int = typer.Option(None, help="PPO iterations (default from configs/scheduler.yaml)"),
        traces: Path = typer.Option(None, help="Folder of WfCommons traces (default: the bundled data/traces); "
                                               "only the training families of the config are used"),
        address: str = typer.Option(None, help="Ray cluster address; a local Ray is started when omitted"),
        families: str = typer.Option(None, help="Comma list of training families (default from the config); "
                                                "leave one out to measure generalisation to it"),
        env_runners: int = typer.Option(None, help="RLlib env runners (default from the config)"),
        learners: int = typer.Option(None, help="RLlib learners (0: learn in the driver)"),
        config: Path = typer.Option(None, help="Training config (default configs/scheduler.yaml)"),
        models_dir: Path = typer.Option(None, help="Where versions go (default models/scheduler)"),
        out: Path = typer.Option(Path("results/scheduler"), help="Where the RLlib checkpoint goes"),
    ):
        """Train the learned scheduler (PPO, RLlib new API stack, graph-network policy) in the simulator, evaluate
        it against the heuristics as it trains, and save models/scheduler/<version>/ with its training curve."""
        from .. import resources
        from ..prediction.tuning import load_training_script

        script = load_training_script("train_scheduler")
        overrides = {}
        if traces is not None:
            if not traces.is_dir():
                raise typer.BadParameter(f"'{traces}' is not a folder", param_hint="--traces")
            overrides["env.traces"] = str(traces)
        if families is not None:
            names = [f.strip() for f in families.split(",") if f.strip()]
            if not names:
                raise typer.BadParameter("give at least one family", param_hint="--families")
            overrides["env.families"] = names
            overrides["evaluation.families"] = names
        if env_runners is not None:
            overrides["ppo.env_runners"] = env_runners
        if learners is not None:
            overrides["ppo.learners"] = learners
        cfg = script.TrainConfig.load(config, overrides)
        root = models_dir or resources.location("models") / "scheduler"
        summary = script.train_scheduler(cfg, Path(root), out, address=address, iterations=iterations,
                                         log=lambda line: console.print(line, markup=False, highlight=False))
        console.print(f"[green]saved[/] {summary['model_dir']}")

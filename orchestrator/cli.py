"""The `orchestrator` command line (typer). Each area registers its commands from `orchestrator/commands/`."""

from __future__ import annotations

import importlib
import sys

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .errors import OrchestratorError

app = typer.Typer(
    name="orchestrator",
    help="Run workflows on Ray with policy-driven scheduling; simulate, benchmark and learn schedulers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

# Modules under orchestrator/commands/ each define `register(app)`; a missing module is skipped.
COMMAND_MODULES = ("workflow", "bench", "conformance", "perf", "runtime", "predict", "optimize", "optimizer_eval",
                   "train", "tune", "keys", "serve", "bench_api")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"orchestrator.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"orchestrator.commands.{name}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    try:
        app()
    except OrchestratorError as exc:
        # The message is user text (file names, task ids): printed literally, one line per sentence, never wrapped.
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:  # a settings model read from the environment or a config file
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
        console.print(f"[bold red]error:[/] invalid {escape(exc.title)}: {escape(fields)}", soft_wrap=True)
        sys.exit(2)

"""Scheduling: the policy interface, the ready queue, the heuristics and the registry of policies by name."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import PolicyError, PolicyPluginError
from .heuristics import (
    FifoPolicy,
    HeftPolicy,
    JobFifoPolicy,
    RandomPolicy,
    SjfCriticalPathPolicy,
    SrptCriticalPathPolicy,
    TetrisPolicy,
    WeightedFairPolicy,
)
from .interface import (
    Decision,
    JobView,
    NodeView,
    ReadyTask,
    SchedulingPolicy,
    SchedulingState,
)
from .queue import ReadyQueue

_REGISTRY: dict[str, Callable[[], SchedulingPolicy]] = {
    "fifo": FifoPolicy,
    "job-fifo": JobFifoPolicy,
    "srpt-cp": SrptCriticalPathPolicy,
    "sjf-cp": SjfCriticalPathPolicy,
    "heft": HeftPolicy,
    "tetris": TetrisPolicy,
    "weighted-fair": WeightedFairPolicy,
    "random": RandomPolicy,
}

HEURISTICS = ("fifo", "job-fifo", "srpt-cp", "sjf-cp", "heft", "tetris", "weighted-fair")


def register_policy(name: str, factory: Callable[[], SchedulingPolicy]) -> None:
    """Make a policy available by name to the simulator, the runtime, the benchmark and the CLI."""
    _REGISTRY[name] = factory


def available_policies() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


_plugins_loaded = False
_plugin_error: Exception | None = None  # why the `policies` package failed to import, if it did


def _load_plugins() -> Exception | None:
    """Import the `policies` package once (the learned policy registers itself there; it needs torch). Its absence
    is normal; any other failure is kept and returned, to be reported when a policy that is not built in is asked
    for."""
    global _plugins_loaded, _plugin_error
    if not _plugins_loaded:
        _plugins_loaded = True
        try:
            import policies  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name != "policies":
                _plugin_error = exc
        except Exception as exc:  # noqa: BLE001 - whatever a plugin raises, it is reported by name
            _plugin_error = exc
    return _plugin_error


def policy_class(name: str) -> Callable[[], SchedulingPolicy]:
    """The class (or factory) registered under a policy name, without making a policy; PolicyError if unknown,
    PolicyPluginError if it is not built in and the plugin policies could not be loaded."""
    if name not in _REGISTRY:
        error = _load_plugins()
        if name not in _REGISTRY:
            if error is not None:
                cause = " ".join(f"{type(error).__name__}: {error}".split())  # on one line
                raise PolicyPluginError(
                    f"Scheduling policy plugins could not be loaded: {cause}; "
                    f"'{name}' is not a built-in policy (built in: {', '.join(sorted(_REGISTRY))})"
                )
            raise PolicyError(f"Unknown scheduling policy '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_policy(name: str) -> None:
    """Raise PolicyError (or PolicyPluginError) unless a policy of this name exists. Nothing is constructed; the
    plugins are imported at most once per process, so a repeated check is a dictionary lookup."""
    policy_class(name)


def get_policy(name: str) -> SchedulingPolicy:
    """A fresh policy instance by its command-line name (`fifo`, `srpt-cp`, ...)."""
    return policy_class(name)()


__all__ = [
    "Decision", "JobView", "NodeView", "ReadyTask", "SchedulingPolicy", "SchedulingState", "ReadyQueue",
    "get_policy", "policy_class", "check_policy", "register_policy", "available_policies", "HEURISTICS",
]

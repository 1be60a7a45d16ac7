"""Scheduling: the policy interface, the ready queue, the heuristics and the registry of policies by name."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import PolicyError
from .heuristics import (
    FifoPolicy,
    HeftPolicy,
    JobFifoPolicy,
    RandomPolicy,
    SrptCriticalPathPolicy,
    TetrisPolicy,
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
    "heft": HeftPolicy,
    "tetris": TetrisPolicy,
    "random": RandomPolicy,
}

HEURISTICS = ("fifo", "job-fifo", "srpt-cp", "heft", "tetris")


def register_policy(name: str, factory: Callable[[], SchedulingPolicy]) -> None:
    """Make a policy available by name to the simulator, the runtime, the benchmark and the CLI."""
    _REGISTRY[name] = factory


def available_policies() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def _load_plugins() -> None:
    # The learned policy registers itself when its package is importable (it needs torch).
    try:
        import policies  # noqa: F401
    except ImportError:
        pass


def get_policy(name: str) -> SchedulingPolicy:
    """A fresh policy instance by its command-line name (`fifo`, `srpt-cp`, ...)."""
    if name not in _REGISTRY:
        _load_plugins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise PolicyError(
            f"Unknown scheduling policy '{name}'; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return factory()


__all__ = [
    "Decision", "JobView", "NodeView", "ReadyTask", "SchedulingPolicy", "SchedulingState", "ReadyQueue",
    "get_policy", "register_policy", "available_policies", "HEURISTICS",
]

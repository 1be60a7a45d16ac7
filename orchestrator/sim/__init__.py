"""The cluster simulator: pure Python and numpy, no Ray import, deterministic for a seed."""

from .cluster import Cluster, NodeSpec
from .engine import Simulation, simulate
from .metrics import SimResult
from .workload import (
    FailureModel,
    Job,
    TraceEntry,
    TraceLibrary,
    Workload,
    poisson_workload,
    replay_workload,
    single_workload,
)

__all__ = ["Cluster", "NodeSpec", "Simulation", "simulate", "SimResult", "Job", "TraceEntry", "TraceLibrary",
           "Workload", "FailureModel", "poisson_workload", "replay_workload", "single_workload"]

"""The cells of a benchmark: which workload (scenario, load, cluster size, seed) every policy is run on.

A `BenchPlan` is built once from the config and the trace library; each `Cell` turns into the same workload
wherever it is run, so the policies are compared on identical inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import SimulationError
from ..model import Limits, get_limits
from ..sim import Cluster, TraceEntry, TraceLibrary, Workload, poisson_workload, single_workload
from .config import BenchConfig, BenchConfigError

ONLINE = "online"
SINGLE_PREFIX = "single:"


@dataclass(frozen=True)
class Cell:
    """One workload of the benchmark; every policy runs on it. `load` is NaN for a single-workflow cell."""

    scenario: str  # "online" or "single:<workflow name>"
    load: float
    nodes: int
    cpus_per_node: float
    memory_gib_per_node: float
    seed: int
    noise: float
    jobs: int = 1

    @property
    def is_online(self) -> bool:
        return self.scenario == ONLINE

    @property
    def workflow(self) -> str | None:
        return self.scenario[len(SINGLE_PREFIX):] if self.scenario.startswith(SINGLE_PREFIX) else None

    def cluster(self) -> Cluster:
        return Cluster.homogeneous(self.nodes, self.cpus_per_node, self.memory_gib_per_node)


@dataclass(frozen=True)
class BenchPlan:
    """The cells to run and the workflows they draw from (sent once to each worker process)."""

    cells: tuple[Cell, ...]
    online_entries: tuple[TraceEntry, ...]
    single_entries: dict[str, TraceEntry]

    def workload(self, cell: Cell) -> Workload:
        """The cell's workload: a pure function of the cell and the plan's workflows."""
        if cell.is_online:
            library = TraceLibrary(self.online_entries)
            return poisson_workload(library, cell.cluster(), cell.load, cell.jobs, seed=cell.seed, noise=cell.noise)
        return single_workload(self.single_entries[cell.workflow], seed=cell.seed, noise=cell.noise)


@lru_cache(maxsize=4)
def _cached_library(resolved: str, limits: Limits) -> TraceLibrary:
    return TraceLibrary.from_dir(resolved)


def load_library(trace_dir: str | Path) -> TraceLibrary:
    """The workflows of a trace folder, parsed once per process and per limits (the bundled 73 runs take a few
    seconds)."""
    return _cached_library(str(Path(trace_dir).resolve()), get_limits())


def parallelism(entry: TraceEntry) -> float:
    """Average parallelism of a workflow: cpu work over critical-path length."""
    cp = entry.analysis.critical_path_length
    return entry.cpu_work / cp if cp > 0 else math.inf


def choose_single_workflows(config: BenchConfig, library: TraceLibrary) -> list[TraceEntry]:
    """The configured workflows by name, or the `workflows_per_family` most parallel runs of each family."""
    spec = config.single
    if spec.workflows:
        names = {e.name: e for e in library.entries}
        missing = [n for n in spec.workflows if n not in names]
        if missing:
            sample = ", ".join(sorted(names)[:8])
            raise BenchConfigError(
                f"single.workflows names {missing} not in trace folder '{config.trace_dir}' "
                f"(it holds {len(names)} workflows, e.g. {sample})"
            )
        return [names[n] for n in dict.fromkeys(spec.workflows)]
    try:
        pool = library.subset(max_tasks=spec.max_tasks)
    except SimulationError as exc:
        raise BenchConfigError(f"single.max_tasks={spec.max_tasks}: {exc}") from None
    chosen = []
    for family in pool.families:
        runs = [e for e in pool.entries if e.family == family]
        runs.sort(key=lambda e: (-parallelism(e), e.name))
        chosen.extend(runs[: spec.workflows_per_family])
    return chosen


def online_library(config: BenchConfig, library: TraceLibrary) -> TraceLibrary:
    """The workflows the online mixes are sampled from."""
    spec = config.online
    if spec.families is not None:
        unknown = sorted(set(spec.families) - set(library.families))
        if unknown:
            raise BenchConfigError(
                f"online.families {unknown} not in trace folder '{config.trace_dir}'; "
                f"available: {', '.join(library.families)}"
            )
    try:
        return library.subset(families=spec.families, max_tasks=spec.max_tasks)
    except SimulationError as exc:
        raise BenchConfigError(f"online scenario: {exc}") from None


def build_plan(config: BenchConfig, library: TraceLibrary, scenarios: str = "all") -> BenchPlan:
    """Every cell of the benchmark, in a fixed order: online (load, seed), then single (workflow, nodes, seed)."""
    if scenarios not in ("all", "online", "single"):
        raise BenchConfigError(f"Unknown scenario '{scenarios}'; use all, online or single")
    cells: list[Cell] = []
    online_entries: tuple[TraceEntry, ...] = ()
    single_entries: dict[str, TraceEntry] = {}
    if config.online.enabled and scenarios in ("all", "online"):
        spec = config.online
        online_entries = tuple(online_library(config, library).entries)
        for load in spec.loads:
            for seed in config.seed_list:
                cells.append(Cell(ONLINE, float(load), spec.nodes, spec.cpus_per_node, spec.memory_gib_per_node,
                                  seed, config.noise, spec.jobs))
    if config.single.enabled and scenarios in ("all", "single"):
        spec = config.single
        for entry in choose_single_workflows(config, library):
            single_entries[entry.name] = entry
            for nodes in spec.nodes:
                for seed in config.seed_list:
                    cells.append(Cell(SINGLE_PREFIX + entry.name, math.nan, nodes, spec.cpus_per_node,
                                      spec.memory_gib_per_node, seed, config.noise))
    if not cells:
        raise BenchConfigError(f"Nothing to run: scenario '{scenarios}' is disabled in the configuration")
    return BenchPlan(tuple(cells), online_entries, single_entries)

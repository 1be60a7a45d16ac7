"""Tuned parameters of the heuristic policies: the file they are read from (`models/scheduler/heuristics.json`)
and the simulator search that writes it (`tune_weighted_fair`, run by `orchestrator tune heuristics`).

The search only draws workloads from the training families, with seeds from 1000 up, so that no benchmark
workload (seeds 0-9) and no unseen family ever informs the tuned value.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import PolicyError
from ..resources import location

if TYPE_CHECKING:
    from ..sim import Cluster, TraceLibrary

HEURISTICS_FILE_ENV = "ORCHESTRATOR_HEURISTICS_FILE"  # another file of tuned values (tests, experiments)
DEFAULT_ALPHA = -1.0  # weighted-fair without a tuned value: shares inversely proportional to remaining work
DEFAULT_ALPHAS = (-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
DEFAULT_LOADS = (0.8, 0.95)
FIRST_TRAINING_SEED = 1000  # benchmark seeds are 0-9: tuning never sees a benchmark workload


def heuristics_file() -> Path:
    """Where the tuned values are read from: $ORCHESTRATOR_HEURISTICS_FILE, else models/scheduler/heuristics.json."""
    env = os.environ.get(HEURISTICS_FILE_ENV)
    return Path(env) if env else location("models") / "scheduler" / "heuristics.json"


class WeightedFairValues(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float

    @field_validator("alpha")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class TunedHeuristics(BaseModel):
    """The file's contents: the tuned values per policy and how they were obtained."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    weighted_fair: WeightedFairValues | None = Field(None, alias="weighted-fair")
    provenance: dict[str, Any] = Field(default_factory=dict)  # command, date, table


def load_tuned(path: str | Path | None = None) -> TunedHeuristics | None:
    """The tuned values in `path` (default: `heuristics_file()`); None when the default file does not exist.
    PolicyError when a file is unreadable or malformed, or when a file asked for by name does not exist."""
    explicit = path is not None or bool(os.environ.get(HEURISTICS_FILE_ENV))
    path = Path(path) if path is not None else heuristics_file()
    if not path.is_file():
        if explicit:
            raise PolicyError(f"Tuned heuristics file {path} does not exist; write it with `orchestrator tune "
                              f"heuristics --out {path}` or unset {HEURISTICS_FILE_ENV}")
        return None
    try:
        return TunedHeuristics.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        cause = " ".join(str(exc).split())
        raise PolicyError(f"Tuned heuristics file {path} is not valid ({cause}); rewrite it with "
                          "`orchestrator tune heuristics`") from None


def tuned_alpha(path: str | Path | None = None) -> float:
    """weighted-fair's alpha from the tuned values (`load_tuned`), DEFAULT_ALPHA when there is none."""
    tuned = load_tuned(path)
    return tuned.weighted_fair.alpha if tuned is not None and tuned.weighted_fair is not None else DEFAULT_ALPHA


@dataclass(frozen=True)
class TuningResult:
    """Mean average JCT of weighted-fair per (alpha, load) over the seeds, and the alpha with the lowest mean
    over the loads."""

    alphas: tuple[float, ...]
    loads: tuple[float, ...]
    seeds: tuple[int, ...]
    jobs: int
    families: tuple[str, ...]
    cluster: str
    noise: float
    avg_jct: dict[tuple[float, float], float] = field(repr=False)  # (alpha, load) -> mean over seeds

    def mean_over_loads(self, alpha: float) -> float:
        return sum(self.avg_jct[alpha, load] for load in self.loads) / len(self.loads)

    @property
    def best_alpha(self) -> float:
        """The lowest mean over loads; ties go to the alpha listed first."""
        return min(self.alphas, key=self.mean_over_loads)

    def table(self) -> list[dict[str, Any]]:
        """One row per alpha: its mean avg JCT at each load and over the loads (seconds)."""
        return [{"alpha": a, **{f"load {load:g}": self.avg_jct[a, load] for load in self.loads},
                 "mean": self.mean_over_loads(a)} for a in self.alphas]

    def to_file(self, command: str, date: str) -> TunedHeuristics:
        """The file contents: the best alpha, and the command, date, setup and table that chose it."""
        return TunedHeuristics.model_validate({
            "weighted-fair": {"alpha": self.best_alpha},
            "provenance": {"command": command, "date": date, "metric": "avg_jct (s), mean over seeds",
                           "families": list(self.families), "seeds": list(self.seeds), "jobs": self.jobs,
                           "loads": list(self.loads), "cluster": self.cluster, "noise": self.noise,
                           "table": self.table()},
        })


def write_tuned(tuned: TunedHeuristics, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tuned.model_dump(by_alias=True), indent=2) + "\n")
    return path


def _avg_jcts(library: TraceLibrary, cluster: Cluster, load: float, jobs: int, seed: int, noise: float,
              alphas: Sequence[float]) -> list[float]:
    """Average JCT of weighted-fair at each alpha on one Poisson workload."""
    from ..sim import poisson_workload, simulate
    from .heuristics import WeightedFairPolicy

    workload = poisson_workload(library, cluster, load, jobs, seed=seed, noise=noise)
    return [float(simulate(workload, cluster, WeightedFairPolicy(alpha=a), seed=seed, record=False).jct.mean())
            for a in alphas]


_worker_args: tuple | None = None  # (library, cluster, jobs, noise, alphas), inherited by forked workers


def _init_worker(args: tuple) -> None:
    global _worker_args
    _worker_args = args


def _run_in_worker(load: float, seed: int) -> list[float]:
    assert _worker_args is not None, "worker process was not initialised"
    library, cluster, jobs, noise, alphas = _worker_args
    return _avg_jcts(library, cluster, load, jobs, seed, noise, alphas)


def tune_weighted_fair(library: TraceLibrary, alphas: Sequence[float] = DEFAULT_ALPHAS,
                       loads: Sequence[float] = DEFAULT_LOADS,
                       seeds: Sequence[int] = range(FIRST_TRAINING_SEED, FIRST_TRAINING_SEED + 6),
                       jobs: int = 40, cluster: Cluster | None = None, noise: float = 0.3,
                       families: Sequence[str] | None = None, workers: int = 1,
                       progress: Callable[[int, int], None] | None = None) -> TuningResult:
    """Simulate weighted-fair at each alpha on the same Poisson workloads (each load x seed, `jobs` workflows drawn
    only from the training `families` of `library`; default the optimizer's TRAINING_FAMILIES) on `cluster`
    (default: the benchmark's online cluster, 4 nodes of 16 cpus and 64 GiB) and return the mean average JCT per
    (alpha, load). Seeds must be >= FIRST_TRAINING_SEED. Results do not depend on `workers`."""
    from ..sim import Cluster

    if families is None:
        from ..optimization.groundtruth import TRAINING_FAMILIES

        families = TRAINING_FAMILIES
    alphas, loads, seeds = tuple(float(a) for a in alphas), tuple(float(x) for x in loads), tuple(seeds)
    if not alphas or not loads or not seeds:
        raise PolicyError("Tuning needs at least one alpha, one load and one seed")
    if not all(math.isfinite(a) for a in alphas) or len(set(alphas)) != len(alphas):
        raise PolicyError(f"The alphas {list(alphas)} must be distinct finite numbers")
    if min(seeds) < FIRST_TRAINING_SEED:
        raise PolicyError(f"Tuning seeds must be >= {FIRST_TRAINING_SEED} (seeds 0-9 are the benchmark's); "
                          f"got {min(seeds)}")
    if jobs < 1:
        raise PolicyError(f"jobs must be >= 1, got {jobs}")
    library = library.subset(families=list(families))
    cluster = cluster or Cluster.homogeneous(4, cpus=16, memory_gib=64)
    cells = [(load, seed) for load in loads for seed in seeds]
    outputs: list[list[float]] = []
    if workers <= 1 or len(cells) == 1:
        for k, (load, seed) in enumerate(cells):
            outputs.append(_avg_jcts(library, cluster, load, jobs, seed, noise, alphas))
            if progress:
                progress(k + 1, len(cells))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=context,
                                 initializer=_init_worker,
                                 initargs=((library, cluster, jobs, noise, alphas),)) as pool:
            futures = [pool.submit(_run_in_worker, load, seed) for load, seed in cells]
            for k, future in enumerate(futures):
                outputs.append(future.result())
                if progress:
                    progress(k + 1, len(cells))
    avg_jct: dict[tuple[float, float], float] = {}
    for i, alpha in enumerate(alphas):
        for load in loads:
            values = [out[i] for (cell_load, _), out in zip(cells, outputs) if cell_load == load]
            avg_jct[alpha, load] = sum(values) / len(values)
    nodes = cluster.nodes
    if len({(n.cpus, n.memory) for n in nodes}) == 1:
        described = f"{len(nodes)} nodes x {nodes[0].cpus:g} cpus, {nodes[0].memory / 1024**3:g} GiB"
    else:
        described = f"{len(nodes)} nodes, {cluster.total_cpus:g} cpus"
    return TuningResult(alphas, loads, seeds, jobs, tuple(sorted(set(e.family for e in library.entries))), described,
                        noise, avg_jct)


__all__ = ["HEURISTICS_FILE_ENV", "DEFAULT_ALPHA", "DEFAULT_ALPHAS", "DEFAULT_LOADS", "FIRST_TRAINING_SEED",
           "heuristics_file", "load_tuned", "tuned_alpha", "TunedHeuristics", "TuningResult", "tune_weighted_fair",
           "write_tuned"]

"""The benchmark's configuration: a pydantic model read from `configs/bench.yaml`, overridable from the CLI.

`--quick` applies the `quick:` block of the same file on top of the defaults (a tiny run for tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import resources
from ..errors import OrchestratorError
from ..loaders import default_trace_dir
from ..scheduling import HEURISTICS

DEFAULT_CONFIG_PATH = resources.location("configs") / "bench.yaml"


class BenchConfigError(OrchestratorError):
    """The benchmark configuration (file or command-line override) is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SingleScenario(_Section):
    """One workflow alone on clusters of several sizes: how close each policy gets to the makespan bound."""

    enabled: bool = True
    nodes: list[int] = Field(default=[2, 4, 8, 16], min_length=1)
    cpus_per_node: float = Field(default=8, gt=0)
    memory_gib_per_node: float = Field(default=32, gt=0)
    workflows_per_family: int = Field(default=2, ge=1)
    workflows: list[str] = Field(default_factory=list)  # explicit workflow names; empty = most parallel per family
    max_tasks: int | None = Field(default=None, ge=1)

    @field_validator("nodes")
    @classmethod
    def _positive_nodes(cls, nodes: list[int]) -> list[int]:
        if any(n < 1 for n in nodes):
            raise ValueError(f"every node count must be >= 1, got {nodes}")
        return sorted(set(nodes))


class OnlineScenario(_Section):
    """Many workflows arriving as a Poisson process at several offered loads on one cluster."""

    enabled: bool = True
    loads: list[float] = Field(default=[0.5, 0.8, 0.95], min_length=1)
    jobs: int = Field(default=40, ge=1)
    nodes: int = Field(default=4, ge=1)
    cpus_per_node: float = Field(default=16, gt=0)
    memory_gib_per_node: float = Field(default=64, gt=0)
    families: list[str] | None = None  # None = every family in the trace folder
    max_tasks: int | None = Field(default=None, ge=1)

    @field_validator("loads")
    @classmethod
    def _positive_loads(cls, loads: list[float]) -> list[float]:
        if any(not 0 < x for x in loads):
            raise ValueError(f"every load must be > 0, got {loads}")
        return sorted(set(loads))


class BenchConfig(_Section):
    """Everything that determines a benchmark's results (except `workers`, which must not change them)."""

    traces: Path | None = None  # None = the bundled traces
    policies: list[str] = Field(default_factory=lambda: list(HEURISTICS), min_length=1)
    baseline: str = "fifo"  # the policy every other is compared with (ratio columns)
    seeds: int = Field(default=5, ge=1)
    first_seed: int = Field(default=0, ge=0)
    noise: float = Field(default=0.3, ge=0)  # sigma of the log-normal error on predicted task durations
    workers: int = Field(default=2, ge=1)
    single: SingleScenario = SingleScenario()
    online: OnlineScenario = OnlineScenario()

    @field_validator("policies")
    @classmethod
    def _unique_policies(cls, policies: list[str]) -> list[str]:
        return list(dict.fromkeys(p.strip() for p in policies))

    @property
    def trace_dir(self) -> Path:
        return self.traces if self.traces is not None else default_trace_dir()

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def with_overrides(self, **overrides: Any) -> "BenchConfig":
        """A copy with dotted overrides applied, e.g. `with_overrides(seeds=3, **{"online.jobs": 10})`.

        `None` values are ignored, so CLI options left unset keep the configured value.
        """
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            _set_dotted(data, key, value)
        return _validate(data, "overrides")


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    target = data
    for part in parents:
        if not isinstance(target.get(part), dict):
            raise BenchConfigError(f"Unknown benchmark setting '{key}'")
        target = target[part]
    if leaf not in target:
        raise BenchConfigError(f"Unknown benchmark setting '{key}'; known: {', '.join(sorted(target))}")
    target[leaf] = value


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate(data: dict, source: str) -> BenchConfig:
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise BenchConfigError(f"Invalid benchmark configuration in {source}: {problems}") from None


def load_config(path: str | Path | None = None, quick: bool = False) -> BenchConfig:
    """Read a benchmark config file (default: the bundled `configs/bench.yaml`, which must exist).

    With `quick`, the file's `quick:` block is merged over the rest.
    """
    path = Path(path) if path is not None else resources.config_file("bench.yaml")
    if not path.exists():
        raise BenchConfigError(f"Benchmark config '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BenchConfigError(f"Cannot read benchmark config '{path}': {exc}") from None
    if not isinstance(raw, dict):
        raise BenchConfigError(f"Benchmark config '{path}' must be a mapping at the top level")
    quick_block = raw.pop("quick", None) or {}
    if not isinstance(quick_block, dict):
        raise BenchConfigError(f"'quick' in '{path}' must be a mapping of overrides")
    data = _deep_merge(raw, quick_block) if quick else raw
    return _validate(data, str(path) + (" (quick)" if quick else ""))

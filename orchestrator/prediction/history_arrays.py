"""A category's history and a query task as small numpy arrays: the one representation every task predictor
(baselines, prior and LSTM) reads, built either from `Execution` objects or from rows of an `ExecutionTable`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .features import MIN_RUNTIME, Execution, ExecutionTable, TaskFeatures, log_size

_NAN = float("nan")


def _log1p(v: float | None) -> float:
    return log_size(v)


@dataclass(frozen=True)
class HistoryArrays:
    """n finished executions, oldest first. Logs are natural; unknown values are NaN."""

    log_runtime: np.ndarray  # (n,) log seconds
    log_input: np.ndarray  # (n,) log1p bytes
    log_output: np.ndarray  # (n,)
    cpu: np.ndarray  # (n,) cores
    log_memory: np.ndarray  # (n,) log bytes
    same_run: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return self.log_runtime.size

    def tail(self, k: int) -> "HistoryArrays":
        if len(self) <= k:
            return self
        return HistoryArrays(*(a[-k:] for a in (self.log_runtime, self.log_input, self.log_output, self.cpu,
                                                 self.log_memory, self.same_run)))

    @classmethod
    def from_executions(cls, executions: Sequence[Execution]) -> "HistoryArrays":
        return cls(
            np.array([np.log(max(e.runtime, MIN_RUNTIME)) for e in executions], dtype=np.float64),
            np.array([_log1p(e.input_bytes) for e in executions], dtype=np.float64),
            np.array([_log1p(e.output_bytes) for e in executions], dtype=np.float64),
            np.array([_NAN if e.cpu is None else e.cpu for e in executions], dtype=np.float64),
            np.array([np.log(e.memory) if e.memory else _NAN for e in executions], dtype=np.float64),
            np.array([e.same_run for e in executions], dtype=bool),
        )

    @classmethod
    def from_table(cls, table: ExecutionTable, rows: np.ndarray, same_run: np.ndarray) -> "HistoryArrays":
        return cls(table.log_runtime[rows], table.log_input[rows], table.log_output[rows], table.cpu[rows],
                   table.log_memory[rows], np.asarray(same_run, dtype=bool))

    @classmethod
    def empty(cls) -> "HistoryArrays":
        z = np.zeros(0)
        return cls(z, z, z, z, z, np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class Query:
    """The task to predict, as known before it runs: its log1p input size (NaN = unknown or 0, see `log_size`)
    and its family if known. There is deliberately no output size: a task's output size is recorded after it
    ran, so a predictor reading it would be scored on information it cannot have when the prediction is
    needed. (The history's output sizes are fine: those executions finished earlier.)"""

    log_input: float
    family: str | None = None

    @classmethod
    def from_features(cls, f: TaskFeatures) -> "Query":
        return cls(_log1p(f.input_bytes), f.family)

    @classmethod
    def from_table(cls, table: ExecutionTable, row: int, family: str | None = None) -> "Query":
        return cls(float(table.log_input[row]), family)

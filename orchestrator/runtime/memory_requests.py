"""Memory requests for tasks that declare none (`RuntimeConfig.memory_requests = "sized"`): the input-knn sizer of
`prediction.memory_sizing` over the peaks recorded per (family, category), and the doubling after a sizing miss.

The history is kept here, in memory, and never read on the dispatch path: it is seeded once from the store when
the orchestrator starts and grows by one entry per successful attempt (`observe`); sizing a task (`size`) is a
look-up and a partial sort of at most `max_per_category` peaks. Pure Python and numpy (no Ray, no store calls
except `seed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("orchestrator.runtime")

UNKNOWN_FAMILY = "unknown"  # as `prediction.features.build_table` keys a workflow without a family


@dataclass(frozen=True)
class SizedRequest:
    """What the sizer gave one task: the request in bytes and what it was computed from (for its event)."""

    memory: int
    executions: int  # peaks of the category it was sized from

    def detail(self, k: int, margin: float) -> dict[str, Any]:
        return {"memory": self.memory, "method": "input-knn", "k": k, "margin": margin,
                "executions": self.executions}


def raised_request(current: float, cap: float) -> float | None:
    """The request after a memory failure of a sized request: double, at most `cap` (the largest node's memory);
    None once the request is at the cap (the failure is then an ordinary one)."""
    if cap <= 0 or current >= cap:
        return None
    return float(min(max(current, 1.0) * 2.0, cap))


class MemoryRequests:
    """The recorded peaks (bytes) and log input sizes per (family, category), oldest first, and the input-knn
    request they give a task."""

    def __init__(self, k: int = 8, margin: float = 0.05, max_per_category: int = 256):
        from ..prediction.features import log_size  # (imports the prediction package: only in sized mode)
        from ..prediction.memory_sizing import input_knn

        if k < 1 or margin < 0:
            raise ValueError(f"memory sizing needs k >= 1 and margin >= 0 (got k={k}, margin={margin})")
        self.k = k
        self.margin = margin
        self.max_per_category = max_per_category
        self._sizer = input_knn(k, margin)
        self._log_size = log_size
        self._peaks: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        self._arrays: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # of `_peaks`, built when read

    def __len__(self) -> int:
        return sum(len(p) for p, _ in self._peaks.values())

    def observe(self, family: str | None, category: str, input_bytes: float | None, peak: float | None) -> None:
        """A finished execution of `category` in a run of `family` peaked at `peak` bytes (None or 0: not
        recorded, ignored)."""
        if not peak or peak <= 0:
            return
        key = (family or UNKNOWN_FAMILY, category)
        self._arrays.pop(key, None)
        peaks, inputs = self._peaks.setdefault(key, ([], []))
        peaks.append(float(peak))
        inputs.append(self._log_size(input_bytes))
        if len(peaks) > self.max_per_category:
            del peaks[0], inputs[0]

    def history(self, family: str | None, category: str) -> tuple[np.ndarray, np.ndarray]:
        """(peaks, log1p input sizes) of the category, oldest first (what `size` reads)."""
        key = (family or UNKNOWN_FAMILY, category)
        arrays = self._arrays.get(key)
        if arrays is None:
            peaks, inputs = self._peaks.get(key, ([], []))
            arrays = (np.asarray(peaks, dtype=np.float64), np.asarray(inputs, dtype=np.float64))
            if peaks:
                self._arrays[key] = arrays
        return arrays

    def size(self, family: str | None, category: str, input_bytes: float | None) -> SizedRequest | None:
        """The input-knn request of a task of `category` with this input size; None when the category has no
        recorded peak (the task keeps no request)."""
        if (family or UNKNOWN_FAMILY, category) not in self._peaks:
            return None
        peaks, inputs = self.history(family, category)
        return SizedRequest(int(np.ceil(self._sizer(peaks, inputs, self._log_size(input_bytes)))), int(peaks.size))

    def seed(self, store: Any, runs: int = 20) -> int:
        """Start from the successful attempts, with a recorded peak, of the `runs` most recent runs in the store
        (oldest first); returns how many were taken."""
        from .recent import recent_successes

        seeded = 0
        for _, spec, t, e in recent_successes(store, runs):
            if e.peak_memory:
                self.observe(spec.family, t.category, t.input_bytes, e.peak_memory)
                seeded += 1
        log.info("memory sizing history seeded with %d executions", seeded)
        return seeded

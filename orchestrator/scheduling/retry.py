"""Retry backoff, shared by the simulator and the Ray runtime: both compute the same delay for the same attempt.

The jitter is not drawn from a random stream (whose state would depend on everything drawn before) but hashed
from (seed, job index, task index, attempt), so a delay depends only on what it is the delay of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit integers that spreads every input bit over the output."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit_hash(*parts: int) -> float:
    """A number in [0, 1) determined by the integers given (the same on every machine and Python version)."""
    h = 0
    for p in parts:
        h = _mix(h ^ (p & _MASK))
    return (h >> 11) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: delay = min(cap, base x 2^(attempt-1)) x (1 + jitter x u), where u in
    [0, 1) is hashed from (seed, job, task, attempt). `attempt` counts the task's own failures so far (1 for the
    delay after the first); `base` is the task's `retry_delay` when it has one."""

    base: float = 1.0
    cap: float = 300.0
    jitter: float = 0.5
    system_retries: int = 3  # extra attempts after a node or worker died (not the task's fault)

    def delay(self, attempt: int, base: float | None = None, *, seed: int = 0, job: int = 0, task: int = 0) -> float:
        b = self.base if base is None or math.isnan(base) else base  # None or NaN: the default base
        u = unit_hash(seed, job, task, attempt) if self.jitter else 0.0
        return min(self.cap, b * (2 ** max(attempt - 1, 0))) * (1.0 + self.jitter * u)

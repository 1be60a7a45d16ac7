"""Small built-in task functions, used by examples and benchmarks."""

from __future__ import annotations

import time


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def identity(value):
    return value


def add(*values: float) -> float:
    return sum(values)


def fail(message: str = "task failed on purpose") -> None:
    raise RuntimeError(message)


def fail_times(marker: str, times: int, value=None):
    """Fail the first `times` calls (counted in the file `marker`), then return `value`."""
    from pathlib import Path

    path = Path(marker)
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    if count < times:
        raise RuntimeError(f"failure {count + 1} of {times}")
    return value


def allocate(megabytes: int) -> int:
    """Allocate and touch `megabytes` MiB (to exceed a memory request)."""
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def hang(seconds: float = 3600) -> None:
    time.sleep(seconds)


def append_line(path: str, text: str, seconds: float = 0.0) -> str:
    """Sleep `seconds`, then append `text` as a line to the file `path` (a side effect a test can count)."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(text + "\n")
    return text

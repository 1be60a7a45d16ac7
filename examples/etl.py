"""Task functions of the example ETL workflow (examples/etl.yaml and examples/python_api.py)."""

from __future__ import annotations

import random


def extract(shard: int, rows: int = 1000) -> list[float]:
    rng = random.Random(shard)
    print(f"extracting shard {shard}")
    return [rng.gauss(100, 15) for _ in range(rows)]


def clean(values: list[float]) -> list[float]:
    return [v for v in values if 40 <= v <= 160]


def summarise(*shards: list[float]) -> dict:
    values = [v for shard in shards for v in shard]
    return {"rows": len(values), "mean": sum(values) / len(values)}


def report(summary: dict) -> str:
    line = f"{summary['rows']} rows, mean {summary['mean']:.2f}"
    print(line)
    return line

"""Node types with prices (from `configs/node_types.yaml`), shared by the capacity planner and the cost optimizer."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import PredictionError
from .config import DEFAULT_NODE_TYPES


class NodeType(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cpus: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    price_per_hour: float = Field(ge=0)  # USD
    gpus: float = Field(default=0.0, ge=0)


def load_node_types(path: str | Path | None = None) -> list[NodeType]:
    path = Path(path) if path else DEFAULT_NODE_TYPES
    if not path.exists():
        raise PredictionError(f"Node type file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        types = [NodeType.model_validate(t) for t in data.get("node_types") or []]
    except (yaml.YAMLError, ValidationError, AttributeError) as exc:
        raise PredictionError(f"Invalid node type file '{path}': {exc}") from None
    if not types:
        raise PredictionError(f"Node type file '{path}' lists no node_types")
    names = [t.name for t in types]
    if len(set(names)) != len(names):
        raise PredictionError(f"Node type file '{path}' lists a node type twice: {names}")
    return types

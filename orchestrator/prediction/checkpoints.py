"""Versioned model checkpoints on disk: `models/<kind>/<version>/` holding `model.pt` (weights) and
`metadata.json` (config, data, metrics, creation time). Versions are `v1`, `v2`, ...; "latest" is the highest."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import PredictionError

_VERSION = re.compile(r"^v(\d+)$")


def list_versions(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in directory.iterdir()
             if p.is_dir() and (m := _VERSION.match(p.name)) and (p / "metadata.json").exists()]
    return [name for _, name in sorted(found)]


def resolve_version(directory: Path, version: str = "latest") -> Path:
    versions = list_versions(directory)
    if version == "latest":
        if not versions:
            raise PredictionError(f"No trained model in '{directory}'; train one first (orchestrator train ...)")
        version = versions[-1]
    path = directory / version
    if not (path / "metadata.json").exists():
        raise PredictionError(f"Model version '{version}' not found in '{directory}'; available: "
                              f"{', '.join(versions) or 'none'}")
    return path


def save_checkpoint(directory: Path, state: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write the next version under `directory` and return its folder."""
    versions = list_versions(directory)
    number = int(versions[-1][1:]) + 1 if versions else 1
    path = directory / f"v{number}"
    path.mkdir(parents=True, exist_ok=False)
    torch.save(state, path / "model.pt")
    meta = {"version": path.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **metadata}
    (path / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    return path


def load_checkpoint(directory: Path, version: str = "latest") -> tuple[dict[str, Any], dict[str, Any], Path]:
    path = resolve_version(directory, version)
    try:
        metadata = json.loads((path / "metadata.json").read_text())
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=False)
    except (OSError, json.JSONDecodeError, RuntimeError) as exc:
        raise PredictionError(f"Cannot read checkpoint '{path}': {exc}") from None
    return state, metadata, path

"""Write a finished benchmark to a folder: tidy results (CSV and Parquet), summary, throughput, the config used,
the printed tables as markdown, and the plots."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from ..errors import OrchestratorError
from .plots import write_plots
from .report import TextTable
from .runner import BenchRun


def prepare_output_dir(out: str | Path) -> Path:
    """Create `out` if needed and check that files can be written in it (before a long run, not after)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OrchestratorError(f"Cannot write to output folder '{out}': {exc.strerror or exc}") from None
    return out


def write_outputs(run: BenchRun, summary: pd.DataFrame, tables: list[TextTable], out: str | Path) -> list[Path]:
    """Write every output file under `out` (created if needed); returns the paths written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrchestratorError(f"Cannot create output folder '{out}': {exc}") from None
    written = []
    run.results.to_csv(out / "results.csv", index=False)
    run.results.to_parquet(out / "results.parquet", engine="pyarrow", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    run.throughput.to_csv(out / "throughput.csv", index=False)
    (out / "config.yaml").write_text(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
    (out / "tables.md").write_text("\n\n".join(t.to_markdown() for t in tables) + "\n")
    written += [out / n for n in ("results.csv", "results.parquet", "summary.csv", "throughput.csv",
                                  "config.yaml", "tables.md")]
    written += write_plots(summary, list(dict.fromkeys(run.config.policies)), out)
    return written

"""How task results are encoded for the store: small values inline (JSON or pickle), larger ones as pickle
files, pandas DataFrames and pyarrow Tables as Parquet files under the store's `storage_dir`."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError, StoreInvalidError

INLINE_LIMIT = 64 * 1024  # bytes: an encoded value up to this size is kept in the results table
REF_PREFIX = "result://"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,149}$")


@dataclass(frozen=True, slots=True)
class EncodedResult:
    kind: str  # inline | file | parquet
    format: str  # json | pickle | pandas | arrow
    data: bytes | None  # the bytes for inline and pickle-file results
    table: Any = None  # the pyarrow.Table to write for parquet results


def result_ref(run_id: str, task_id: str) -> str:
    """The reference a task's result is known by: `result://<run_id>/<task_id>` (neither contains '/')."""
    return f"{REF_PREFIX}{run_id}/{task_id}"


def parse_ref(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or not ref.startswith(REF_PREFIX) or "/" not in ref[len(REF_PREFIX):]:
        raise StoreInvalidError(f"'{ref}' is not a result reference; expected {REF_PREFIX}<run_id>/<task_id> "
                         "as returned by Store.save_result()")
    run_id, task_id = ref[len(REF_PREFIX):].split("/", 1)
    return run_id, task_id


def relative_path(run_id: str, task_id: str, suffix: str) -> str:
    """`<run_id>/<task_id><suffix>`; a task id that is not a safe file name is replaced by a slug and hash."""
    name = task_id
    if not _SAFE_NAME.match(task_id):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", task_id).strip("._")[:80] or "task"
        name = f"{slug}-{hashlib.sha256(task_id.encode()).hexdigest()[:16]}"
    return f"{run_id}/{name}{suffix}"


def encode(value: Any) -> EncodedResult:
    table, fmt = _as_arrow_table(value)
    if table is not None:
        return EncodedResult("parquet", fmt, None, table)
    data = _as_json(value)
    if data is not None and len(data) <= INLINE_LIMIT:
        return EncodedResult("inline", "json", data)
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise StoreInvalidError(f"Cannot store a result of type {type(value).__name__}: it cannot be pickled ({exc}); "
                         "return plain data, a DataFrame or a pyarrow Table") from exc
    return EncodedResult("inline" if len(data) <= INLINE_LIMIT else "file", "pickle", data)


def decode_bytes(fmt: str, data: bytes) -> Any:
    if fmt == "json":
        return json.loads(data)
    if fmt == "pickle":
        return pickle.loads(data)  # the store is trusted: only the orchestrator writes it
    raise StoreError(f"Unknown inline result format '{fmt}'")


def suffix_for(kind: str) -> str:
    return ".parquet" if kind == "parquet" else ".pkl"


def write_file(path: Path, encoded: EncodedResult) -> int:
    """Write atomically (temporary file, then rename) and return the size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        if encoded.kind == "parquet":
            os.close(fd)
            import pyarrow.parquet as pq

            pq.write_table(encoded.table, tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(encoded.data or b"")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def read_file(path: Path, kind: str, fmt: str) -> Any:
    if kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pandas() if fmt == "pandas" else table
    return decode_bytes(fmt, path.read_bytes())


def _as_arrow_table(value: Any) -> tuple[Any, str]:
    module = type(value).__module__
    if module.startswith("pyarrow"):
        import pyarrow as pa

        if isinstance(value, pa.Table):
            return value, "arrow"
    elif module.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            import pyarrow as pa

            try:
                return pa.Table.from_pandas(value), "pandas"
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
                return None, ""  # columns of arbitrary Python objects: pickle it instead
    return None, ""


_JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def _as_json(value: Any) -> bytes | None:
    """JSON bytes if `value` survives a JSON round trip unchanged (so tuples, int keys, NaN go to pickle)."""
    if not isinstance(value, _JSON_TYPES):
        return None
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    data = text.encode()
    if len(data) > INLINE_LIMIT:
        return None
    try:
        back = json.loads(data)
        same = back == value and _same_types(back, value)
    except RecursionError:
        return None
    return data if same else None


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b))
    return True

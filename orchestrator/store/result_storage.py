"""Where task results are kept: a row of the `results` table, holding a small value inline or naming a file
under the store's `storage_dir` for a large one. How a value is encoded is `results.py`'s business."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from ..errors import StoreError, StoreNotFoundError
from . import results as result_codec
from .runs import RUN_ID, unknown_task
from .schema import ResultRow
from .transactions import StoreBase

R = ResultRow.__table__


class ResultStorage(StoreBase):
    """Saving and loading task results."""

    def save_result(self, run_id: str, task_id: str, value: Any) -> str:
        """Store a task's result and return its reference (`result://<run_id>/<task_id>`); replaces any earlier.

        Encoded values up to 64 KiB stay in the database (JSON when the value round-trips through JSON,
        else pickle); larger ones become `<storage_dir>/<run_id>/<task_id>.pkl`; pandas DataFrames and pyarrow
        Tables become `<storage_dir>/<run_id>/<task_id>.parquet`.
        """
        encoded = result_codec.encode(value)
        relative: str | None = None
        size = len(encoded.data) if encoded.data is not None else 0
        if encoded.kind != "inline":
            if not RUN_ID.match(run_id):  # never a path from a run id the store would not have created
                raise unknown_task(run_id, task_id)
            relative = result_codec.relative_path(run_id, task_id, result_codec.suffix_for(encoded.kind))
            try:
                size = result_codec.write_file(self.storage_dir / relative, encoded)
            except OSError as exc:
                raise StoreError(f"Cannot write the result of task '{task_id}' under storage_dir "
                                 f"'{self.storage_dir}': {exc}") from exc
        row = {"run_id": run_id, "task_id": task_id, "kind": encoded.kind, "format": encoded.format,
               "inline": encoded.data if encoded.kind == "inline" else None, "path": relative, "size": size,
               "created_at": time.time()}

        def unknown() -> StoreError:
            if relative is not None:
                (self.storage_dir / relative).unlink(missing_ok=True)
            return unknown_task(run_id, task_id)

        with self._transaction("save result", on_conflict=unknown) as conn:
            old_path = conn.execute(sa.select(R.c.path).where(R.c.run_id == run_id, R.c.task_id == task_id)
                                    ).scalar()
            statement = self._insert_fn()(R).values(**row)
            conn.execute(statement.on_conflict_do_update(
                index_elements=["run_id", "task_id"],
                set_={k: statement.excluded[k] for k in row if k not in ("run_id", "task_id")}))
        if old_path and old_path != relative:
            (self.storage_dir / old_path).unlink(missing_ok=True)
        return result_codec.result_ref(run_id, task_id)

    def load_result(self, result_ref: str) -> Any:
        """The value saved under `result_ref` (as `save_result` returned it)."""
        run_id, task_id = result_codec.parse_ref(result_ref)
        with self._connection("load result") as conn:
            row = conn.execute(sa.select(R.c.kind, R.c.format, R.c.inline, R.c.path).where(
                R.c.run_id == run_id, R.c.task_id == task_id)).first()
        if row is None:
            raise StoreNotFoundError(f"No result is stored for task '{task_id}' of workflow run '{run_id}' "
                             f"(reference '{result_ref}')")
        kind, fmt, inline, relative = row
        if kind == "inline":
            return result_codec.decode_bytes(fmt, bytes(inline))
        path = self.storage_dir / relative
        if not path.exists():
            raise StoreNotFoundError(f"The result file of task '{task_id}' of run '{run_id}' is missing: '{path}'. "
                             "Open the store with the storage_dir that saved it (a shared folder when "
                             "tasks run on several machines)")
        return result_codec.read_file(path, kind, fmt)

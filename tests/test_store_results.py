"""Task results in the store: inline (JSON or pickle), pickle files and Parquet files, on SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from orchestrator.errors import StoreError
from orchestrator.model import TaskSpec, Workflow
from orchestrator.store import Store


@pytest.fixture
def store(store_url, tmp_path):
    with Store.open(store_url, storage_dir=tmp_path / "blobs") as s:
        yield s


@pytest.fixture
def run_id(store):
    return store.create_workflow(Workflow(name="r", tasks=[TaskSpec(id="a"), TaskSpec(id="b"),
                                                           TaskSpec(id="odd:id\\x")]), "fifo")


def stored_row(store: Store, run_id: str, task_id: str):
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT kind, format, path, size FROM results WHERE run_id = :r AND task_id = :t"),
                            {"r": run_id, "t": task_id}).one()


SMALL_VALUES = [
    ({"rows": 3, "names": ["x", "y"], "ok": True, "score": 0.5, "none": None}, "json"),
    ((1, 2, 3), "pickle"),  # a tuple would come back from JSON as a list
    ({1: "int keys"}, "pickle"),
    (float("nan"), "pickle"),
    (b"raw bytes", "pickle"),
    (None, "json"),
]


def test_small_values_are_inline_and_round_trip_with_their_type(store, run_id):
    for value, fmt in SMALL_VALUES:
        ref = store.save_result(run_id, "a", value)
        assert ref == f"result://{run_id}/a"
        back = store.load_result(ref)
        if value != value:  # NaN
            assert back != back
        else:
            assert back == value and type(back) is type(value)
        kind, stored_fmt, path, _ = stored_row(store, run_id, "a")
        assert (kind, stored_fmt, path) == ("inline", fmt, None)
    assert not (store.storage_dir / run_id).exists()


def test_large_values_become_pickle_files(store, run_id):
    value = {"blob": b"\x01" * 200_000, "n": 7}
    ref = store.save_result(run_id, "b", value)
    assert store.load_result(ref) == value
    kind, fmt, path, size = stored_row(store, run_id, "b")
    assert (kind, fmt, path) == ("file", "pickle", f"{run_id}/b.pkl")
    assert (store.storage_dir / path).stat().st_size == size > 200_000


def test_dataframes_and_arrow_tables_become_parquet(store, run_id):
    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}, index=[10, 20, 30])
    ref = store.save_result(run_id, "a", frame)
    pd.testing.assert_frame_equal(store.load_result(ref), frame)
    assert stored_row(store, run_id, "a")[:3] == ("parquet", "pandas", f"{run_id}/a.parquet")

    table = pa.table({"v": [1.5, 2.5]})
    ref = store.save_result(run_id, "b", table)
    assert store.load_result(ref).equals(table)
    assert stored_row(store, run_id, "b")[:2] == ("parquet", "arrow")


def test_replacing_a_file_result_removes_the_old_file(store, run_id):
    store.save_result(run_id, "a", pd.DataFrame({"x": [1]}))
    old = store.storage_dir / run_id / "a.parquet"
    assert old.exists()
    ref = store.save_result(run_id, "a", 42)  # e.g. a retry that returned something else
    assert store.load_result(ref) == 42 and not old.exists()


def test_task_ids_that_are_not_file_names_are_stored_safely(store, run_id):
    ref = store.save_result(run_id, "odd:id\\x", b"z" * 100_000)
    assert store.load_result(ref) == b"z" * 100_000
    path = stored_row(store, run_id, "odd:id\\x")[2]
    assert path.startswith(f"{run_id}/odd_id_x-") and path.endswith(".pkl")


def test_bad_references_and_missing_results_are_named(store, run_id):
    with pytest.raises(StoreError, match="not a result reference"):
        store.load_result("s3://bucket/key")
    with pytest.raises(StoreError, match="No result is stored for task 'b'"):
        store.load_result(f"result://{run_id}/b")
    with pytest.raises(StoreError, match="No task 'ghost'"):
        store.save_result(run_id, "ghost", b"q" * 100_000)
    assert list((store.storage_dir / run_id).glob("*")) == []  # the orphan file was removed

    ref = store.save_result(run_id, "a", b"q" * 100_000)
    (store.storage_dir / run_id / "a.pkl").unlink()
    with pytest.raises(StoreError, match="result file .* is missing"):
        store.load_result(ref)

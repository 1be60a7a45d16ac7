"""`Store`: the durable state of workflow runs in SQLite or PostgreSQL, with an event outbox written in the
same transaction as every state change it describes. The one entry point: open it with `Store.open()`.

Each part of it is a module of its own, all standing on `transactions.StoreBase`: runs (`runs.py`), batches of
state changes (`batches.py`, checked by `batch_plan.py` against the one transition table in
`orchestrator.states`), history (`history.py`), the outbox (`outbox.py`), the lease (`lease.py`), API keys
(`api_keys.py`), task results (`result_storage.py`) and paged reads (`pages.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from sqlalchemy.engine import URL, Engine

from .api_keys import ApiKeys
from .batches import Batches
from .database import (
    WalCheckpointer,
    create_engine,
    mask_url,
    parse_url,
    upgrade_to_head,
)
from .history import History
from .lease import Lease
from .outbox import Outbox
from .pages import Pages
from .result_storage import ResultStorage
from .runs import Runs, new_run_id
from .transactions import open_error

__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "Store", "new_run_id"]

DATA_DIR_ENV = "ORCHESTRATOR_DATA_DIR"
DEFAULT_DATA_DIR = ".orchestrator"


class Store(Runs, Batches, History, Outbox, Lease, ApiKeys, ResultStorage, Pages):
    """The orchestrator's durable state. Open with `Store.open()`; thread-safe; close with `close()`."""

    def __init__(self, engine: Engine, url: URL, data_dir: Path, storage_dir: Path):
        """Use `Store.open()`, which also migrates the schema."""
        self.engine = engine
        self.url = mask_url(url)  # password masked
        self.dialect = engine.dialect.name  # "sqlite" | "postgresql"
        self.data_dir = data_dir
        self.storage_dir = storage_dir
        self._checkpointer = WalCheckpointer(engine) if self.dialect == "sqlite" else None

    @classmethod
    def open(cls, url: str | None = None, data_dir: str | Path | None = None,
             storage_dir: str | Path | None = None) -> Store:
        """Open (creating and migrating if needed) the store at `url`.

        `url` None means SQLite at `<data_dir>/state.db`; `data_dir` defaults to $ORCHESTRATOR_DATA_DIR or
        `./.orchestrator`. Results too large to keep inline go to `storage_dir`, by default `<data_dir>/results`
        (for an explicit SQLite URL without `data_dir`: a `results` folder beside the database file).
        """
        explicit_data_dir = data_dir is not None
        data = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()
        if url is None:
            url = f"sqlite:///{data / 'state.db'}"
        parsed = parse_url(url)
        if storage_dir is not None:
            storage = Path(storage_dir).expanduser().resolve()
        elif parsed.get_backend_name() == "sqlite" and not explicit_data_dir:
            storage = Path(parsed.database).expanduser().resolve().parent / "results"
        else:
            storage = data / "results"
        engine = None
        try:
            engine = create_engine(parsed)
            upgrade_to_head(engine)
        except Exception as exc:
            if engine is not None:
                engine.dispose()
            raise open_error(parsed, exc) from exc
        return cls(engine, parsed, data, storage)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url_masked(self) -> str:
        """The store URL with its password masked (the same as `url`)."""
        return self.url

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

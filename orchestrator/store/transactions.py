"""The plumbing every part of the store stands on: `StoreBase` opens write transactions and read connections and
turns driver errors into the project's errors; `bulk_insert` writes many rows at once on either database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine

from ..errors import StoreConflictError, StoreError, StoreUnavailableError
from .database import mask_url

# SQLite binds at most 999 parameters per statement before 3.32, 32766 since.
SQLITE_IN_CHUNK = 8000 if sqlite3.sqlite_version_info >= (3, 32) else 900


class StoreBase:
    """The engine of a store and the transactions on it; every part of `Store` (runs, batches, history, ...)
    is a subclass. `Store.__init__` sets the attributes."""

    engine: Engine
    url: str  # the store URL, password masked
    dialect: str  # "sqlite" | "postgresql"
    data_dir: Path
    storage_dir: Path  # where results too large for the database go

    @contextmanager
    def _transaction(self, action: str, on_conflict: Callable[[], StoreError] | None = None
                     ) -> Iterator[sa.Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); database errors become StoreError.

        `on_conflict` builds the error for a violated constraint (duplicate key, unknown foreign key).
        """
        dbapi = self.engine.dialect.loaded_dbapi  # raw driver errors come from COPY on PostgreSQL
        try:
            with self.engine.connect() as conn:
                conn.execution_options(store_write=True)
                with conn.begin():
                    yield conn
        except (sa.exc.IntegrityError, dbapi.IntegrityError) as exc:
            if on_conflict is not None:
                raise on_conflict() from exc
            raise StoreConflictError(f"The store at '{self.url}' refused to {action}: {_cause(exc)}") from exc
        except (sa.exc.DBAPIError, dbapi.Error) as exc:
            raise _database_error(exc, f"Cannot {action} in the store at '{self.url}'") from exc

    @contextmanager
    def _connection(self, action: str) -> Iterator[sa.Connection]:
        """A connection for reading; database errors become StoreError."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            with self.engine.connect() as conn:
                yield conn
        except (sa.exc.DBAPIError, dbapi.Error) as exc:
            raise _database_error(exc, f"Cannot {action} in the store at '{self.url}'") from exc

    def _insert_fn(self):  # type: ignore[no-untyped-def]
        """The dialect's INSERT, which has `on_conflict_do_update`."""
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert


def bulk_insert(conn: sa.Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert many rows fast, inside the connection's transaction: COPY on PostgreSQL, one prepared executemany
    on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.dbapi_connection.cursor()  # same connection, same transaction
        try:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        finally:
            cursor.close()
    else:
        sqlite_executemany(
            conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)


def sqlite_executemany(conn: sa.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """executemany on the connection's own sqlite3 cursor, inside its transaction: the hot path of every
    orchestrator iteration, where SQLAlchemy's statement bookkeeping costs more than the insert itself.
    Returns the rows changed."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.executemany(sql, rows)
        return cursor.rowcount
    finally:
        cursor.close()


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """`items` in slices of at most `size` (for IN lists within SQLite's limit on bound parameters)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _database_error(exc: BaseException, what: str) -> StoreError:
    """A database error as the store's error: StoreUnavailableError when the database could not be reached or
    dropped the connection (refused, terminated, locked, timed out: worth retrying), else StoreError."""
    orig = getattr(exc, "orig", None) or exc
    transient = (isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError,
                                  sa.exc.TimeoutError))
                 or getattr(exc, "connection_invalidated", False)
                 or type(orig).__name__ in ("OperationalError", "InterfaceError", "AdminShutdown",
                                            "ConnectionTimeout", "CannotConnectNow")
                 or any(c.__name__ in ("OperationalError", "InterfaceError") for c in type(orig).__mro__))
    kind = StoreUnavailableError if transient else StoreError
    return kind(f"{what}: {_cause(exc)}")


def _cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(line.strip() for line in str(orig).splitlines() if line.strip())
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__


def open_error(url: URL, exc: BaseException) -> StoreError:
    """Why the store at `url` could not be opened or migrated, as a StoreError that says what to check."""
    if isinstance(exc, StoreError):
        return exc
    masked = mask_url(url)
    if isinstance(exc, (sa.exc.NoSuchModuleError, ModuleNotFoundError)):
        return StoreError(f"Cannot open the state store at '{masked}': its database driver is not installed "
                          f"({exc}); PostgreSQL URLs need psycopg: postgresql+psycopg://...")
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        return StoreError(f"Cannot migrate the state store at '{masked}': {exc}. The database may have been "
                          "created by a newer version of the orchestrator")
    hint = ("check that the folder exists and is writable" if url.get_backend_name() == "sqlite"
            else "check that the server is running and the host, port, user, password and database are right")
    kind = type(_database_error(exc, "")) if isinstance(exc, (sa.exc.DBAPIError, sa.exc.InterfaceError)) else StoreError
    return kind(f"Cannot open the state store at '{masked}': {_cause(exc)}; {hint}")

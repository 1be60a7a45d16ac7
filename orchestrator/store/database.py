"""Opening the database behind the store: URL checks, engine set-up (SQLite pragmas, PostgreSQL driver) and
running the Alembic migrations to `head` from code, with no alembic.ini."""

from __future__ import annotations

import os

import json
import math
import re
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from ..errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_xact_lock keys: one serialises migrations, one makes outbox ids commit in id order.
MIGRATION_LOCK_KEY = 0x6F726368_0001  # "orch" 1
OUTBOX_LOCK_KEY = 0x6F726368_0002  # "orch" 2


def mask_url(url: str | URL) -> str:
    """The URL as text with its password replaced by ***, safe for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def parse_url(url: str) -> URL:
    """Parse and normalise a store URL: `postgres://` and `postgresql://` get the psycopg (v3) driver."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(
            f"Cannot parse the store URL '{mask_url(url)}': {exc}. "
            "Use sqlite:///path/to/state.db or postgresql+psycopg://user:password@host:5432/database"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(
            f"The store URL '{mask_url(parsed)}' names database '{backend}', which the store does not support; "
            "use sqlite:///path/to/state.db or postgresql+psycopg://user:password@host:5432/database"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StoreError(
            f"The store URL '{mask_url(parsed)}' is an in-memory SQLite database; the store needs a file "
            "(sqlite:///path/to/state.db) so that several connections and processes share it"
        )
    return parsed


def create_engine(url: URL) -> Engine:
    """An engine for `url`. SQLite: WAL, foreign keys, busy timeout, and BEGIN IMMEDIATE for writes."""
    if url.get_backend_name() == "sqlite":
        Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, json_serializer=json_dumps,
                                  connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(url, json_serializer=json_dumps, pool_pre_ping=True,
                            connect_args={"connect_timeout": 10})


SQLITE_SYNC = os.environ.get("ORCHESTRATOR_SQLITE_SYNC", "NORMAL").upper()
if SQLITE_SYNC not in ("OFF", "NORMAL", "FULL", "EXTRA"):
    raise ValueError(f"ORCHESTRATOR_SQLITE_SYNC={SQLITE_SYNC!r}: use NORMAL, FULL or EXTRA")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own handling is lazy and
        # never covers SELECTs, so a read-check-write would not be atomic).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL in WAL mode: a commit survives the death of any process (the orchestrator actor, the driver);
        # only a power loss or OS crash can drop the last commits. FULL also fsyncs every commit (about 2.5 ms
        # each here); set ORCHESTRATOR_SQLITE_SYNC=FULL for that.
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNC}")
        # Checkpoints (copying the WAL into the database file, with an fsync) run in `WalCheckpointer`'s
        # thread, not inside whichever commit crosses the WAL size limit: that commit would stall for the fsync.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that upgrades from read to write in
        # WAL mode fails with SQLITE_BUSY at once instead of waiting out the busy timeout.
        mode = "IMMEDIATE" if conn.get_execution_options().get("store_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(connection: sa.Connection | None = None, url: str | None = None):  # -> alembic Config
    """An Alembic config for the store's migrations, built in code (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Run `alembic upgrade head` in one transaction; concurrent openers wait for each other."""
    from alembic import command

    with engine.connect() as conn:
        conn.execution_options(store_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            command.upgrade(alembic_config(conn), "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays (policies log features as numpy values)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_dumps(value: Any) -> str:
    """The store's JSON encoder: numpy values become lists/numbers, NaN and infinities become null.

    orjson first (an order of magnitude faster: every state change writes an event payload); the standard
    library for what it refuses (e.g. integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return json.dumps(_finite(json.loads(json.dumps(value, default=_json_default))),
                          separators=(",", ":"))


_ENCODER = json.JSONEncoder(allow_nan=False, default=_json_default, separators=(",", ":"))
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class WalCheckpointer:
    """Checkpoints an SQLite database's write-ahead log from a background thread, every `every_s` seconds
    (PASSIVE: never blocks a writer), and once more when stopped. The last connection to close also
    checkpoints, as SQLite always does."""

    def __init__(self, engine: Engine, every_s: float = 1.0):
        import threading

        self.engine = engine
        self.every_s = every_s
        self._stop = threading.Event()
        self.checkpoints = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").fetchall()
            self.checkpoints += 1
        except Exception:  # noqa: BLE001 - busy or closing: the next round (or the last close) checkpoints
            self.errors += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.checkpoint()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=10)
            self.checkpoint()

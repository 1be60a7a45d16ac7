"""The outbox: every state change appends its events in its own transaction (`append_events`); sinks read them
in id order and keep their cursors here. Workflows refused before they became runs are recorded here too."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .database import OUTBOX_LOCK_KEY, json_dumps
from .records import EventRecord
from .schema import EventDeliveryRow, EventRow
from .text import clean, clip
from .transactions import StoreBase, bulk_insert

E = EventRow.__table__
C = EventDeliveryRow.__table__

EVENT_COLUMNS = ("run_id", "task_id", "type", "payload", "created_at")  # what `append_events` writes
EVENT_RECORD_COLUMNS = (E.c.id, E.c.run_id, E.c.task_id, E.c.type, E.c.payload, E.c.created_at)  # EventRecord's


def append_events(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Append (run_id, task_id, type, payload JSON, created_at) rows to the outbox, in the connection's
    transaction."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # Held to commit: outbox ids then commit in id order, so a reader that has seen id n will never
        # later find a smaller id appear (SQLite writers are serialised already).
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
    bulk_insert(conn, "events", EVENT_COLUMNS, rows)


class Outbox(StoreBase):
    """Reading the outbox, recording rejected workflows, and the sinks' delivery cursors."""

    def events(self, run_id: str | None = None, after_id: int = 0, limit: int = 1000,
               type_prefix: str | None = None) -> list[EventRecord]:
        """Outbox events with id > `after_id`, oldest first."""
        query = sa.select(*EVENT_RECORD_COLUMNS).where(E.c.id > after_id).order_by(E.c.id).limit(limit)
        if run_id is not None:
            query = query.where(E.c.run_id == run_id)
        if type_prefix:
            query = query.where(E.c.type.startswith(type_prefix, autoescape=True))
        with self._connection("read events") as conn:
            return [EventRecord(*row) for row in conn.execute(query)]

    def latest_event_id(self) -> int:
        with self._connection("read events") as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(E.c.id), 0))).scalar_one()

    def record_rejection(self, error: str, name: str | None = None, source: str | None = None) -> int:
        """Record a workflow that was refused before it became a run (invalid file, cycle, too large, unknown
        policy, a task no node can hold) as a `workflow.rejected` event; returns the event id."""
        now = time.time()
        payload = {"name": name, "source": source, "error": clip(clean(error)), "at": now}
        with self._transaction("record a rejected workflow") as conn:
            append_events(conn, [(None, None, "workflow.rejected", json_dumps(payload), now)])
            return int(conn.execute(sa.select(sa.func.max(E.c.id))).scalar() or 0)

    def rejections(self, limit: int = 20) -> list[EventRecord]:
        """The latest `workflow.rejected` events, newest first."""
        with self._connection("read rejected workflows") as conn:
            rows = conn.execute(sa.select(*EVENT_RECORD_COLUMNS)
                                .where(E.c.type == "workflow.rejected").order_by(E.c.id.desc()).limit(limit))
            return [EventRecord(*row) for row in rows]

    # ------------------------------------------------------------------ event delivery cursors

    def sink_cursor(self, sink: str) -> int | None:
        """The id of the last event `sink` accepted; None if the sink has never been seen."""
        with self._connection("read sink cursor") as conn:
            return conn.execute(sa.select(C.c.last_event_id).where(C.c.sink == sink)).scalar()

    def advance_sink_cursor(self, sink: str, last_event_id: int) -> None:
        """Move the sink's cursor forward to `last_event_id` (never backwards: see `set_sink_cursor`)."""
        statement = self._insert_fn()(C).values(sink=sink, last_event_id=last_event_id, updated_at=time.time())
        statement = statement.on_conflict_do_update(
            index_elements=["sink"],
            set_={"last_event_id": statement.excluded.last_event_id, "updated_at": statement.excluded.updated_at},
            where=C.c.last_event_id < statement.excluded.last_event_id,
        )
        with self._transaction("advance sink cursor") as conn:
            conn.execute(statement)

    def set_sink_cursor(self, sink: str, last_event_id: int) -> None:
        """Set the sink's cursor, backwards too (to replay events); dispatchers read it when they start."""
        statement = self._insert_fn()(C).values(sink=sink, last_event_id=last_event_id, updated_at=time.time())
        statement = statement.on_conflict_do_update(
            index_elements=["sink"],
            set_={"last_event_id": statement.excluded.last_event_id, "updated_at": statement.excluded.updated_at})
        with self._transaction("set sink cursor") as conn:
            conn.execute(statement)

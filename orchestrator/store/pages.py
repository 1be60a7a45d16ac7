"""Reading runs, tasks, executions and events a page at a time, for the HTTP API: each listing follows a stable
total order and resumes after the last key it returned, so rows written between two pages are never repeated
and never make an earlier row skipped (keyset pagination; the cursor is that key, opaque to the caller)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import sqlalchemy as sa

from ..errors import StoreInvalidError
from ..states import TaskStatus, WorkflowStatus
from .history import EXECUTION_COLUMNS, X
from .outbox import EVENT_RECORD_COLUMNS, E
from .records import (
    EventRecord,
    ExecutionRecord,
    Item,
    Page,
    TaskRecord,
    WorkflowRecord,
)
from .runs import (
    TASK_COLUMNS,
    WORKFLOW_COLUMNS,
    T,
    W,
    require_run,
    task_record,
    unknown_task,
    workflow_record,
)
from .transactions import StoreBase

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 1000
_CURSOR_VERSION = 1
_CHECKSUM_BYTES = 8


class Pages(StoreBase):
    """`page_runs`, `page_tasks`, `page_executions`, `page_events`: each returns a `Page`; pass its `next_cursor`,
    with the same other arguments, for the next page."""

    def page_runs(self, status: WorkflowStatus | str | None = None, name: str | None = None,
                  cursor: str | None = None, limit: int = DEFAULT_PAGE_LIMIT) -> Page[WorkflowRecord]:
        """Runs, newest first (by `created_at`, then run id), optionally only those with `status` or named
        `name`. A run created after the walk began comes before its first page, so the walk does not show it."""
        limit = _check_limit(limit)
        status_value = _check_status(status, WorkflowStatus)
        listing = _Listing("page_runs", {"status": status_value, "name": name})
        after = listing.decode(cursor, (float, str))
        query = sa.select(*WORKFLOW_COLUMNS).order_by(W.c.created_at.desc(), W.c.run_id).limit(limit + 1)
        if status_value is not None:
            query = query.where(W.c.status == status_value)
        if name is not None:
            query = query.where(W.c.name == name)
        if after is not None:
            created_at, run_id = after
            query = query.where(sa.or_(W.c.created_at < created_at,
                                       sa.and_(W.c.created_at == created_at, W.c.run_id > run_id)))
        with self._connection("list workflow runs") as conn:
            rows = conn.execute(query).all()
        return listing.page([workflow_record(row) for row in rows], limit, lambda r: (r.created_at, r.run_id))

    def page_tasks(self, run_id: str, status: TaskStatus | str | None = None, cursor: str | None = None,
                   limit: int = DEFAULT_PAGE_LIMIT) -> Page[TaskRecord]:
        """The run's tasks in the order of the workflow spec (`position`), optionally only those with `status`.
        StoreNotFoundError if there is no such run."""
        limit = _check_limit(limit)
        status_value = _check_status(status, TaskStatus)
        listing = _Listing("page_tasks", {"run_id": run_id, "status": status_value})
        after = listing.decode(cursor, (int,))
        query = (sa.select(*TASK_COLUMNS).where(T.c.run_id == run_id).order_by(T.c.position).limit(limit + 1))
        if status_value is not None:
            query = query.where(T.c.status == status_value)
        if after is not None:
            query = query.where(T.c.position > after[0])
        with self._connection("read tasks") as conn:
            rows = conn.execute(query).all()
            if not rows:
                require_run(conn, run_id)
        return listing.page([task_record(row) for row in rows], limit, lambda r: (r.position,))

    def page_executions(self, run_id: str, task_id: str | None = None, cursor: str | None = None,
                        limit: int = DEFAULT_PAGE_LIMIT) -> Page[ExecutionRecord]:
        """The run's task attempts in the order they were recorded (by id), optionally of one task only.
        StoreNotFoundError if there is no such run, or no such task in it."""
        limit = _check_limit(limit)
        listing = _Listing("page_executions", {"run_id": run_id, "task_id": task_id})
        after = listing.decode(cursor, (int,))
        query = sa.select(*EXECUTION_COLUMNS).where(X.c.run_id == run_id).order_by(X.c.id).limit(limit + 1)
        if task_id is not None:
            query = query.where(X.c.task_id == task_id)
        if after is not None:
            query = query.where(X.c.id > after[0])
        with self._connection("read executions") as conn:
            rows = conn.execute(query).all()
            if not rows:
                require_run(conn, run_id)
                if task_id is not None and conn.execute(sa.select(T.c.task_id).where(
                        T.c.run_id == run_id, T.c.task_id == task_id)).first() is None:
                    raise unknown_task(run_id, task_id)
        return listing.page([ExecutionRecord(*row) for row in rows], limit, lambda r: (r.id,))

    def page_events(self, run_id: str | None = None, type_prefix: str | None = None, cursor: str | None = None,
                    limit: int = DEFAULT_PAGE_LIMIT) -> Page[EventRecord]:
        """Outbox events oldest first (by id), of one run or of all, optionally only those whose type starts with
        `type_prefix` (e.g. "task."). Events written after the walk began come on its later pages.
        StoreNotFoundError if `run_id` names no run."""
        limit = _check_limit(limit)
        type_prefix = type_prefix or None
        listing = _Listing("page_events", {"run_id": run_id, "type_prefix": type_prefix})
        after = listing.decode(cursor, (int,))
        query = sa.select(*EVENT_RECORD_COLUMNS).order_by(E.c.id).limit(limit + 1)
        if run_id is not None:
            query = query.where(E.c.run_id == run_id)
        if type_prefix is not None:
            query = query.where(E.c.type.startswith(type_prefix, autoescape=True))
        if after is not None:
            query = query.where(E.c.id > after[0])
        with self._connection("read events") as conn:
            rows = conn.execute(query).all()
            if not rows and run_id is not None:
                require_run(conn, run_id)
        return listing.page([EventRecord(*row) for row in rows], limit, lambda r: (r.id,))


class _Listing:
    """One listing with its filters (`arguments`): writes the cursors of its pages and reads them back.

    A cursor is urlsafe base64 of a checksum and [version, listing name, digest of the filters, last key]: a
    cursor that was altered or cut short, or that another listing or other filters gave out, is refused with
    an StoreInvalidError that names the parameter. The checksum is not a signature; a forged cursor gains nothing,
    as it only says where a listing resumes."""

    def __init__(self, name: str, arguments: dict[str, Any]):
        self.name = name
        self.arguments = arguments
        self.digest = hashlib.sha256(json.dumps([name, arguments], sort_keys=True).encode()).hexdigest()[:16]

    def page(self, items: list[Item], limit: int, key: Callable[[Item], tuple[Any, ...]]) -> Page[Item]:
        """The page of the first `limit` of `items` (fetched with one more, to tell whether another page follows)."""
        if len(items) <= limit:
            return Page(tuple(items), None)
        return Page(tuple(items[:limit]), self.encode(key(items[limit - 1])))

    def encode(self, key: tuple[Any, ...]) -> str:
        body = json.dumps([_CURSOR_VERSION, self.name, self.digest, list(key)], separators=(",", ":")).encode()
        checksum = hashlib.sha256(body).digest()[:_CHECKSUM_BYTES]
        return base64.urlsafe_b64encode(checksum + body).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str | None, types: Sequence[type]) -> tuple[Any, ...] | None:
        """The key a cursor of this listing resumes after (None: from the start); StoreInvalidError if it is not one."""
        if cursor is None:
            return None
        shown = repr(cursor) if len(repr(cursor)) <= 40 else repr(cursor)[:36] + "...'"
        unchanged = "pass the next_cursor of the previous page unchanged, or no cursor for the first page"
        try:
            raw = base64.b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4), altchars=b"-_",
                                   validate=True)
            checksum, body = raw[:_CHECKSUM_BYTES], raw[_CHECKSUM_BYTES:]
        except (AttributeError, UnicodeError, binascii.Error, ValueError):
            raise StoreInvalidError(f"cursor {shown} is not a cursor of this store; {unchanged}") from None
        if not body or hashlib.sha256(body).digest()[:_CHECKSUM_BYTES] != checksum:
            raise StoreInvalidError(f"cursor {shown} was altered or cut short (its checksum does not match); {unchanged}")
        try:
            version, name, digest, key = json.loads(body)
        except (ValueError, TypeError):
            raise StoreInvalidError(f"cursor {shown} is not a cursor of this store; {unchanged}") from None
        if version != _CURSOR_VERSION:
            raise StoreInvalidError(f"cursor {shown} was given out by another version of the store; start again with "
                               "no cursor")
        if name != self.name:
            raise StoreInvalidError(f"cursor {shown} was given out by {name}, not {self.name}; pass each listing the "
                               f"next_cursor of its own pages, or no cursor for the first page")
        if digest != self.digest:
            filters = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
            raise StoreInvalidError(f"cursor {shown} was given out for other arguments than this call's ({self.name} "
                               f"with {filters}); pass the arguments of the call whose page gave it out, or no "
                               "cursor to start again")
        if (not isinstance(key, list) or len(key) != len(types)
                or not all(_is_a(value, kind) for value, kind in zip(key, types))):
            raise StoreInvalidError(f"cursor {shown} is not a cursor of this store; {unchanged}")
        return tuple(key)


def _is_a(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise StoreInvalidError(f"limit must be a whole number from 1 to {MAX_PAGE_LIMIT}, not {limit!r}")
    return limit


def _check_status(status: Enum | str | None, kind: type[Enum]) -> str | None:
    """The status filter as its stored text; StoreInvalidError if `kind` has no such status."""
    if status is None:
        return None
    try:
        return kind(status).value
    except ValueError:
        known = ", ".join(s.value for s in kind)
        raise StoreInvalidError(f"status must be one of {known} (or none for every status), not {status!r}") from None

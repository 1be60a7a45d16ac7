"""`EventDispatcher`: moves outbox events from the store to sinks, in id order, each sink at its own pace.

Each sink has a cursor (the id of the last event it accepted). A sink that fails keeps its cursor and is
retried with backoff; the others carry on. Every state change writes its event in the same transaction
as the change, so nothing committed is ever missed; delivery is at-least-once, consumers dedupe on `id`.

Outbox ids commit in id order (SQLite has one writer; PostgreSQL takes an advisory lock for the insert), so the
smallest sink cursor is a high-water mark: every event up to it has gone to every sink. `wait_delivered` blocks
on it (a condition notified as cursors advance), and `drain` brings the sinks up to date before a shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import OrchestratorError
from .schema import EventRow
from .sinks import DeliveryError, Sink
from .store import Store

log = logging.getLogger("orchestrator.events")


@dataclass(frozen=True, slots=True)
class SinkStatus:
    name: str
    cursor: int  # id of the last event delivered
    failures: int  # consecutive failed attempts; 0 when healthy
    last_error: str | None
    last_delivery_at: float | None


class EventDispatcher:
    """Deliver the store's outbox to `sinks`: call `deliver_once()`, or `start()` a thread per sink that polls
    every `poll_interval` seconds (sooner after `wake()`), backing off up to `max_backoff` while a sink fails.

    Durable sinks resume from their cursor in the store (from the first event for a sink never seen before);
    non-durable ones start at the newest event when the dispatcher first sees them.
    """

    def __init__(self, store: Store, sinks: Sequence[Sink], poll_interval: float = 0.2, batch_size: int = 500,
                 max_backoff: float = 30.0):
        names = [s.name for s in sinks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise OrchestratorError(f"Two sinks share the name '{duplicates[0]}'; give one of them another "
                                    "name= (the name keys its delivery cursor)")
        self.store = store
        self.sinks = list(sinks)
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self._cursors: dict[str, int] = {}
        self._failures: dict[str, int] = {s.name: 0 for s in sinks}
        self._errors: dict[str, str | None] = {s.name: None for s in sinks}
        self._delivered_at: dict[str, float | None] = {s.name: None for s in sinks}
        self._locks = {s.name: threading.Lock() for s in sinks}
        self._wake = {s.name: threading.Event() for s in sinks}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._delivered = threading.Condition()  # guards the cursors; notified whenever one moves
        latest = None
        for sink in self.sinks:  # a non-durable sink starts with the events that come after this point
            if not sink.durable:
                latest = self.store.latest_event_id() if latest is None else latest
                self._cursors[sink.name] = latest

    # ---------------------------------------------------------------- synchronous delivery

    def deliver_once(self) -> int:
        """Bring every sink up to date (or to its first failure); return how many events were delivered."""
        return sum(self._drain(sink) for sink in self.sinks)

    def status(self) -> list[SinkStatus]:
        return [SinkStatus(s.name, self._cursor(s), self._failures[s.name], self._errors[s.name],
                           self._delivered_at[s.name]) for s in self.sinks]

    def _cursor(self, sink: Sink) -> int:
        if sink.name not in self._cursors:
            if sink.durable:
                stored = self.store.sink_cursor(sink.name)
                self._set_cursor(sink, 0 if stored is None else stored)
            else:
                self._set_cursor(sink, self.store.latest_event_id())
        return self._cursors[sink.name]

    def _set_cursor(self, sink: Sink, event_id: int) -> None:
        with self._delivered:
            self._cursors[sink.name] = event_id
            self._delivered.notify_all()

    # ---------------------------------------------------------------- delivered up to: the high-water mark

    def delivered_up_to(self) -> int:
        """The high-water mark: every event with an id up to this one has been delivered to every sink (a sink
        whose cursor is not known yet counts as 0)."""
        with self._delivered:
            return self._high_water()

    def _high_water(self) -> int:
        return min((self._cursors.get(s.name, 0) for s in self.sinks), default=0)

    def _target(self, target: int | str | Sequence[str]) -> int:
        """The event id to wait for: `target` itself, or the newest stored event of the run(s) `target` names."""
        if isinstance(target, int):
            return target
        run_ids = [target] if isinstance(target, str) else list(target)
        if not run_ids:
            return 0
        E = EventRow.__table__
        try:
            with self.store.engine.connect() as conn:  # one index lookup: (run_id, id)
                return conn.execute(sa.select(sa.func.coalesce(sa.func.max(E.c.id), 0))
                                    .where(E.c.run_id.in_(run_ids))).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            raise OrchestratorError(f"Cannot read the events of {', '.join(run_ids)} from the store at "
                                    f"{self.store.url}: {exc}") from exc

    def wait_delivered(self, target: int | str | Sequence[str], timeout: float | None = None) -> bool:
        """Block until every sink has been delivered every event up to `target`: an event id, a run id or a list of
        run ids (then: the newest event of those runs now in the store; for a run that has ended, its final
        event). True once delivered; False when `timeout` seconds pass first (None: no limit), or when the
        dispatcher is stopped with that event not delivered.

        No polling: the delivery threads are woken at once, and each cursor that moves notifies the waiters."""
        event_id = self._target(target)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._delivered:
            if self._high_water() >= event_id:
                return True
        self.wake()
        with self._delivered:
            while self._high_water() < event_id:
                if self._stop.is_set():
                    return False
                if deadline is None:
                    self._delivered.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._delivered.wait(remaining)
        return True

    def behind(self, event_id: int) -> list[dict]:
        """The sinks that have not been delivered event `event_id` yet: name, cursor, consecutive failures and
        last error of each."""
        with self._delivered:
            cursors = {s.name: self._cursors.get(s.name, 0) for s in self.sinks}
        return [{"sink": s.name, "cursor": cursors[s.name], "failures": self._failures[s.name],
                 "error": self._errors[s.name]} for s in self.sinks if cursors[s.name] < event_id]

    def wait_runs_delivered(self, run_ids: Sequence[str], timeout: float | None = None) -> dict:
        """`wait_delivered` for the events of `run_ids`, as a report: {"delivered": bool, "event_id": the newest
        event of those runs, "behind": the sinks that do not have it yet (see `behind`)}."""
        event_id = self._target(list(run_ids))
        delivered = self.wait_delivered(event_id, timeout)
        return {"delivered": delivered, "event_id": event_id, "behind": [] if delivered else self.behind(event_id)}

    def drain(self, timeout: float = 10.0) -> int:
        """Before a shutdown: wait up to `timeout` seconds for every sink to be delivered every event committed so
        far. Returns how many of those events some sink still lacks (0: all delivered; -1: some, but the store could
        not count them), and logs a warning naming the sinks behind when not 0. Does not stop the dispatcher."""
        try:
            target = self.store.latest_event_id()
        except OrchestratorError as exc:
            log.warning("event sinks not drained: cannot read the outbox: %s", exc)
            return 0
        if not self._threads:  # not started (or stopped): deliver from this thread
            start = time.monotonic()
            while self._high_water() < target and time.monotonic() - start < timeout:
                if not self.deliver_once():
                    break
        elif self.wait_delivered(target, timeout):
            return 0
        if self._high_water() >= target:
            return 0
        left = self._undelivered(self._high_water(), target)
        behind = "; ".join(f"{b['sink']} at event {b['cursor']}" + (f" ({b['error']})" if b["error"] else "")
                           for b in self.behind(target))
        log.warning("event sinks not drained within %g s: %s event(s) left undelivered (up to event %d): %s; "
                    "they go out when an orchestrator next opens the store", timeout,
                    "?" if left is None else left, target, behind)
        return -1 if left is None else left

    def _undelivered(self, after_id: int, up_to: int) -> int | None:
        E = EventRow.__table__
        try:
            with self.store.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(E)
                                    .where(E.c.id > after_id, E.c.id <= up_to)).scalar_one()
        except sa.exc.SQLAlchemyError:
            return None

    def _drain(self, sink: Sink) -> int:
        """Deliver batches to one sink until it is caught up or fails; return how many events went out."""
        with self._locks[sink.name]:
            total = 0
            while not (self._threads and self._stop.is_set()):  # threads stop after their batch
                try:
                    cursor = self._cursor(sink)
                    events = self.store.events(after_id=cursor, limit=self.batch_size)
                except OrchestratorError as exc:
                    self._failed(sink, 0, exc)
                    return total
                if not events:
                    self._failures[sink.name] = 0
                    return total
                try:
                    sink.deliver(events)
                    delivered, error = len(events), None
                except DeliveryError as exc:
                    delivered, error = exc.delivered, exc
                except Exception as exc:  # a sink bug must not kill the dispatcher thread
                    delivered, error = 0, exc
                if delivered:
                    if not self._advance(sink, events[delivered - 1].id):
                        return total
                    total += delivered
                    self._delivered_at[sink.name] = time.time()
                if error is not None:
                    self._failed(sink, delivered, error)
                    return total
                self._failures[sink.name] = 0
                self._errors[sink.name] = None
                if len(events) < self.batch_size:
                    return total
            return total

    def _advance(self, sink: Sink, last_id: int) -> bool:
        if sink.durable:
            try:
                self.store.advance_sink_cursor(sink.name, last_id)
            except OrchestratorError as exc:
                # Delivered but not recorded: those events will be delivered again (at-least-once).
                self._failed(sink, 0, exc)
                return False
        self._set_cursor(sink, last_id)
        return True

    def _failed(self, sink: Sink, delivered: int, error: BaseException) -> None:
        self._failures[sink.name] += 1
        self._errors[sink.name] = str(error)
        log.warning("event sink %s failed (%d in a row, %d delivered first), will retry from event %d: %s",
                    sink.name, self._failures[sink.name], delivered, self._cursors.get(sink.name, 0) + 1, error)

    # ---------------------------------------------------------------- background threads

    def start(self) -> EventDispatcher:
        """Start one delivery thread per sink (daemon threads); `stop()` ends them."""
        if self._threads:
            raise OrchestratorError("The event dispatcher is already running")
        self._stop.clear()
        for sink in self.sinks:
            thread = threading.Thread(target=self._run, args=(sink,), name=f"events-{sink.name}", daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def wake(self) -> None:
        """Deliver now rather than at the next poll (e.g. right after a batch of changes)."""
        for event in self._wake.values():
            event.set()

    def stop(self, timeout: float = 10.0, close_sinks: bool = False) -> None:
        """Stop the threads after their current batch; optionally close the sinks too. Events not delivered by
        then stay in the outbox (`drain()` first to wait for them); waiters in `wait_delivered` return False."""
        self._stop.set()
        self.wake()
        with self._delivered:
            self._delivered.notify_all()
        if close_sinks:
            for sink in self.sinks:
                sink.close()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def __enter__(self) -> EventDispatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        while not self._stop.is_set():
            wake.clear()  # before the pass: a wake() during it makes another pass at once, never a lost one
            try:
                self._drain(sink)
            except Exception:  # never let the thread die silently
                log.exception("event sink %s: unexpected error", sink.name)
                self._failures[sink.name] += 1
            failures = self._failures[sink.name]
            delay = self.poll_interval if failures == 0 else min(self.poll_interval * 2**failures, self.max_backoff)
            wake.wait(delay)

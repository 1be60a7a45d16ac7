"""`EventDispatcher`: moves outbox events from the store to sinks, in id order, each sink at its own pace.

Each sink has a cursor (the id of the last event it accepted). A sink that fails keeps its cursor and is
retried with backoff; the others carry on. Every state change writes its event in the same transaction
as the change, so nothing committed is ever missed; delivery is at-least-once, consumers dedupe on `id`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import OrchestratorError
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
                self._cursors[sink.name] = 0 if stored is None else stored
            else:
                self._cursors[sink.name] = self.store.latest_event_id()
        return self._cursors[sink.name]

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
        self._cursors[sink.name] = last_id
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
        """Stop the threads after their current batch; optionally close the sinks too."""
        self._stop.set()
        self.wake()
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
            try:
                self._drain(sink)
            except Exception:  # never let the thread die silently
                log.exception("event sink %s: unexpected error", sink.name)
                self._failures[sink.name] += 1
            failures = self._failures[sink.name]
            delay = self.poll_interval if failures == 0 else min(self.poll_interval * 2**failures, self.max_backoff)
            wake.wait(delay)
            wake.clear()

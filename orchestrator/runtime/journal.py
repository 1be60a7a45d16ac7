"""The orchestrator's write journal: what it decided and saw but has not yet written to the store.

Status changes (with their events), execution rows and decision rows wait here and are written together, in
order, in one transaction per flush. When the database is unreachable (refused, cut, locked) the write is tried
again later with a bounded, logged backoff: nothing is dropped, and while anything is unwritten the orchestrator
starts no task (a start is written before it happens). A write whose commit was cut off is checked against the
lease row's batch number before it is written again, so that it is never applied twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from ..errors import StoreUnavailableError
from ..store.records import Change, DecisionRecord, ExecutionRecord

log = logging.getLogger("orchestrator.runtime")


class WriteJournal:
    """Unwritten changes and history rows of one orchestrator, written under its lease (`owner`)."""

    def __init__(self, store, owner: str, first_delay: float = 0.05, max_delay: float = 2.0):
        self.store = store
        self.owner = owner
        self.changes: list[Change] = []
        self.executions: list[ExecutionRecord] = []
        self.decisions: list[DecisionRecord] = []
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.seq = 0  # number of the last batch handed to the store
        self.failures = 0  # consecutive failed writes
        self.retry_at = 0.0  # monotonic time before which no write is tried again
        self.outage_since: float | None = None  # wall time of the first failed write of the current outage
        self.last_error: str | None = None
        self._uncertain: tuple[int, int, int, int] | None = None  # (seq, changes, executions, decisions) cut off
        self._confirmed: list[Change] = []  # changes known to be written, not yet returned by `flush`

    def __len__(self) -> int:
        return len(self.changes) + len(self.executions) + len(self.decisions)

    @property
    def blocked(self) -> bool:
        """Whether earlier writes are still unwritten (the database is unreachable): start nothing new."""
        return self.failures > 0

    def add(self, changes: Sequence[Change] = (), executions: Sequence[ExecutionRecord] = (),
            decisions: Sequence[DecisionRecord] = ()) -> None:
        self.changes.extend(changes)
        self.executions.extend(executions)
        self.decisions.extend(decisions)

    def flush(self, force: bool = False) -> list[Change] | None:
        """Write everything pending in one transaction. Returns the changes written (possibly none), or None if
        the database is unreachable (everything is kept for the next flush; a retry waits out the backoff
        unless `force`). Errors other than unavailability (a refused batch) propagate with nothing dropped."""
        if not len(self) and self._uncertain is None:
            return []
        if self.failures and not force and time.monotonic() < self.retry_at:
            return None
        try:
            if self._uncertain is not None:
                self._take_if_written()
            if len(self):
                sizes = (len(self.changes), len(self.executions), len(self.decisions))
                self.seq += 1
                try:
                    self.store.apply(self.changes, self.executions, self.decisions, batch=(self.owner, self.seq))
                except StoreUnavailableError:
                    self._uncertain = (self.seq, *sizes)
                    raise
                self._confirmed += self.changes
                self.changes, self.executions, self.decisions = [], [], []
        except StoreUnavailableError as exc:
            self.record_failure(exc)
            return None
        written, self._confirmed = self._confirmed, []
        self._recovered()
        return written

    def _take_if_written(self) -> None:
        """After a write that failed in flight: if it was committed after all, take out what it carried."""
        seq, n_changes, n_executions, n_decisions = self._uncertain
        if self.store.batch_written(self.owner, seq):
            log.warning("the write cut off by the database outage had been committed; it is not written again")
            self._confirmed += self.changes[:n_changes]
            del self.changes[:n_changes]
            del self.executions[:n_executions]
            del self.decisions[:n_decisions]
        self._uncertain = None

    def record_failure(self, exc: BaseException) -> None:
        """A write (or a write it depends on, such as a result) failed: the store is unreachable for now."""
        self.failures += 1
        now = time.time()
        if self.outage_since is None:
            self.outage_since = now
        delay = min(self.max_delay, self.first_delay * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + delay
        self.last_error = str(exc)
        log.warning("store unreachable for %.1f s (write attempt %d failed; %d changes, %d execution rows kept; "
                    "next try in %.2f s; no task starts until it is written): %s", now - self.outage_since,
                    self.failures, len(self.changes), len(self.executions), delay, exc)

    def _recovered(self) -> None:
        if self.failures:
            log.warning("store reachable again after %.1f s and %d failed writes; everything kept was written",
                        time.time() - (self.outage_since or time.time()), self.failures)
        self.failures = 0
        self.outage_since = None
        self.last_error = None

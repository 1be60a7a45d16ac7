"""The orchestrator's lease on its store, so that one orchestrator runs a store's workflows (a second would take the
first one's running tasks for orphans and run them again): taken at start, renewed by a keeper thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger("orchestrator.runtime")


class Lease:
    """This orchestrator's lease on its store, held as `owner`; it lapses `ttl_s` seconds after its last renewal."""

    def __init__(self, store: Any, ttl_s: float):
        self.store = store
        self.ttl_s = ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._keeper: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease: waits for the lease of one that died to lapse; refuses while another is alive."""
        self.store.acquire_lease(self.owner, ttl=self.ttl_s, wait=self.ttl_s + 2.0, host=socket.gethostname(),
                                 pid=os.getpid())

    def release(self) -> None:
        self.store.release_lease(self.owner)

    def keep(self, stop: threading.Event, lost: Callable[[], None], cancel_requested: Callable[[str], None]) -> None:
        """Start the keeper thread: it renews the lease about once a second until `stop` is set, calls `lost` (and
        ends) if another orchestrator took the store over, and hands each cancel request made through the store
        (`orchestrator cancel` when it cannot reach this actor) to `cancel_requested`."""
        self._keeper = threading.Thread(target=self._keep, args=(stop, lost, cancel_requested),
                                        name="orchestrator-lease", daemon=True)
        self._keeper.start()

    def join(self, timeout: float) -> None:
        if self._keeper is not None:
            self._keeper.join(timeout=timeout)

    def _keep(self, stop: threading.Event, lost: Callable[[], None],
              cancel_requested: Callable[[str], None]) -> None:
        every = min(1.0, self.ttl_s / 4)
        while not stop.wait(every):
            try:
                if not self.store.renew_lease(self.owner):
                    log.error("another orchestrator took this store over (this one stalled for more than %s s): "
                              "stopping, it runs the workflows from now on", self.ttl_s)
                    lost()
                    return
                for run_id in self.store.cancel_requests():
                    cancel_requested(run_id)
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable: try again
                log.exception("could not renew the lease or read cancel requests")

"""The orchestrator lease: one orchestrator at a time owns a store, and keeps it by renewing a heartbeat; the
writes it fences (`Store.apply(batch=...)`) record their sequence number on the lease row."""

from __future__ import annotations

import time

import sqlalchemy as sa

from ..errors import StoreError, StoreRefusedError
from .schema import OrchestratorLeaseRow
from .transactions import StoreBase

L = OrchestratorLeaseRow.__table__
LEASE = "orchestrator"  # the name of the one lease of a store


class Lease(StoreBase):
    """Taking, renewing and giving back the store's lease."""

    def acquire_lease(self, owner: str, ttl: float, wait: float, host: str | None = None,
                      pid: int | None = None) -> None:
        """Make `owner` the one orchestrator of this store. A lease another owner renewed within `ttl` seconds
        blocks: wait up to `wait` seconds for it to lapse (an orchestrator that died stops renewing), then
        raise StoreError naming the holder. Renew with `renew_lease`; give back with `release_lease`."""
        deadline = time.monotonic() + wait
        while True:
            now = time.time()
            holder = None
            try:
                with self._transaction("take the orchestrator lease") as conn:
                    row = conn.execute(sa.select(L).where(L.c.name == LEASE).with_for_update()).first()
                    values = {"owner": owner, "host": host, "pid": pid, "acquired_at": now, "heartbeat_at": now,
                              "written_seq": None}
                    if row is None:
                        conn.execute(sa.insert(L).values(name=LEASE, **values))
                    elif row.owner == owner or row.heartbeat_at < now - ttl:
                        conn.execute(sa.update(L).where(L.c.name == LEASE).values(**values))
                    else:
                        holder = row
            except StoreError:
                if time.monotonic() >= deadline:
                    raise
                holder = None  # a concurrent start inserted first: look again
                time.sleep(0.2)
                continue
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise self._leased_by(holder, now)
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def refuse_if_leased(self, within_s: float) -> None:
        """Raise the same StoreError as `acquire_lease` if an orchestrator renewed this store's lease within
        `within_s` seconds (it renews every second while alive), without waiting for the lease to lapse."""
        with self._connection("read the orchestrator lease") as conn:
            holder = conn.execute(sa.select(L).where(L.c.name == LEASE)).first()
        now = time.time()
        if holder is not None and now - holder.heartbeat_at < within_s:
            raise self._leased_by(holder, now)

    def renew_lease(self, owner: str) -> bool:
        """Renew `owner`'s lease; False if another orchestrator has taken the store over meanwhile."""
        now = time.time()
        with self._transaction("renew the orchestrator lease") as conn:
            return conn.execute(sa.update(L).where(L.c.name == LEASE, L.c.owner == owner)
                                .values(heartbeat_at=now)).rowcount == 1

    def release_lease(self, owner: str) -> None:
        with self._transaction("release the orchestrator lease") as conn:
            conn.execute(sa.delete(L).where(L.c.name == LEASE, L.c.owner == owner))

    def _leased_by(self, holder: sa.Row, now: float) -> StoreError:
        return StoreRefusedError(
            f"Another orchestrator (pid {holder.pid} on {holder.host}, started "
            f"{time.strftime('%H:%M:%S', time.localtime(holder.acquired_at))}) is running on the store at {self.url} "
            f"and owns the store (it renewed its lease {now - holder.heartbeat_at:.1f} s ago): two orchestrators on "
            "one store would run the same tasks twice. Talk to it through the Ray cluster it runs on (--address or "
            "RAY_ADDRESS; `orchestrator cancel` also works through the store), or stop it first")

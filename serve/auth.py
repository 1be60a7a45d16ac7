"""Who is calling: API keys from `Authorization: Bearer <key>`, verified against the store's hashes, and roles.

Viewer reads; operator also submits, cancels, resumes and schedules; admin also manages keys and applies
optimizations. A verified key is remembered for `key_cache_s` seconds (a revocation takes effect within that).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass

ROLES = ("viewer", "operator", "admin")
RANK = {role: k for k, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Caller:
    key_id: int
    name: str
    role: str

    def has(self, role: str) -> bool:
        return RANK.get(self.role, -1) >= RANK[role]


class KeyVerifier:
    """Verifies keys against the store, remembering each answer (valid or not) for `ttl` seconds."""

    def __init__(self, store, ttl: float, max_entries: int = 10_000):
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, asyncio.Future] = {}

    async def averify(self, key: str) -> Caller | None:
        """`verify` for the event loop: answered from memory when it can be; concurrent requests with one key
        share a single lookup in the store (a burst of requests with a key not seen for a while is one query, not
        one per request competing for the database)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            caller = await asyncio.to_thread(self.verify, key, digest)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(caller)
            return caller
        finally:
            self._pending.pop(digest, None)

    def verify(self, key: str, digest: str | None = None) -> Caller | None:
        digest = digest or hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = self.store.verify_api_key(key)
        caller = None
        if record is not None and getattr(record, "active", True):
            caller = Caller(record.id, record.name, record.role)
        if self.ttl > 0:
            with self._lock:
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
                self._cache[digest] = (now + self.ttl, caller)
        return caller


    def forget_all(self) -> None:
        """Forget every remembered answer (after a key was revoked through this replica)."""
        with self._lock:
            self._cache.clear()


def bearer_key(header: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()

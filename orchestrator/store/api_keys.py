"""API keys: created with a role, verified, revoked and listed; the store keeps only each key's sha256."""

from __future__ import annotations

import hashlib
import secrets
import time

import sqlalchemy as sa

from ..errors import StoreConflictError, StoreError, StoreInvalidError, StoreNotFoundError
from .records import ApiKeyRecord
from .schema import ApiKeyRow
from .transactions import StoreBase

K = ApiKeyRow.__table__
_KEY_RECORD_COLUMNS = (K.c.id, K.c.name, K.c.role, K.c.created_at, K.c.revoked_at, K.c.last_used_at)
_TOUCH_INTERVAL = 60.0  # seconds between last_used_at updates of one key


class ApiKeys(StoreBase):
    """The API keys of a store."""

    def create_api_key(self, name: str, role: str) -> str:
        """Create a key and return its plaintext, which is shown only now: the store keeps its sha256."""
        if not name or not role:
            raise StoreInvalidError("An API key needs a non-empty name and role")
        key = "orch_" + secrets.token_urlsafe(32)

        def taken() -> StoreError:
            return StoreConflictError(f"An active API key named '{name}' already exists; revoke it first "
                              "or choose another name")

        with self._transaction("create API key", on_conflict=taken) as conn:
            conn.execute(sa.insert(K).values(name=name, role=role, key_hash=_hash_key(key), created_at=time.time()))
        return key

    def verify_api_key(self, key: str) -> ApiKeyRecord | None:
        """The record of the active key `key`, or None if it is unknown or revoked."""
        if not key:
            return None
        with self._connection("verify API key") as conn:
            row = conn.execute(sa.select(*_KEY_RECORD_COLUMNS)
                               .where(K.c.key_hash == _hash_key(key), K.c.revoked_at.is_(None))).first()
        if row is None:
            return None
        now = time.time()
        if row.last_used_at is None or row.last_used_at < now - _TOUCH_INTERVAL:
            with self._transaction("update API key use") as conn:
                conn.execute(sa.update(K).where(K.c.id == row.id).values(last_used_at=now))
        return ApiKeyRecord(*row)

    def revoke_api_key(self, name: str) -> None:
        with self._transaction("revoke API key") as conn:
            n = conn.execute(sa.update(K).where(K.c.name == name, K.c.revoked_at.is_(None))
                             .values(revoked_at=time.time())).rowcount
        if n == 0:
            raise StoreNotFoundError(f"No active API key named '{name}'")

    def list_api_keys(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        query = sa.select(*_KEY_RECORD_COLUMNS)
        if not include_revoked:
            query = query.where(K.c.revoked_at.is_(None))
        with self._connection("list API keys") as conn:
            return [ApiKeyRecord(*row) for row in conn.execute(query.order_by(K.c.id))]


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()

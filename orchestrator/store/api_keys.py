"""API keys: created with a role and an optional expiry, verified, revoked and listed; the store keeps only each
key's sha256.

A key verifies while it is neither revoked nor expired. An expired key keeps its name (at most one key per name is
not revoked) until it is revoked, so that `list_api_keys` still shows it and a new key cannot silently take over
its name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import time

import sqlalchemy as sa

from ..errors import StoreConflictError, StoreError, StoreInvalidError, StoreNotFoundError
from .records import ApiKeyRecord
from .schema import ApiKeyRow
from .transactions import StoreBase

ROLES = ("viewer", "operator", "admin")  # from least to most privileged

K = ApiKeyRow.__table__
_KEY_RECORD_COLUMNS = (K.c.id, K.c.name, K.c.role, K.c.created_at, K.c.expires_at, K.c.revoked_at,
                       K.c.last_used_at)
_TOUCH_INTERVAL = 60.0  # seconds between last_used_at updates of one key
_NAME_MAX = ApiKeyRow.__table__.c.name.type.length


class ApiKeys(StoreBase):
    """The API keys of a store."""

    def create_api_key(self, name: str, role: str, expires_at: float | None = None) -> str:
        """Create a key and return its plaintext, which is shown only now: the store keeps its sha256.

        `role` is one of `ROLES`; `expires_at` (UNIX epoch seconds, in the future) ends the key's validity, None
        for a key that never expires.
        """
        if not name or not name.strip():
            raise StoreInvalidError("An API key needs a non-empty name")
        if len(name) > _NAME_MAX:
            raise StoreInvalidError(f"An API key name has at most {_NAME_MAX} characters, got {len(name)}")
        if role not in ROLES:
            raise StoreInvalidError(f"Unknown API key role '{role}'; use one of {', '.join(ROLES)}")
        now = time.time()
        if expires_at is not None:
            if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)) \
                    or not math.isfinite(expires_at):
                raise StoreInvalidError(f"An API key's expiry must be a finite UNIX time in seconds, "
                                        f"got {expires_at!r}")
            if expires_at <= now:
                when = dt.datetime.fromtimestamp(expires_at, dt.timezone.utc).isoformat(timespec="seconds")
                raise StoreInvalidError(f"The expiry of API key '{name}' ({when}) is in the past; "
                                        "give a time in the future")
            expires_at = float(expires_at)
        key = "orch_" + secrets.token_urlsafe(32)

        def taken() -> StoreError:
            return StoreConflictError(f"An active API key named '{name}' already exists; revoke it first "
                                      "or choose another name")

        with self._transaction("create API key", on_conflict=taken) as conn:
            held = conn.execute(sa.select(K.c.expires_at)
                                .where(K.c.name == name, K.c.revoked_at.is_(None))).first()
            if held is not None:
                if held.expires_at is not None and held.expires_at <= now:
                    raise StoreConflictError(f"The API key named '{name}' has expired but still holds its name; "
                                             "revoke it first or choose another name")
                raise taken()
            conn.execute(sa.insert(K).values(name=name, role=role, key_hash=_hash_key(key), created_at=now,
                                             expires_at=expires_at))
        return key

    def verify_api_key(self, key: str) -> ApiKeyRecord | None:
        """The record of the active key `key`, or None if it is unknown, revoked or expired."""
        if not key:
            return None
        now = time.time()
        with self._connection("verify API key") as conn:
            row = conn.execute(sa.select(*_KEY_RECORD_COLUMNS)
                               .where(K.c.key_hash == _hash_key(key), K.c.revoked_at.is_(None),
                                      sa.or_(K.c.expires_at.is_(None), K.c.expires_at > now))).first()
        if row is None:
            return None
        if row.last_used_at is None or row.last_used_at < now - _TOUCH_INTERVAL:
            with self._transaction("update API key use") as conn:
                conn.execute(sa.update(K).where(K.c.id == row.id).values(last_used_at=now))
        return ApiKeyRecord(*row)

    def get_api_key(self, name: str) -> ApiKeyRecord:
        """The active (not revoked, not expired) key named `name`; StoreNotFoundError if there is none."""
        with self._connection("read API key") as conn:
            row = conn.execute(sa.select(*_KEY_RECORD_COLUMNS)
                               .where(K.c.name == name, K.c.revoked_at.is_(None))).first()
        if row is None:
            raise StoreNotFoundError(f"No active API key named '{name}'")
        record = ApiKeyRecord(*row)
        if record.expired(time.time()):
            raise StoreNotFoundError(f"The API key named '{name}' has expired")
        return record

    def revoke_api_key(self, name: str) -> None:
        """Revoke the key named `name` (active or expired), which frees its name."""
        with self._transaction("revoke API key") as conn:
            n = conn.execute(sa.update(K).where(K.c.name == name, K.c.revoked_at.is_(None))
                             .values(revoked_at=time.time())).rowcount
        if n == 0:
            raise StoreNotFoundError(f"No active API key named '{name}'")

    def list_api_keys(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """The keys not revoked (expired ones included: see `ApiKeyRecord.status`), oldest first; with
        `include_revoked`, every key."""
        query = sa.select(*_KEY_RECORD_COLUMNS)
        if not include_revoked:
            query = query.where(K.c.revoked_at.is_(None))
        with self._connection("list API keys") as conn:
            return [ApiKeyRecord(*row) for row in conn.execute(query.order_by(K.c.id))]


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()

"""API keys against SQLite and a real PostgreSQL: roles, expiry, revocation, the 0004 migration on an existing
database, and the `orchestrator keys` commands."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.commands import keys as keys_cmd
from orchestrator.errors import InvalidError, StoreConflictError, StoreInvalidError, StoreNotFoundError
from orchestrator.store import ApiKeyRecord, Store
from orchestrator.store import api_keys
from orchestrator.store.database import alembic_config, create_engine, head_revision, parse_url


@pytest.fixture
def store(store_url):
    with Store.open(store_url) as s:
        yield s


def clock(monkeypatch, now: float) -> None:
    """The store's API key code sees `now` as the current time."""
    monkeypatch.setattr(api_keys, "time", SimpleNamespace(time=lambda: now))


# ---------------------------------------------------------------------- the store


def test_create_verify_get_revoke(store):
    assert api_keys.ROLES == ("viewer", "operator", "admin")
    key = store.create_api_key("ci", "operator")
    rec = store.verify_api_key(key)
    assert (rec.name, rec.role, rec.expires_at, rec.revoked_at, rec.active) == ("ci", "operator", None, None, True)
    assert store.get_api_key("ci") == store.verify_api_key(key)  # the first verify set last_used_at
    assert store.verify_api_key(key + "x") is None and store.verify_api_key("") is None
    with pytest.raises(StoreConflictError, match="active API key named 'ci' already exists"):
        store.create_api_key("ci", "admin")
    store.revoke_api_key("ci")
    assert store.verify_api_key(key) is None
    with pytest.raises(StoreNotFoundError, match="No active API key named 'ci'"):
        store.get_api_key("ci")
    with pytest.raises(StoreNotFoundError, match="No active API key named 'nobody'"):
        store.get_api_key("nobody")
    [revoked] = store.list_api_keys(include_revoked=True)
    assert revoked.status() == "revoked" and not revoked.active
    assert store.list_api_keys() == []


def test_a_key_stops_verifying_when_it_expires(store, monkeypatch):
    now = time.time()
    key = store.create_api_key("temp", "viewer", expires_at=now + 60)
    rec = store.verify_api_key(key)
    assert rec.expires_at == pytest.approx(now + 60) and rec.active and rec.status(now + 59) == "active"
    assert store.get_api_key("temp").id == rec.id

    clock(monkeypatch, now + 61)
    assert store.verify_api_key(key) is None
    with pytest.raises(StoreNotFoundError, match="'temp' has expired"):
        store.get_api_key("temp")
    [listed] = store.list_api_keys()  # an expired key is still listed: it holds its name until revoked
    assert listed.name == "temp" and listed.status(now + 61) == "expired" and listed.expired(now + 61)
    with pytest.raises(StoreConflictError, match="'temp' has expired but still holds its name; revoke it first"):
        store.create_api_key("temp", "viewer")
    store.revoke_api_key("temp")
    assert store.list_api_keys(include_revoked=True)[0].status(now + 61) == "revoked"
    new_key = store.create_api_key("temp", "admin", expires_at=now + 3600)
    assert store.verify_api_key(new_key).role == "admin"
    assert store.verify_api_key(key) is None


def test_an_expiry_a_moment_ahead_passes_in_real_time(store):
    key = store.create_api_key("brief", "viewer", expires_at=time.time() + 0.5)
    assert store.verify_api_key(key).active
    time.sleep(0.6)
    assert store.verify_api_key(key) is None
    assert not store.list_api_keys()[0].active


def test_bad_role_and_expiry_are_refused(store):
    with pytest.raises(StoreInvalidError, match="Unknown API key role 'root'; use one of viewer, operator, admin"):
        store.create_api_key("ci", "root")
    with pytest.raises(StoreInvalidError, match="is in the past"):
        store.create_api_key("ci", "viewer", expires_at=time.time() - 1)
    for bad in (math.nan, math.inf, "tomorrow", True):
        with pytest.raises(StoreInvalidError, match="finite UNIX time"):
            store.create_api_key("ci", "viewer", expires_at=bad)
    with pytest.raises(StoreInvalidError, match="non-empty name"):
        store.create_api_key(" ", "viewer")
    with pytest.raises(StoreInvalidError, match="at most 200 characters"):
        store.create_api_key("x" * 201, "viewer")
    assert store.list_api_keys(include_revoked=True) == []


def test_record_status():
    rec = ApiKeyRecord(1, "k", "viewer", created_at=100.0, expires_at=200.0, revoked_at=None, last_used_at=None)
    assert rec.status(150) == "active" and rec.status(200) == "expired" and rec.expired(250)
    assert not rec.active  # 200 is long past
    forever = ApiKeyRecord(2, "k", "viewer", 100.0, None, None, None)
    assert forever.active and not forever.expired(1e12)
    revoked = ApiKeyRecord(3, "k", "viewer", 100.0, 1e12, 150.0, None)
    assert revoked.status(120) == "revoked" and not revoked.active


# ---------------------------------------------------------------------- the 0004 migration


def test_migration_adds_expiry_to_an_existing_0003_database(store_url):
    key = "orch_from_before_expiry"
    engine = create_engine(parse_url(store_url))
    try:
        with engine.begin() as conn:
            from alembic import command

            command.upgrade(alembic_config(conn), "0003")
            conn.execute(sa.text("INSERT INTO api_keys (name, key_hash, role, created_at) VALUES "
                                 "('old', :h, 'admin', :t)"), {"h": hashlib.sha256(key.encode()).hexdigest(),
                                                               "t": time.time()})
        with engine.connect() as conn:
            assert "expires_at" not in {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}
    finally:
        engine.dispose()

    with Store.open(store_url) as store:  # migrates to head
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision() \
                == "0004"
        rec = store.verify_api_key(key)
        assert (rec.name, rec.role, rec.expires_at, rec.active) == ("old", "admin", None, True)
        with pytest.raises(StoreConflictError):  # the partial unique index on the name is still there
            store.create_api_key("old", "viewer")
        new_key = store.create_api_key("new", "viewer", expires_at=time.time() + 60)
        assert store.verify_api_key(new_key).expires_at is not None

        with store.engine.begin() as conn:  # and back down: the keys and the name index survive
            from alembic import command

            command.downgrade(alembic_config(conn), "0003")
        with store.engine.connect() as conn:
            assert "expires_at" not in {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}
            assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 2
            assert "uq_api_keys_active_name" in {ix["name"] for ix in sa.inspect(conn).get_indexes("api_keys")}


# ---------------------------------------------------------------------- orchestrator keys


runner = CliRunner()


def keys(url: str, *args):
    return runner.invoke(app, ["keys", *map(str, args), "--db-url", url], env={"COLUMNS": "250"})


def test_cli_create_list_revoke(store_url):
    before = time.time()
    r = keys(store_url, "create", "ci", "--role", "operator", "--expires", "30d")
    assert r.exit_code == 0, r.output
    key = r.stdout.splitlines()[-1]
    assert r.stdout == key + "\n" and key.startswith("orch_") and len(key) > 40  # the key alone, for scripts
    assert "ci" in r.stderr and "operator" in r.stderr and "shown only once; store it now" in r.stderr
    with Store.open(store_url) as store:
        rec = store.verify_api_key(key)
    assert (rec.name, rec.role) == ("ci", "operator")
    assert before + 30 * 86400 <= rec.expires_at <= time.time() + 30 * 86400

    r = keys(store_url, "create", "ops", "--role", "admin")
    assert r.exit_code == 0 and "never expires" in r.stderr
    r = keys(store_url, "list")
    assert r.exit_code == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in r.stdout.splitlines() if line.startswith("│")}
    assert rows["ci"][0] == "operator" and rows["ci"][-1] == "active" and rows["ci"][2].startswith(
        dt.datetime.fromtimestamp(rec.expires_at).strftime("%Y-%m-%d"))
    assert rows["ops"][0] == "admin" and rows["ops"][2] == "-" and rows["ops"][-1] == "active"
    for col in ("name", "role", "created", "expires", "last used", "status"):
        assert col in r.stdout

    r = keys(store_url, "revoke", "ci")
    assert r.exit_code == 0 and "revoked API key ci" in r.stdout
    with Store.open(store_url) as store:
        assert store.verify_api_key(key) is None
    assert " ci " not in keys(store_url, "list").stdout
    listed = keys(store_url, "list", "--all").stdout
    assert "ci" in listed and "revoked" in listed

    r = keys(store_url, "revoke", "ci")
    assert r.exit_code == 1 and "error: No active API key named 'ci'" in r.stderr


def test_cli_lists_an_expired_key_as_expired(store_url, monkeypatch):
    with Store.open(store_url) as store:
        store.create_api_key("old", "viewer", expires_at=time.time() + 60)
    monkeypatch.setattr(keys_cmd, "time", SimpleNamespace(time=lambda: time.time() + 120))
    r = keys(store_url, "list")
    assert r.exit_code == 0 and "expired" in r.stdout


def test_cli_bad_input_exits_1_with_one_error_line(store_url):
    r = keys(store_url, "create", "ci", "--role", "root")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == "error: Unknown role 'root'; use one of viewer, operator, admin"
    for bad in ("tomorrow", "30x", "-5d"):
        r = keys(store_url, "create", "ci", "--role", "viewer", "--expires", bad)
        assert r.exit_code == 1 and r.stdout == "", bad
        assert r.stderr.startswith(f"error: --expires '{bad}' is neither a duration") and len(
            r.stderr.strip().splitlines()) == 1
    for past in ("0d", "2020-01-01"):
        r = keys(store_url, "create", "ci", "--role", "viewer", "--expires", past)
        assert r.exit_code == 1 and f"error: --expires '{past}' is" in r.stderr and "future" in r.stderr
    with Store.open(store_url) as store:
        assert store.list_api_keys(include_revoked=True) == []  # nothing was created

    assert keys(store_url, "create", "ci", "--role", "viewer").exit_code == 0
    r = keys(store_url, "create", "ci", "--role", "admin")
    assert r.exit_code == 1 and r.stdout == "" and "error: An active API key named 'ci' already exists" in r.stderr


def test_parse_expires():
    now = 1_800_000_000.0
    assert keys_cmd.parse_expires("90m", now) == now + 90 * 60
    assert keys_cmd.parse_expires("12h", now) == now + 12 * 3600
    assert keys_cmd.parse_expires("30d", now) == now + 30 * 86400
    assert keys_cmd.parse_expires("2w", now) == now + 14 * 86400
    assert keys_cmd.parse_expires("2027-03-01T12:00:00+00:00", now - 1e8) == dt.datetime(
        2027, 3, 1, 12, tzinfo=dt.timezone.utc).timestamp()
    assert keys_cmd.parse_expires("2027-03-01T12:00:00Z", now - 1e8) == dt.datetime(
        2027, 3, 1, 12, tzinfo=dt.timezone.utc).timestamp()
    assert keys_cmd.parse_expires("2027-03-01", now - 1e8) == dt.datetime(2027, 3, 1).timestamp()  # local time
    with pytest.raises(InvalidError, match="neither a duration"):
        keys_cmd.parse_expires("1y", now)
    with pytest.raises(InvalidError, match="in the past"):
        keys_cmd.parse_expires("2020-01-01", now)

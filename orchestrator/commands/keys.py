"""`orchestrator keys create | list | revoke`: the API keys of the store (roles viewer, operator, admin; optional
expiry).

`keys create` prints the new key alone on the last line of stdout, so that a script can capture it
(`KEY=$(orchestrator keys create ci --role operator)`); everything else goes to stderr. Bad input (an unknown role,
a bad --expires, a name already taken) is one `error:` line on stderr and exit code 1.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..errors import InvalidError, OrchestratorError
from .runtime import DATA_DIR, DB_URL, _open

console = Console(width=None if sys.stdout.isatty() else 200, emoji=False)
err_console = Console(stderr=True, emoji=False)

_DURATION = re.compile(r"(\d+)([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_STATUS_STYLE = {"active": "green", "revoked": "red", "expired": "yellow"}


def parse_expires(value: str, now: float | None = None) -> float:
    """The UNIX time `value` names: a duration from `now` (`90m`, `12h`, `30d`, `2w`) or an ISO-8601 date or date
    and time (`2027-01-31`, `2027-01-31T18:00:00+01:00`; without a UTC offset, local time)."""
    now = time.time() if now is None else now
    text = value.strip()
    duration = _DURATION.fullmatch(text)
    if duration:
        seconds = int(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
        if seconds <= 0:
            raise InvalidError(f"--expires '{value}' is not in the future; give a duration above zero")
        return now + seconds
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidError(
            f"--expires '{value}' is neither a duration (90m, 12h, 30d, 2w) nor an ISO-8601 date "
            "(2027-01-31, 2027-01-31T18:00:00+01:00)") from None
    ts = when.timestamp()  # a naive date/time is local time
    if ts <= now:
        raise InvalidError(f"--expires '{value}' is in the past; give a date in the future")
    return ts


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@contextmanager
def _reported() -> Iterator[None]:
    """An OrchestratorError (bad input, store errors) becomes one `error:` line on stderr and exit code 1."""
    try:
        yield
    except OrchestratorError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    from ..store.api_keys import ROLES

    keys = typer.Typer(help="Manage the API keys of the HTTP API (roles: viewer, operator, admin).",
                       no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        name: str = typer.Argument(..., help="Name of the key (unique among the keys not revoked)"),
        role: str = typer.Option(..., "--role", help=f"Role of the key: {', '.join(ROLES)}"),
        expires: str = typer.Option(None, "--expires", help="Expiry: a duration (90m, 12h, 30d, 2w) or an ISO-8601 "
                                                            "date (2027-01-31, 2027-01-31T18:00:00+01:00); "
                                                            "default: never"),
        data_dir: Path = DATA_DIR,
        db_url: str = DB_URL,
    ):
        """Create a key and print it alone on the last line of stdout (the rest goes to stderr).

        The key is shown only once: the store keeps only its sha256."""
        with _reported():
            if role not in ROLES:
                raise InvalidError(f"Unknown role '{role}'; use one of {', '.join(ROLES)}")
            expires_at = parse_expires(expires) if expires is not None else None
            with _open(data_dir, db_url) as store:
                key = store.create_api_key(name, role, expires_at=expires_at)
        err_console.print(Text.assemble("created API key ", (name, "bold"), f" (role {role}, ",
                                        f"expires {_when(expires_at)})" if expires_at else "never expires)"),
                          soft_wrap=True)
        err_console.print("[yellow]The key is shown only once; store it now.[/]")
        typer.echo(key)

    @keys.command("list")
    def list_(
        all_: bool = typer.Option(False, "--all", help="Include revoked keys"),
        data_dir: Path = DATA_DIR,
        db_url: str = DB_URL,
    ):
        """List the keys not revoked (expired ones included), oldest first; --all adds the revoked ones."""
        with _reported():
            with _open(data_dir, db_url) as store:
                records = store.list_api_keys(include_revoked=all_)
        if not records:
            console.print("no API keys" if all_ else "no API keys (--all includes revoked ones)")
            return
        now = time.time()
        table = Table()
        for col in ("name", "role", "created", "expires", "last used", "status"):
            table.add_column(col)
        for rec in records:
            status = rec.status(now)
            table.add_row(Text(rec.name), Text(rec.role), _when(rec.created_at), _when(rec.expires_at),
                          _when(rec.last_used_at), Text(status, style=_STATUS_STYLE[status]))
        console.print(table)

    @keys.command("revoke")
    def revoke(
        name: str = typer.Argument(..., help="Name of the key to revoke (active or expired)"),
        data_dir: Path = DATA_DIR,
        db_url: str = DB_URL,
    ):
        """Revoke a key: it stops verifying at once, and its name is free for a new key."""
        with _reported():
            with _open(data_dir, db_url) as store:
                store.revoke_api_key(name)
        console.print(Text.assemble("revoked API key ", (name, "bold")), soft_wrap=True)

"""`orchestrator bench-api`: its pure parts (no Ray, no API started; the benchmark itself runs for minutes)."""

from __future__ import annotations

import asyncio
import csv
import json
from types import SimpleNamespace

import pytest

from orchestrator.bench.api import (
    PARTS,
    expected_allowed,
    open_loop,
    parse_parts,
    parse_server_timing,
    pick_trace,
    quantiles,
    write_part,
)
from orchestrator.errors import InvalidError


def test_parse_parts():
    assert parse_parts("all") == PARTS
    assert parse_parts("ratelimit, decisions") == ("decisions", "ratelimit")  # in the order they run
    with pytest.raises(InvalidError, match="unknown part"):
        parse_parts("decisions,bogus")
    with pytest.raises(InvalidError, match="empty"):
        parse_parts(" , ")


def test_parse_server_timing():
    assert parse_server_timing("auth;dur=0.125, ratelimit;dur=3.5") == {"auth": 0.125, "ratelimit": 3.5}
    assert parse_server_timing('db;desc="x";dur="2"') == {"db": 2.0}
    assert parse_server_timing(None) == {}
    assert parse_server_timing("cache, auth;dur=bad") == {}


def test_quantiles_and_expected_allowed():
    q = quantiles([float(i) for i in range(1, 101)])
    assert q["n"] == 100 and q["max"] == 100.0 and q["p50"] == pytest.approx(50.5)
    assert quantiles([])["p99"] is None
    assert expected_allowed(20, 20, 10.0) == 220
    assert expected_allowed(20, 20, 10.0, buckets=4) == 880


def test_pick_trace():
    wfs = [SimpleNamespace(name=f"w{n}", family=f, tasks=[0] * n)
           for n, f in ((58, "montage"), (52, "1000genome"), (983, "epigenomics"), (1066, "montage"), (1312, "x"))]
    assert pick_trace(wfs, 58, family="montage").name == "w58"
    assert pick_trace(wfs, 1000, lo=900, hi=1200).name == "w983"
    with pytest.raises(InvalidError):
        pick_trace(wfs, 5000, lo=2000)


def test_open_loop_keeps_its_schedule_when_answers_are_slow():
    async def send(i: int) -> dict:
        await asyncio.sleep(0.05)  # slower than the 10 ms between sends: requests overlap
        return {"status": 200}

    rows, wall = asyncio.run(open_loop(send, rate=100, count=20))
    assert [r["i"] for r in rows] == list(range(20))
    assert rows[-1]["scheduled_s"] == pytest.approx(0.19)
    assert max(r["send_lag_ms"] for r in rows) < 40
    assert all(r["latency_ms"] >= 45 for r in rows)
    assert wall < 0.2 + 0.05 + 0.2  # not 20 x 50 ms: the sends did not wait for the answers


def test_write_part(tmp_path):
    write_part(tmp_path, "decisions", {"ok": 2}, [{"i": 0, "status": 201}, {"i": 1, "status": 503, "error": "x"}])
    data = json.loads((tmp_path / "decisions.json").read_text())
    assert data["summary"] == {"ok": 2} and len(data["rows"]) == 2
    with (tmp_path / "decisions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[1] == {"i": "1", "status": "503", "error": "x"}


def test_cli_refuses_bad_options_before_starting_anything(cli_main, tmp_path):
    code, _, err = cli_main("bench-api", "--out", tmp_path / "o", "--what", "bogus")
    assert code == 2 and "unknown part" in err
    code, _, err = cli_main("bench-api", "--out", tmp_path / "o", "--what", "submit", "--db-url",
                            f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and "PostgreSQL" in err

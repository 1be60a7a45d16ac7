"""`--db-url` (or ORCHESTRATOR_DB_URL) naming another store than the one the cluster's orchestrator uses is refused:
one clear line naming both stores (passwords masked) and how to go on, exit code 2, nothing recorded in either
store. Before, the run went into the orchestrator's store and `status RUN --db-url X` found no such run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from orchestrator.runtime import client
from orchestrator.runtime.config import ACTOR_NAME, NAMESPACE, RuntimeConfig
from orchestrator.store import Store

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
ECHO = "name: e\ntasks:\n  - {id: a, entrypoint: 'echo hi'}\n"
ANSI = re.compile(r"\x1b\[")


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and not ANSI.search(err), err
    return lines[0]


def _stop_orchestrator() -> None:
    try:
        handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return
    try:
        ray.get(handle.shutdown.remote(), timeout=30)
    finally:
        ray.kill(handle)


@pytest.fixture
def running(ray_cluster, tmp_path):
    """The cluster's named orchestrator, started on a SQLite store of its own: (its store's file, its data dir)."""
    _stop_orchestrator()  # none left by another test
    data = tmp_path / "first"
    db = data / "state.db"
    client.get_orchestrator(RuntimeConfig(db_url=f"sqlite:///{db}", data_dir=str(data), redis_url=None))
    yield db, data
    _stop_orchestrator()


def _runs(db: Path) -> list[str]:
    with Store.open(f"sqlite:///{db}") as store:
        return [r.run_id for r in store.list_workflows()]


def test_another_db_url_than_the_running_orchestrator_s_is_refused(running, tmp_path, cli_main, monkeypatch):
    first, _ = running
    other = tmp_path / "other" / "state.db"
    wf = tmp_path / "wf.yaml"
    wf.write_text(ECHO)

    code, out, err = cli_main("run", wf, "--db-url", f"sqlite:///{other}")
    assert code == 2, (out, err)
    line = _error_line(err)
    assert f"keeps its state in sqlite:///{first}, not in the store asked for, sqlite:///{other}" in line, line
    assert f"--db-url sqlite:///{first}" in line and "orchestrator stop --address" in line, line
    assert "submitted" not in out
    assert not other.exists()  # not even created: nothing recorded anywhere
    assert _runs(first) == []

    monkeypatch.setenv("ORCHESTRATOR_DB_URL", f"sqlite:///{other}")  # the environment's URL, the same
    code, out, err = cli_main("run", wf)
    assert code == 2 and "not in the store asked for" in _error_line(err), (out, err)
    monkeypatch.delenv("ORCHESTRATOR_DB_URL")
    assert not other.exists() and _runs(first) == []

    # A password is never shown; a PostgreSQL store is refused before anyone connects to it.
    code, out, err = cli_main("run", wf, "--db-url", "postgresql://orch:hunter2@db.example:5432/runs")
    line = _error_line(err)
    assert "hunter2" not in err, err
    assert code == 2 and "postgresql://orch:***@db.example:5432/runs" in line, line
    assert _runs(first) == []

    # `resume` through that orchestrator is refused the same way.
    code, out, err = cli_main("resume", "--db-url", f"sqlite:///{other}", "--no-wait")
    assert code == 2 and "not in the store asked for" in _error_line(err), (out, err)

    # The orchestrator's own store, however spelt, is used: the run is where `status --db-url` looks.
    monkeypatch.chdir(first.parent.parent)
    code, out, err = cli_main("run", wf, "--db-url", "sqlite:///first/../first/state.db")
    assert code == 0, (out, err)
    run_id = re.search(r"run (e-[0-9a-f]+): succeeded", out).group(1)
    assert _runs(first) == [run_id]
    code, out, err = cli_main("status", run_id, "--db-url", f"sqlite:///{first}")
    assert code == 0 and "status=succeeded" in out, (out, err)


def test_the_command_refuses_with_exit_code_2(running, tmp_path, ray_cluster):
    """The installed command, on the cluster given by RAY_ADDRESS, the URL given by ORCHESTRATOR_DB_URL."""
    first, _ = running
    other = tmp_path / "other" / "state.db"
    wf = tmp_path / "wf.yaml"
    wf.write_text(ECHO)
    env = {k: v for k, v in os.environ.items() if k not in ("ORCHESTRATOR_DB_URL", "ORCHESTRATOR_DATA_DIR")}
    env.update(RAY_ADDRESS=ray_cluster.address, ORCHESTRATOR_DB_URL=f"sqlite:///{other}")
    proc = subprocess.run([ORCHESTRATOR, "run", str(wf)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc.stderr)
    assert f"sqlite:///{first}" in line and f"sqlite:///{other}" in line
    assert not other.exists() and _runs(first) == []


def test_stop_stops_the_cluster_s_orchestrator_cleanly(running, ray_cluster, cli_main):
    """`orchestrator stop`: the named actor is gone, its lease given back (a new orchestrator need not wait for it to
    lapse); a second stop says none runs."""
    first, data = running
    code, out, err = cli_main("stop", "--address", ray_cluster.address)
    assert code == 0 and "stopped the orchestrator" in out, (out, err)
    with pytest.raises(ValueError):
        ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    with Store.open(f"sqlite:///{first}") as store:
        store.refuse_if_leased(3600)  # no live holder
    code, out, _ = cli_main("stop", "--address", ray_cluster.address)
    assert code == 0 and "no orchestrator runs" in out


def test_store_urls_compare_by_what_they_name(tmp_path, monkeypatch):
    key = client._store_key
    monkeypatch.chdir(tmp_path)
    assert key("sqlite:///state.db", None) == key(f"sqlite:///{tmp_path}/x/../state.db", None)
    assert key(None, str(tmp_path)) == key(f"sqlite:///{tmp_path / 'state.db'}", "/elsewhere")
    assert key("sqlite:///a.db", None) != key("sqlite:///b.db", None)
    pg = key("postgresql+psycopg://orch:***@DB.example/runs", None)
    assert pg == key("postgres://orch:secret@db.example:5432/runs", None)
    assert pg != key("postgresql://orch@db.example:5433/runs", None)
    assert pg != key("postgresql://orch@db.example/other", None)
    assert pg != key("postgresql://admin@db.example/runs", None)

"""Shared fixtures: the bundled traces, store URLs (SQLite and a real PostgreSQL), and one Ray cluster per session."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRACE_DIR = ROOT / "data" / "traces"
POSTGRES_URL = os.environ.get("ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def trace_dir() -> Path:
    return TRACE_DIR


@pytest.fixture(scope="session")
def trace_library():
    from orchestrator.sim import TraceLibrary

    return TraceLibrary.from_dir(TRACE_DIR)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def postgres_url() -> str:
    """A fresh schema-isolated database URL on the real PostgreSQL server (a new database per test)."""
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"orch_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
        ), {"n": name})
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """Each store test runs against both the embedded SQLite and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def ray_cluster():
    """One multi-node Ray cluster for the whole session: a head and one worker node, 2 logical cpus each.

    Tests that need a node to die add their own node to it and remove that node.
    """
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    cluster.add_node(num_cpus=2, resources={"worker": 1})
    ray.init(address=cluster.address, namespace="orchestrator-tests", include_dashboard=False,
             log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def cli_main(capsys, monkeypatch):
    """`cli_main(*args)`: `orchestrator ARGS` through the installed entry point (errors exit 2), in this process;
    returns (exit code, stdout, stderr)."""
    from orchestrator.cli import main
    from orchestrator.model import set_limits

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["orchestrator", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
        finally:
            set_limits(None)  # --max-tasks sets the limit for the rest of the process
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def actor_factory(tmp_path, **defaults):
    """`start(**overrides)` starts an orchestrator actor on its own SQLite store under `tmp_path` (test settings:
    fast retries, a short lease; `defaults` then `overrides` on top); `start.store()` opens that store; `stop()`
    shuts every started actor down and kills it. For the `orch` fixtures of the runtime tests."""
    import ray

    from orchestrator.runtime.actor import OrchestratorActor
    from orchestrator.runtime.config import RuntimeConfig
    from orchestrator.store import Store

    handles = []

    def start(**overrides):
        settings = {"data_dir": str(tmp_path / "state"), "redis_url": None, "retry_base": 0.05, "lease_ttl_s": 3.0,
                    "node_refresh_s": 0.5, **defaults, **overrides}
        handle = OrchestratorActor.options(num_cpus=0, resources={"head": 0.001}).remote(
            RuntimeConfig(**settings).model_dump())
        ray.get(handle.ping.remote())
        handles.append(handle)
        return handle

    def stop():
        for h in handles:
            try:
                ray.get(h.shutdown.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - already dead (killed by the test)
                pass
            ray.kill(h)

    start.store = lambda: Store.open(None, data_dir=tmp_path / "state")
    return start, stop

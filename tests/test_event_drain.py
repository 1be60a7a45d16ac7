"""The end of a run reaches the event sinks before anyone is told the run ended: a client waiting for a run returns
only once the run's last events are in every sink (here a real Redis stream), and an orchestrator that shuts down
first delivers everything it committed. Before, the dispatcher's next poll (0.2 s later) could come after the
client had returned, or never (the orchestrator stopped first): the final task.succeeded and workflow.succeeded
were missing from the stream until a later orchestrator opened the store."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid

import pytest
import ray
import redis

from orchestrator.loaders import workflow_from_dict
from orchestrator.model import TaskSpec, Workflow
from orchestrator.states import TaskStatus
from orchestrator.store import (
    EventDispatcher,
    InProcessSink,
    RedisStreamSink,
    Store,
    TaskChange,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")  # as in conftest.py
TASKS = 100
REPEATS = 6


@pytest.fixture
def stream():
    """A Redis stream name of its own for each test (deleted afterwards), and a client to read it."""
    name = f"orchestrator:test-drain:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(REDIS_URL)
    yield client, name
    client.delete(name)
    client.close()


def tiny_workflow(name: str):
    """100 tasks of almost nothing: the run ends a few ms after its last task, as in the reported runs."""
    return workflow_from_dict({"name": name, "tasks": [
        {"id": f"t{i}", "entrypoint": "orchestrator.runtime.builtins:identity", "args": [i]} for i in range(TASKS)]})


def start_orchestrator(tmp_path, stream_name: str):
    from orchestrator.runtime.actor import OrchestratorActor
    from orchestrator.runtime.config import RuntimeConfig

    config = RuntimeConfig(data_dir=str(tmp_path / f"state-{uuid.uuid4().hex[:6]}"), redis_url=REDIS_URL,
                           redis_stream=stream_name, webhook_url=None, event_subscribers=[])
    # Unnamed, so that it never meets another test's named orchestrator.
    return OrchestratorActor.options(num_cpus=0, resources={"head": 0.001}).remote(config.model_dump())


def missing_from_stream(client: redis.Redis, stream_name: str, run_id: str) -> list[str]:
    """What the stream lacks of the run's end: workflow.succeeded and each task's task.succeeded."""
    types: dict[str, set[str]] = {}
    for _, fields in client.xrange(stream_name):
        if fields[b"run_id"].decode() == run_id:
            types.setdefault(fields[b"type"].decode(), set()).add(fields[b"task_id"].decode())
    missing = [] if "workflow.succeeded" in types else ["workflow.succeeded"]
    tasks = types.get("task.succeeded", set())
    missing += [f"task.succeeded of t{i}" for i in range(TASKS) if f"t{i}" not in tasks]
    return missing


def test_the_client_returns_only_after_the_run_s_last_events_are_in_the_stream(ray_cluster, tmp_path, stream):
    """`wait_for` (as `orchestrator run` and `resume` use it: with a progress callback, and blocking) returns once
    the run's final events are in the Redis stream, every time."""
    from orchestrator.runtime.client import wait_for

    client, name = stream
    h = start_orchestrator(tmp_path, name)
    lacking: dict[int, list[str]] = {}
    try:
        for i in range(REPEATS):
            run_id = ray.get(h.submit.remote(tiny_workflow(f"drain{i}")))
            if i % 2:
                final = wait_for(h, [run_id], timeout=120)[run_id]
            else:
                final = wait_for(h, [run_id], on_progress=lambda p: None, poll=0.05, timeout=120)[run_id]
            missing = missing_from_stream(client, name, run_id)  # at once: no grace period
            assert final["status"] == "succeeded", final
            if missing:
                lacking[i] = missing
    finally:
        ray.get(h.shutdown.remote())
        ray.kill(h)
    assert not lacking, f"{len(lacking)} of {REPEATS} runs lacked events when the wait returned: {lacking}"


def test_shutdown_delivers_everything_committed_before_it_stops(ray_cluster, tmp_path, stream):
    """An orchestrator shut down right after a run ended (as `orchestrator run` on its own local Ray does) first
    brings its sinks up to date."""
    client, name = stream
    lacking: dict[int, list[str]] = {}
    for i in range(3):
        h = start_orchestrator(tmp_path, name)
        try:
            run_id = ray.get(h.submit.remote(tiny_workflow(f"stop{i}")))
            final = ray.get(h.wait.remote(run_id, 120))  # the run's end only: no wait for its events
            assert final["status"] == "succeeded", final
            ray.get(h.shutdown.remote(), timeout=60)
        finally:
            ray.kill(h)
        missing = missing_from_stream(client, name, run_id)
        if missing:
            lacking[i] = missing
    assert not lacking, f"{len(lacking)} of 3 shut-down orchestrators left events undelivered: {lacking}"


def test_a_sink_that_cannot_deliver_costs_a_bounded_wait_and_a_warning(ray_cluster, tmp_path, caplog, monkeypatch):
    """Redis not listening: the client gives up after ORCHESTRATOR_EVENTS_WAIT seconds and says so, naming the sink
    and its error; shutdown gives up after its 10 s and logs how many events were left."""
    from orchestrator.runtime.actor import OrchestratorActor
    from orchestrator.runtime.client import wait_for
    from orchestrator.runtime.config import RuntimeConfig

    with socket_closed_port() as port:
        data = tmp_path / "state"
        config = RuntimeConfig(data_dir=str(data), redis_url=f"redis://127.0.0.1:{port}/0", redis_stream="x",
                               webhook_url=None, event_subscribers=[])
        h = OrchestratorActor.options(num_cpus=0, resources={"head": 0.001}).remote(config.model_dump())
        try:
            run_id = ray.get(h.submit.remote(workflow_from_dict({"name": "lost", "tasks": [
                {"id": "a", "entrypoint": "orchestrator.runtime.builtins:identity", "args": [1]}]})))
            monkeypatch.setenv("ORCHESTRATOR_EVENTS_WAIT", "1")
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="orchestrator.client"):
                final = wait_for(h, [run_id], timeout=60)[run_id]
            assert final["status"] == "succeeded" and time.monotonic() - start < 20
            (warning,) = [r.getMessage() for r in caplog.records if r.name == "orchestrator.client"]
            assert f"the last events of run {run_id} were not all delivered to the event sinks within 1 s" in warning
            assert f"redis:127.0.0.1:{port}/0/x has events up to 0" in warning and "XADD" in warning
            start = time.monotonic()
            ray.get(h.shutdown.remote(), timeout=60)
            assert 9 < time.monotonic() - start < 30  # waited for the sink, up to its bound
        finally:
            ray.kill(h)
    logged = [json.loads(line)["message"] for line in (data / "logs" / "orchestrator.jsonl").read_text().splitlines()]
    with Store.open(None, data_dir=data) as store:
        left = len(store.events(limit=100_000))
    assert any(f"{left} event(s) left undelivered" in m for m in logged), logged[-5:]


# ---- the dispatcher's high-water mark, without Ray -----------------------------------------------------------------

def produce(store: Store, n: int) -> str:
    run_id = store.create_workflow(Workflow(name="ev", tasks=[TaskSpec(id=f"t{i}") for i in range(n)]), "fifo")
    store.apply([TaskChange(run_id, f"t{i}", TaskStatus.READY) for i in range(n)])
    return run_id


def test_wait_delivered_is_woken_by_delivery_not_by_polling(sqlite_url):
    """With a poll interval of a minute, a waiter still returns as soon as the events are out: waiting wakes the
    dispatcher, and each delivery notifies the waiters."""
    with Store.open(sqlite_url) as store:
        sink = InProcessSink(name="local", durable=True)
        got: list[int] = []
        sink.subscribe(lambda e: got.append(e.id))
        dispatcher = EventDispatcher(store, [sink], poll_interval=60.0).start()
        try:
            assert dispatcher.wait_delivered(0, timeout=5)  # nothing to wait for
            time.sleep(0.1)  # the threads' first pass is over: from now on they sleep for a minute
            run_id = produce(store, 5)
            # Polling would only look again after 60 s: returning True within the 10 s timeout means it was woken.
            assert dispatcher.wait_delivered(run_id, timeout=10)
            assert got == [e.id for e in store.events(limit=1000)]
            assert dispatcher.delivered_up_to() == store.latest_event_id()
            other = produce(store, 2)
            assert dispatcher.wait_delivered([run_id, other], timeout=10)
            assert dispatcher.wait_delivered(store.latest_event_id(), timeout=10)
            assert dispatcher.drain(timeout=5) == 0
        finally:
            dispatcher.stop()


def test_a_sink_that_cannot_deliver_bounds_the_wait_and_the_drain_says_what_is_left(sqlite_url, caplog):
    with Store.open(sqlite_url) as store, socket_closed_port() as port:
        dead = RedisStreamSink(f"redis://127.0.0.1:{port}/0", stream="x", socket_timeout=0.5)
        local = InProcessSink(name="local", durable=True)
        dispatcher = EventDispatcher(store, [dead, local], poll_interval=0.05, max_backoff=0.2).start()
        try:
            run_id = produce(store, 3)  # 4 events
            start = time.monotonic()
            assert not dispatcher.wait_delivered(run_id, timeout=1.0)
            assert 0.9 < time.monotonic() - start < 5
            report = dispatcher.wait_runs_delivered([run_id], timeout=0.3)
            assert not report["delivered"] and report["event_id"] == store.latest_event_id()
            assert [b["sink"] for b in report["behind"]] == [dead.name] and "XADD" in report["behind"][0]["error"]
            with caplog.at_level(logging.WARNING, logger="orchestrator.events"):
                start = time.monotonic()
                assert dispatcher.drain(timeout=1.0) == 4
                assert time.monotonic() - start < 5
            assert any("4 event(s) left undelivered" in r.getMessage() and dead.name in r.getMessage()
                       for r in caplog.records), [r.getMessage() for r in caplog.records]
        finally:
            dispatcher.stop(close_sinks=True)
        assert store.sink_cursor("local") == store.latest_event_id()  # the healthy sink got everything


@contextlib.contextmanager
def socket_closed_port():
    """A local TCP port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port

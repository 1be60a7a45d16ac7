"""Event delivery from the store's outbox to real sinks: in-process subscribers, a real Redis (and one we stop
and restart), and a real local HTTP server that checks signatures and fails on purpose. Every test asserts
that each sink ends with every event exactly once, in outbox order."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from orchestrator.errors import OrchestratorError
from orchestrator.model import TaskSpec, Workflow
from orchestrator.states import TaskStatus
from orchestrator.store import (
    EventDispatcher,
    EventRecord,
    InProcessSink,
    RedisStreamSink,
    Store,
    TaskChange,
    WebhookSink,
)
SECRET = "s3cret-for-tests"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")  # as in conftest.py


@pytest.fixture
def store(store_url):
    with Store.open(store_url) as s:
        yield s


def produce(store: Store, n: int) -> str:
    """A run with n tasks, each moved to ready: n + 1 events (workflow.submitted, then task.ready)."""
    run_id = store.create_workflow(Workflow(name="ev", tasks=[TaskSpec(id=f"t{i}") for i in range(n)]), "fifo")
    store.apply([TaskChange(run_id, f"t{i}", TaskStatus.READY) for i in range(n)])
    return run_id


def outbox_ids(store: Store) -> list[int]:
    return [e.id for e in store.events(limit=100_000)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that checks the HMAC signature (401 if wrong), answers 500 to the
    request numbers in `fail` (1-based), and records the events it accepted."""

    def __init__(self, port: int = 0, secret: str = SECRET, fail: set[int] | None = None):
        self.secret = secret.encode()
        self.fail = set(fail or ())
        self.requests = 0
        self.accepted: list[dict] = []
        self.rejected_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Orchestrator-Signature", ""), expected):
                    receiver.rejected_signatures += 1
                    self.send_response(401)
                elif receiver.requests in receiver.fail:
                    self.send_response(500)
                else:
                    event = json.loads(body)
                    assert self.headers["X-Orchestrator-Event-Id"] == str(event["id"])
                    receiver.accepted.append(event)
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ids(self) -> list[int]:
        return [e["id"] for e in self.accepted]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    started: list[WebhookReceiver] = []

    def start(**kwargs) -> WebhookReceiver:
        started.append(WebhookReceiver(**kwargs))
        return started[-1]

    yield start
    for r in started:
        r.close()


# ---------------------------------------------------------------------- in-process and the dispatcher


def test_in_process_subscribers_get_new_events_in_order_filtered_by_type(store):
    produce(store, 2)  # history: a non-durable sink does not replay it
    sink = InProcessSink()
    everything: list[EventRecord] = []
    workflow_only: list[EventRecord] = []
    sink.subscribe(everything.append)
    sink.subscribe(workflow_only.append, type_prefix="workflow.")
    sink.subscribe(lambda e: 1 / 0)  # a broken subscriber holds nobody up
    dispatcher = EventDispatcher(store, [sink])
    first_new = store.latest_event_id() + 1

    produce(store, 3)
    assert dispatcher.deliver_once() == 4
    assert [e.id for e in everything] == list(range(first_new, first_new + 4))
    assert [e.type for e in everything] == ["workflow.submitted"] + ["task.ready"] * 3
    assert [e.type for e in workflow_only] == ["workflow.submitted"]
    assert dispatcher.deliver_once() == 0  # nothing twice
    assert len(everything) == 4


def test_durable_cursor_resumes_after_a_restart_without_repeats(store):
    produce(store, 3)
    seen: list[int] = []
    sink = InProcessSink(name="audit", durable=True)
    sink.subscribe(lambda e: seen.append(e.id))
    assert EventDispatcher(store, [sink], batch_size=2).deliver_once() == 4  # several batches
    produce(store, 2)

    restarted = InProcessSink(name="audit", durable=True)  # a new process: same name, fresh object
    restarted.subscribe(lambda e: seen.append(e.id))
    assert EventDispatcher(store, [restarted]).deliver_once() == 3
    assert seen == outbox_ids(store)
    assert store.sink_cursor("audit") == seen[-1]

    store.advance_sink_cursor("audit", 2)  # cursors only move forward...
    assert store.sink_cursor("audit") == seen[-1]
    store.set_sink_cursor("audit", 2)  # ...unless set, to replay
    replay_from = len(seen)
    assert EventDispatcher(store, [restarted]).deliver_once() == replay_from - 2
    assert seen[replay_from:] == outbox_ids(store)[2:]


def test_background_threads_deliver_as_events_arrive(store):
    sink = InProcessSink()
    got: list[int] = []
    sink.subscribe(lambda e: got.append(e.id))
    with EventDispatcher(store, [sink], poll_interval=0.05) as dispatcher:
        produce(store, 5)
        dispatcher.wake()
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert got == outbox_ids(store)
    assert dispatcher.status()[0].failures == 0


def test_sink_names_must_be_unique(store):
    with pytest.raises(OrchestratorError, match="share the name 'x'"):
        EventDispatcher(store, [InProcessSink(name="x"), InProcessSink(name="x")])


# ---------------------------------------------------------------------- Redis


def test_redis_stream_gets_every_event_in_order(store):
    stream = f"orchestrator:test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(REDIS_URL)
    sink = RedisStreamSink(REDIS_URL, stream=stream, maxlen=10_000)
    try:
        run_id = produce(store, 4)
        assert EventDispatcher(store, [sink]).deliver_once() == 5
        entries = client.xrange(stream)
        assert [int(fields[b"event_id"]) for _, fields in entries] == outbox_ids(store)
        _, last = entries[-1]
        assert last[b"type"] == b"task.ready" and last[b"run_id"].decode() == run_id
        assert json.loads(last[b"payload"])["task_id"] == "t3"
        assert store.sink_cursor(sink.name) == outbox_ids(store)[-1]
    finally:
        client.delete(stream)
        client.close()
        sink.close()


def start_redis(port: int, data_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


def stop_redis(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(10)


def test_redis_outage_holds_the_cursor_and_other_sinks_carry_on(store, tmp_path):
    port = free_port()
    server = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    sink = RedisStreamSink(url, stream="events", socket_timeout=1.0)
    local = InProcessSink()
    local_ids: list[int] = []
    local.subscribe(lambda e: local_ids.append(e.id))
    dispatcher = EventDispatcher(store, [sink, local])
    try:
        produce(store, 2)
        dispatcher.deliver_once()
        stop_redis(server)

        produce(store, 3)
        dispatcher.deliver_once()
        redis_status, local_status = dispatcher.status()
        assert redis_status.failures == 1 and "XADD" in redis_status.last_error
        assert redis_status.cursor == store.sink_cursor(sink.name) == 3  # stopped where Redis went away
        assert local_ids == outbox_ids(store) and local_status.failures == 0  # not held up by the outage

        server = start_redis(port, tmp_path)  # back, with its data (append-only file)
        assert dispatcher.deliver_once() == 4
        entries = redis.Redis(port=port).xrange("events")
        assert [int(fields[b"event_id"]) for _, fields in entries] == outbox_ids(store)
        assert dispatcher.status()[0].failures == 0
    finally:
        sink.close()
        stop_redis(server)


# ---------------------------------------------------------------------- webhooks


def test_webhook_requests_are_signed_and_a_wrong_secret_is_refused(store, receivers):
    receiver = receivers()
    produce(store, 2)
    good = WebhookSink(receiver.url, SECRET, name="good")
    bad = WebhookSink(receiver.url, "not-the-secret", max_attempts=1, name="bad")
    dispatcher = EventDispatcher(store, [good, bad])
    assert dispatcher.deliver_once() == 3  # all from `good`, none from `bad`
    assert receiver.ids() == outbox_ids(store)
    assert receiver.rejected_signatures == 1
    assert store.sink_cursor("bad") is None
    first = receiver.accepted[0]
    assert first["type"] == "workflow.submitted" and first["payload"]["tasks"] == 2
    body = json.dumps(first, separators=(",", ":")).encode()
    assert good.sign(body) == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_failing_webhook_gets_every_event_later_once_and_in_order(store, receivers):
    # Requests 3-6 fail: event 3 fails twice (2 attempts) in the first round, twice more in the second.
    receiver = receivers(fail={3, 4, 5, 6})
    produce(store, 5)
    sink = WebhookSink(receiver.url, SECRET, max_attempts=2, backoff=0.01)
    dispatcher = EventDispatcher(store, [sink])

    assert dispatcher.deliver_once() == 2
    assert store.sink_cursor(sink.name) == outbox_ids(store)[1]
    assert dispatcher.deliver_once() == 0
    assert dispatcher.status()[0].failures == 2
    assert dispatcher.deliver_once() == 4
    assert receiver.ids() == outbox_ids(store)
    assert receiver.requests == 10  # 6 events + 4 failed attempts


def test_webhook_that_is_not_listening_gets_the_events_when_it_comes_up(store, receivers):
    port = free_port()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", SECRET, max_attempts=2, backoff=0.01, timeout=2.0)
    local = InProcessSink()
    local_ids: list[int] = []
    local.subscribe(lambda e: local_ids.append(e.id))
    dispatcher = EventDispatcher(store, [sink, local])

    produce(store, 3)
    assert dispatcher.deliver_once() == 4  # all of them to the in-process sink, none to the webhook
    assert store.sink_cursor(sink.name) is None
    assert "ConnectError" in dispatcher.status()[0].last_error

    receiver = receivers(port=port)
    assert dispatcher.deliver_once() == 4
    produce(store, 1)
    assert dispatcher.deliver_once() == 4  # 2 new events, to both sinks
    assert receiver.ids() == outbox_ids(store) == local_ids

"""Where outbox events go: subscribers in this process, a Redis stream, or an HMAC-signed webhook.

A sink delivers a batch in order and raises `DeliveryError` (saying how many it delivered first) when it
cannot; the dispatcher then keeps the sink's cursor at the last delivered event and tries again later.
Delivery is at-least-once: consumers deduplicate on the event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from ..errors import OrchestratorError
from .records import EventRecord

log = logging.getLogger("orchestrator.events")

Subscriber = Callable[[EventRecord], None]


class DeliveryError(OrchestratorError):
    """A sink could not deliver a batch; the first `delivered` events of it did get through."""

    def __init__(self, sink: str, delivered: int, reason: str):
        self.sink = sink
        self.delivered = delivered
        super().__init__(f"Sink '{sink}' could not deliver events ({delivered} delivered first): {reason}")


class Sink:
    """Base of every sink. `name` keys the sink's cursor in the store; a `durable` sink keeps that cursor in
    the database (and so resumes after a restart), a non-durable one starts at the newest event each time."""

    name: str = "sink"
    durable: bool = True

    def __init__(self, type_prefix: str | tuple[str, ...] = ""):
        self.type_prefixes: tuple[str, ...] = (type_prefix,) if isinstance(type_prefix, str) else type_prefix

    def accepts(self, event: EventRecord) -> bool:
        return not self.type_prefixes or event.type.startswith(self.type_prefixes)

    def deliver(self, events: Sequence[EventRecord]) -> None:
        """Deliver `events` in order, or raise DeliveryError."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; a delivery in progress gives up."""


class InProcessSink(Sink):
    """Calls subscriber functions in this process, each for the event types starting with its prefix.

    A subscriber that raises is logged and skipped: it cannot hold back the others.
    """

    def __init__(self, name: str = "in-process", durable: bool = False):
        super().__init__()
        self.name = name
        self.durable = durable
        self._subscribers: list[tuple[str, Subscriber]] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber, type_prefix: str = "") -> Callable[[], None]:
        """Call `callback(event)` for every event whose type starts with `type_prefix`; returns unsubscribe."""
        entry = (type_prefix, callback)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def deliver(self, events: Sequence[EventRecord]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for event in events:
            for prefix, callback in subscribers:
                if event.type.startswith(prefix):
                    try:
                        callback(event)
                    except Exception:
                        log.exception("event subscriber %r failed on event %d (%s)", callback, event.id,
                                      event.type)


class RedisStreamSink(Sink):
    """Appends each event to a Redis stream with XADD, trimmed to about `maxlen` entries.

    Entry fields: event_id, type, run_id, task_id ('' when none), created_at, payload (JSON).
    """

    def __init__(self, url: str, stream: str = "orchestrator:events", maxlen: int | None = 100_000,
                 name: str | None = None, type_prefix: str | tuple[str, ...] = "",
                 socket_timeout: float = 5.0):
        import redis

        super().__init__(type_prefix)
        self.stream = stream
        self.maxlen = maxlen
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=socket_timeout,
                                           socket_timeout=socket_timeout)
        if name is None:
            kw = self._redis.connection_pool.connection_kwargs
            name = f"redis:{kw.get('host', kw.get('path', ''))}:{kw.get('port', '')}/{kw.get('db', 0)}/{stream}"
        self.name = name

    def deliver(self, events: Sequence[EventRecord]) -> None:
        import redis

        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            if self.accepts(event):
                pipe.xadd(self.stream, {
                    "event_id": event.id, "type": event.type, "run_id": event.run_id or "",
                    "task_id": event.task_id or "", "created_at": repr(event.created_at),
                    "payload": json.dumps(event.payload, separators=(",", ":")),
                }, maxlen=self.maxlen, approximate=True)
        if not len(pipe):
            return
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise DeliveryError(self.name, 0, f"XADD to stream '{self.stream}' failed: {exc}") from exc

    def close(self) -> None:
        self._redis.close()


class WebhookSink(Sink):
    """POSTs each event as JSON to `url`, signed with `X-Orchestrator-Signature: sha256=<hex HMAC of body>`.

    Any 2xx answer is success. A failed POST (connection error, timeout, any other status) is retried up to
    `max_attempts` times with exponential backoff (`backoff` * 2^n, at most `max_backoff` seconds), then the
    batch stops there and the dispatcher retries later from the same event.
    """

    def __init__(self, url: str, secret: str | bytes, timeout: float = 5.0, max_attempts: int = 3,
                 backoff: float = 0.5, max_backoff: float = 10.0, name: str | None = None,
                 type_prefix: str | tuple[str, ...] = "", headers: dict[str, str] | None = None):
        import httpx

        super().__init__(type_prefix)
        if not secret:
            raise OrchestratorError("A webhook sink needs a non-empty secret to sign its requests")
        if max_attempts < 1:
            raise OrchestratorError(f"max_attempts={max_attempts}: a webhook needs at least 1 attempt")
        self.url = url
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = dict(headers or {})
        self._client = httpx.Client(timeout=timeout)
        self._closed = threading.Event()
        parts = urlsplit(url)
        self.name = name or f"webhook:{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
                            f"{parts.path}"  # no credentials or query string in the cursor key

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def deliver(self, events: Sequence[EventRecord]) -> None:
        for delivered, event in enumerate(events):
            if self.accepts(event):
                self._post(event, delivered)

    def _post(self, event: EventRecord, delivered: int) -> None:
        import httpx

        body = json.dumps(event.to_json_dict(), separators=(",", ":")).encode()
        headers = {**self._headers, "Content-Type": "application/json", "X-Orchestrator-Signature": self.sign(body),
                   "X-Orchestrator-Event": event.type, "X-Orchestrator-Event-Id": str(event.id)}
        reason = ""
        for attempt in range(self.max_attempts):
            if self._closed.is_set():
                raise DeliveryError(self.name, delivered, "the sink was closed")
            try:
                response = self._client.post(self.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.max_attempts:
                self._closed.wait(min(self.backoff * 2**attempt, self.max_backoff))
        raise DeliveryError(self.name, delivered,
                            f"POST {self.url} failed {self.max_attempts} times, last: {reason}")

    def close(self) -> None:
        self._closed.set()
        self._client.close()


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # `from orchestrator.store.sinks import EventDispatcher` works too; the dispatcher lives in events.py.
    if name == "EventDispatcher":
        from .events import EventDispatcher

        return EventDispatcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

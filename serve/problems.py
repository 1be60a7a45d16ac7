"""Errors as problem+json (RFC 9457): every error response has `type`, `title`, `status` and `detail`, and a
validation error names each field; a server fault says only that it happened (and its id in the log), never
a stack trace. Also the request-size limit (413) and the metrics of every request."""

from __future__ import annotations

import logging
import time
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import OrchestratorError

log = logging.getLogger("orchestrator.api")
PROBLEM = "application/problem+json"


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class ApiError(Exception):
    """An error answered with `status` and `detail` (and headers such as Retry-After or WWW-Authenticate)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")] or [str(p) for p in loc]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return problem(exc.status, exc.detail, exc.headers)

    @app.exception_handler(OrchestratorError)
    async def _orchestrator_error(request: Request, exc: OrchestratorError):
        status = getattr(exc, "http_status", 500)
        if status >= 500 and status != 503:
            return _fault(request, exc)
        return problem(status, str(exc) or type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]) or "invalid request"
        return problem(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _fault(request, exc)


def _fault(request: Request, exc: BaseException) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return problem(500, f"Internal error {error_id}; the server's log has the details", error_id=error_id)


class BodyLimit:
    """Pure ASGI middleware: a request body over `max_bytes` is refused with 413, by its Content-Length or, for a
    chunked body, as soon as the bytes read pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return await _send(send, problem(400, "Content-Length is not a number"), scope, receive)
                if size > self.max_bytes:
                    return await _send(send, self._too_large(), scope, receive)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send(send, self._too_large(), scope, receive)

    def _too_large(self) -> JSONResponse:
        return problem(413, f"The request body is larger than this API accepts ({self.max_bytes} bytes)")


class _TooLarge(Exception):
    pass


async def _send(send, response: JSONResponse, scope, receive) -> None:
    await response(scope, receive, send)


class RequestMetrics:
    """Pure ASGI middleware: counts requests and times them (ray.util.metrics, so they reach Prometheus through
    Ray's metrics export), labelled by route template, method and status."""

    def __init__(self, app):
        self.app = app
        from ray.util.metrics import Counter, Histogram

        self.requests = Counter("orchestrator_api_requests", "HTTP API requests",
                                tag_keys=("route", "method", "status"))
        self.latency = Histogram("orchestrator_api_request_seconds", "HTTP API request time, seconds",
                                 boundaries=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
                                 tag_keys=("route", "method"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            try:
                self.requests.inc(tags={"route": route, "method": scope["method"], "status": str(status[0])})
                self.latency.observe(time.perf_counter() - t0, tags={"route": route, "method": scope["method"]})
            except Exception:  # noqa: BLE001 - metrics never fail a request
                pass

"""The HTTP API: a FastAPI app behind Ray Serve, versioned under /api/v1, with API keys, roles and a global rate
limit. `build_app(args)` is the Serve application (`serve run serve.app:build_app`, `serve deploy
configs/serve.yaml`, `orchestrator serve`): the gateway plus the three model deployments it calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve
from starlette.concurrency import run_in_threadpool

from orchestrator.errors import (
    OrchestratorError,
    UnavailableError,
)
from orchestrator.model import Workflow

from . import problems
from .auth import Caller, KeyVerifier, bearer_key
from .deployments import OptimizerModel, PredictorModel, SchedulerModel
from .problems import ApiError
from .ratelimit import RateLimiter
from .schemas import (
    AnalyzeRequest,
    ApplyRequest,
    CapacityRequest,
    CheapestRequest,
    DecideRequest,
    KeyRequest,
    PredictRequest,
    PriorityRequest,
    SeriesRequest,
    WorkflowSource,
)
from .settings import ApiSettings

V1 = "/api/v1"
RUN_ID = Path(min_length=1, max_length=128)
TASK_ID = Path(min_length=1, max_length=200)
_JSON_OR_YAML = {"content": {
    "application/json": {"schema": {"type": "object", "description": "A workflow (this project's format or "
                                                                        "WfCommons JSON)"}},
    "application/yaml": {"schema": {"type": "string"}}}, "required": True}


def _unwrap(exc: BaseException) -> BaseException:
    """The exception raised inside a Ray actor or deployment (without Ray's wrapper and its traceback text)."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError):
            return cause
        from orchestrator.runtime.client import remote_error_message

        return OrchestratorError(remote_error_message(exc))
    if isinstance(exc, RayActorError):
        return UnavailableError(f"A service of the API is not running: {type(exc).__name__}")
    return exc


async def remote(call) -> Any:
    """Await a Ray actor call or a deployment response, re-raising what was raised there as itself."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001
        raise _unwrap(exc) from None


class ApiCore:
    """What every route uses: the store (reads), the key verifier, the rate limiter, the orchestrator actor
    (writes) and the model deployments."""

    def __init__(self, settings: ApiSettings, scheduler=None, optimizer=None, predictor=None):
        from orchestrator.store import Store

        self.settings = settings
        self.store = Store.open(settings.db_url, data_dir=settings.data_dir)
        self.verifier = KeyVerifier(self.store, settings.key_cache_s)
        self.limiter = RateLimiter(settings.rate_limit.requests_per_second, settings.rate_limit.burst,
                                   settings.redis_url, prefix=rate_limit_prefix(self.store))
        self.scheduler, self.optimizer, self.predictor = scheduler, optimizer, predictor
        self._orchestrator = None
        self._orchestrator_lock = asyncio.Lock()
        self._scheduling = None  # heuristic decisions, answered in the gateway
        self._warm_up()

    def _warm_up(self) -> None:
        """One small decision now, so that the first request does not pay for the simulator's imports and the
        policy's first use."""
        from orchestrator.errors import OrchestratorError

        try:
            wf = Workflow(name="warm-up", tasks=[{"id": "a", "duration": 1.0},
                                                 {"id": "b", "duration": 1.0, "depends_on": ["a"]}])
            self.decide_here(wf, None, "srpt-cp", None, 1)
        except OrchestratorError:  # a bad default cluster: named by the first request that uses it
            pass

    async def orchestrator(self):
        """The orchestrator actor of this store, started when none runs."""
        if self._orchestrator is not None:
            return self._orchestrator
        async with self._orchestrator_lock:
            if self._orchestrator is None:
                from orchestrator.runtime.client import get_orchestrator
                from orchestrator.runtime.config import RuntimeConfig

                config = RuntimeConfig(db_url=self.settings.db_url, data_dir=self.settings.data_dir)
                try:
                    self._orchestrator = await run_in_threadpool(get_orchestrator, config)
                except OrchestratorError as exc:
                    raise UnavailableError(f"The orchestrator is not available: {exc}") from None
        return self._orchestrator

    async def actor(self, method: str, *args) -> Any:
        handle = await self.orchestrator()
        try:
            return await remote(getattr(handle, method).remote(*args))
        except UnavailableError:
            self._orchestrator = None  # it died: find or start it again next time
            raise

    def decide_here(self, workflow: Workflow, cluster, policy: str, task_id: str | None, samples: int) -> dict:
        from .services import SchedulingService, parse_cluster

        if self._scheduling is None:
            self._scheduling = SchedulingService(load_learned=False)
        return self._scheduling.decide(workflow, parse_cluster(cluster, self.settings.default_cluster), policy,
                                       task_id, samples)

    def workflow_of(self, body: WorkflowSource) -> tuple[Workflow, dict[str, str] | None]:
        from orchestrator.loaders import workflow_from_dict

        if body.workflow is not None:
            return workflow_from_dict(body.workflow, "<request body>.workflow"), None
        wf = self.store.load_spec(body.run_id)
        statuses = {t.task_id: t.status.value for t in self.store.get_tasks(body.run_id)}
        return wf, statuses


def rate_limit_prefix(store) -> str:
    """The Redis prefix of a store's rate-limit buckets (one per key id). Ids start at 1 in every store: the
    store's identity keeps two APIs on different stores that share a Redis apart."""
    return f"orchestrator:rl:{hashlib.sha256(store.url_masked.encode()).hexdigest()[:12]}:"


def build_api(core: ApiCore) -> FastAPI:
    settings = core.settings
    app = FastAPI(title="Workflow orchestrator API", version="1.0",
                  description="Workflows, scheduling decisions, optimization and resource prediction. Every route "
                              "but /healthz and /readyz needs `Authorization: Bearer <key>` (`orchestrator keys "
                              "create`); errors are application/problem+json (RFC 9457).")
    problems.install(app)
    app.add_middleware(problems.BodyLimit, max_bytes=settings.max_body_bytes)
    try:
        app.add_middleware(problems.RequestMetrics)
    except Exception:  # noqa: BLE001 - outside Ray (no metrics agent): no metrics
        pass
    bearer = HTTPBearer(auto_error=False, description="An API key from `orchestrator keys create`")

    def role(required: str):
        async def check(request: Request, response: Response,
                        credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Caller:
            t0 = time.perf_counter()
            key = credentials.credentials if credentials else bearer_key(request.headers.get("authorization"))
            if not key:
                raise ApiError(401, "An API key is needed: send `Authorization: Bearer <key>`",
                               {"WWW-Authenticate": "Bearer"})
            caller = await core.verifier.averify(key)
            if caller is None:
                raise ApiError(401, "The API key is unknown, revoked or expired",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            t1 = time.perf_counter()
            verdict = await core.limiter.take(str(caller.key_id))
            t2 = time.perf_counter()
            limit = settings.rate_limit
            headers = {"X-RateLimit-Limit": f"{limit.requests_per_second:g}", "X-RateLimit-Burst": str(limit.burst),
                       "X-RateLimit-Scope": verdict.scope}
            if not verdict.allowed:
                raise ApiError(429, f"Rate limit of {limit.requests_per_second:g} requests/s (bursts of "
                                    f"{limit.burst}) reached for key '{caller.name}'",
                               {**headers, "Retry-After": str(max(1, math.ceil(verdict.retry_after)))})
            if not caller.has(required):
                raise ApiError(403, f"Key '{caller.name}' has role {caller.role}; this needs {required} or above")
            request.state.timing = f"auth;dur={(t1 - t0) * 1e3:.3f}, ratelimit;dur={(t2 - t1) * 1e3:.3f}"
            response.headers.update({**headers, "X-RateLimit-Remaining": str(verdict.remaining),
                                     "Server-Timing": request.state.timing})
            request.state.caller = caller
            return caller
        return Depends(check)

    viewer, operator, admin = role("viewer"), role("operator"), role("admin")

    # ---- health -------------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(core.store.latest_event_id)
            checks["store"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["store"] = f"unavailable: {type(exc).__name__}"
        try:
            info = await asyncio.wait_for(core.actor("ping"), timeout=5)
            checks["orchestrator"] = "ok" if info.get("ok") else f"failing: {info.get('error')}"
        except Exception as exc:  # noqa: BLE001
            checks["orchestrator"] = f"unavailable: {str(_unwrap(exc)) or type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)

    # ---- workflows ----------------------------------------------------------------------------------------
    @app.post(f"{V1}/workflows", status_code=201, tags=["workflows"], openapi_extra={"requestBody": _JSON_OR_YAML})
    async def submit_workflow(request: Request, caller: Caller = operator,
                              policy: str | None = Query(None, min_length=1, max_length=100)) -> JSONResponse:
        """Submit a workflow (JSON or YAML body, or WfCommons JSON); 201 with its run id once durably recorded."""
        from orchestrator.loaders import workflow_from_text
        from orchestrator.scheduling import check_policy

        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/yaml", "application/x-yaml", "text/yaml"):
            raise ApiError(415, f"Content-Type {ctype!r}: send application/json or application/yaml")
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The request body is not UTF-8 text") from None
        wf = workflow_from_text(text, "<request body>", yaml_format="yaml" in ctype)
        settings.check_entrypoints(wf)
        if policy:
            check_policy(policy)
        t0 = time.perf_counter()
        run_id = await core.actor("submit", wf, policy)
        timing = f"{request.state.timing}, submit;dur={(time.perf_counter() - t0) * 1e3:.3f}"
        return JSONResponse({"run_id": run_id, "name": wf.name, "tasks": len(wf.tasks), "status": "pending"},
                            201, headers={"Location": f"{V1}/workflows/{run_id}", "Server-Timing": timing})

    @app.get(f"{V1}/workflows", tags=["workflows"])
    def list_workflows(caller: Caller = viewer, status: str | None = Query(None, max_length=16),
                       name: str | None = Query(None, max_length=1000),
                       cursor: str | None = Query(None, max_length=2000),
                       limit: int = Query(50, ge=1, le=settings.max_page)) -> dict:
        page = core.store.page_runs(status=status, name=name, cursor=cursor, limit=limit)
        return {"items": [_run_json(r) for r in page.items], "next_cursor": page.next_cursor}

    @app.get(f"{V1}/workflows/{{run_id}}", tags=["workflows"])
    def get_workflow(run_id: str = RUN_ID, caller: Caller = viewer,
                     tasks_cursor: str | None = Query(None, max_length=2000),
                     tasks_limit: int = Query(200, ge=1, le=settings.max_page)) -> dict:
        """A run with its task counts and (a page of) its tasks' states."""
        rec = core.store.get_workflow(run_id)
        page = core.store.page_tasks(run_id, cursor=tasks_cursor, limit=tasks_limit)
        return {**_run_json(rec), "counts": core.store.task_counts(run_id),
                "tasks": [_task_json(t) for t in page.items], "tasks_next_cursor": page.next_cursor}

    @app.post(f"{V1}/workflows/{{run_id}}/cancel", status_code=202, tags=["workflows"])
    async def cancel_workflow(run_id: str = RUN_ID, caller: Caller = operator) -> dict:
        rec = await run_in_threadpool(core.store.get_workflow, run_id)
        if rec.status.terminal:
            return {"run_id": run_id, "cancelled": False, "status": rec.status.value,
                    "detail": f"run {run_id} has already ended ({rec.status.value})"}
        cancelled = await core.actor("cancel", run_id)
        if not cancelled:  # not tracked by the orchestrator (being resumed): record the request in the store
            await run_in_threadpool(core.store.request_cancel, run_id)
        return {"run_id": run_id, "cancelled": True, "status": "cancelling"}

    @app.post(f"{V1}/workflows/{{run_id}}/resume", tags=["workflows"])
    async def resume_workflow(run_id: str = RUN_ID, caller: Caller = operator) -> dict:
        rec = await run_in_threadpool(core.store.get_workflow, run_id)
        if rec.status.terminal:
            raise ApiError(409, f"Run {run_id} has ended ({rec.status.value}); there is nothing to resume")
        resumed = await core.actor("resume", run_id)
        return {"run_id": run_id, "resumed": run_id in resumed,
                "detail": "resumed" if run_id in resumed else "already running in the orchestrator"}

    @app.put(f"{V1}/workflows/{{run_id}}/tasks/{{task_id}}/priority", tags=["scheduling"])
    async def set_priority(body: PriorityRequest, run_id: str = RUN_ID, task_id: str = TASK_ID,
                           caller: Caller = operator) -> dict:
        """Change the priority of a task that has not started (higher runs first in every policy)."""
        return await core.actor("set_priority", run_id, task_id, body.priority)

    @app.get(f"{V1}/workflows/{{run_id}}/events", tags=["workflows"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def workflow_events(request: Request, run_id: str = RUN_ID, caller: Caller = viewer,
                              last_event_id: str | None = Header(None, max_length=20),
                              after: int | None = Query(None, ge=0, le=2**62),
                              follow: bool = Query(True)) -> StreamingResponse:
        """The run's events as server-sent events, oldest first; resumes after `Last-Event-ID` (or `after`).
        With follow (the default) the stream stays open until the run ends."""
        start = after or 0
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise ApiError(422, f"Last-Event-ID {last_event_id!r}: give the id of the last event received")
            start = int(last_event_id)
        await run_in_threadpool(core.store.get_workflow, run_id)  # 404 before the stream starts
        return StreamingResponse(_event_stream(core, request, run_id, start, follow), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get(f"{V1}/workflows/{{run_id}}/decisions", tags=["scheduling"])
    def run_decisions(run_id: str = RUN_ID, caller: Caller = viewer,
                      limit: int = Query(100, ge=1, le=settings.max_page)) -> dict:
        core.store.get_workflow(run_id)
        return {"items": [_decision_json(d) for d in core.store.decisions(run_id, limit=limit)]}

    # ---- scheduling ---------------------------------------------------------------------------------------
    @app.post(f"{V1}/scheduling/decisions", status_code=201, tags=["scheduling"])
    async def decide(body: DecideRequest, caller: Caller = operator) -> dict:
        """Where and when a policy would start a task (default: the first task it starts) on a cluster, with the
        resources, a confidence and an explanation; recorded like the runtime's decisions."""
        from orchestrator.scheduling import check_policy
        from orchestrator.store.records import DecisionRecord

        from .services import remaining_workflow

        wf, statuses = await run_in_threadpool(core.workflow_of, body)
        wf = remaining_workflow(wf, statuses)
        policy = body.policy or wf.policy or "srpt-cp"
        check_policy(policy)
        cluster = body.cluster.model_dump() if body.cluster else None
        if policy == "learned" or core.scheduler is None:
            out = await remote(core.scheduler.decide.remote(wf, cluster, policy, body.task_id, body.samples))
        else:  # a heuristic: no model to hold, cheaper here than a hop to the model deployment
            out = await run_in_threadpool(core.decide_here, wf, cluster, policy, body.task_id, body.samples)
        record = DecisionRecord(
            run_id=body.run_id or f"api:{wf.name}"[:128], task_id=out["task_id"], policy=policy, node=out["node"],
            input={"workflow": wf.name, "tasks": len(wf.tasks), "cluster": cluster, "asked_task": body.task_id,
                   "caller": caller.name},
            output={"start_estimate_s": out["start_estimate_s"], "resources": out["resources"],
                    "explanation": out["explanation"]},
            confidence=out["confidence"], latency_us=out["latency_ms"] * 1e3, model_version=out["model_version"])
        out["decision_id"] = await run_in_threadpool(core.store.record_decision, record)
        return out

    @app.get(f"{V1}/scheduling/decisions/{{decision_id}}", tags=["scheduling"])
    def get_decision(decision_id: int = Path(ge=1, le=2**62), caller: Caller = viewer) -> dict:
        return _decision_json(core.store.decision(decision_id))

    # ---- optimization -------------------------------------------------------------------------------------
    @app.post(f"{V1}/optimization/analyze", tags=["optimization"])
    async def analyze(body: AnalyzeRequest, caller: Caller = viewer) -> dict:
        """Bottlenecks, a parallelism plan and recommendations, each measured in the simulator; offered ones are
        recorded and can be applied by id."""
        wf, statuses = await run_in_threadpool(core.workflow_of, body)
        from .services import remaining_workflow

        wf = remaining_workflow(wf, statuses)
        cluster = body.cluster.model_dump() if body.cluster else None
        t0 = time.perf_counter()
        out = await remote(core.optimizer.analyze.remote(wf, cluster, body.policy, body.budget_s, body.deadline_s,
                                                         body.recommend, body.seed))
        out["server_ms"] = (time.perf_counter() - t0) * 1e3
        offered = (out.get("recommendations") or {}).get("recommendations") or []
        for rec in offered:
            params = {"recommendation": rec, "seed": body.seed, "policy": body.policy, "cluster": cluster,
                      **({"spec": body.workflow} if body.workflow is not None else {})}
            rec["id"] = await run_in_threadpool(core.store.record_optimization, rec["kind"], rec["description"],
                                                params, rec["gain"], body.run_id, wf.name)
        return out

    @app.post(f"{V1}/optimization/apply", tags=["optimization"])
    async def apply(body: ApplyRequest, caller: Caller = admin) -> dict:
        """Apply a recorded recommendation: measured again on fresh draws, then the changed workflow (and, with
        submit, its new run)."""
        from orchestrator.loaders import workflow_from_dict

        rec = await run_in_threadpool(core.store.optimization, body.optimization_id)
        params = rec.params or {}
        if "recommendation" not in params:
            raise ApiError(409, f"Optimization {body.optimization_id} was not recorded by the API's analysis")
        if "spec" in params:
            wf = workflow_from_dict(params["spec"], f"<optimization {rec.id}>")
        else:
            wf = await run_in_threadpool(core.store.load_spec, rec.run_id)
        r = params["recommendation"]
        out = await remote(core.optimizer.apply.remote(wf, params.get("cluster"), params.get("policy"),
                                                       params.get("seed", 0), r["kind"], r["targets"]))
        await run_in_threadpool(core.store.verify_optimization, rec.id, out["verified_gain"])
        out["optimization_id"] = rec.id
        if body.submit:
            changed = workflow_from_dict(out["workflow"], "<changed workflow>")
            settings.check_entrypoints(changed)
            out["run_id"] = await core.actor("submit", changed, params.get("policy"))
        return out

    # ---- resources ----------------------------------------------------------------------------------------
    @app.post(f"{V1}/resources/predict", tags=["resources"])
    async def predict(body: PredictRequest, caller: Caller = viewer) -> dict:
        """Runtime, cpu and memory quantiles of tasks before they run."""
        from orchestrator.loaders import workflow_from_dict

        if body.workflow is not None:
            wf = workflow_from_dict(body.workflow, "<request body>.workflow")
        else:
            wf = workflow_from_dict({"name": "predict", "tasks": [{**t, "depends_on": []} for t in body.tasks]},
                                    "<request body>.tasks")
        return await remote(core.predictor.predict.remote(wf.tasks, body.family or wf.family))

    @app.post(f"{V1}/resources/forecast", tags=["resources"])
    async def forecast(body: SeriesRequest, caller: Caller = viewer) -> dict:
        """Cluster demand quantiles for the next hour from a usage series."""
        return await remote(core.predictor.forecast.remote([p.model_dump() for p in body.series]))

    @app.post(f"{V1}/resources/capacity", tags=["resources"])
    async def capacity(body: CapacityRequest, caller: Caller = viewer) -> dict:
        """Nodes per step for the next hour, its cost and a Ray autoscaler hint."""
        update = {k: v for k, v in (("target_utilisation", body.target_utilisation),
                                    ("p95_wait_seconds", body.p95_wait_seconds),
                                    ("cores_per_unit", body.cores_per_unit)) if v is not None}
        return await remote(core.predictor.capacity.remote([p.model_dump() for p in body.series], update))

    @app.post(f"{V1}/resources/cheapest", tags=["resources"])
    async def cheapest(body: CheapestRequest, caller: Caller = viewer) -> dict:
        """The cheapest homogeneous cluster that finishes the workflow by the deadline, in simulation."""
        wf, _ = await run_in_threadpool(core.workflow_of, body)
        return await remote(core.predictor.cheapest.remote(wf, body.deadline_s, body.policy, body.max_nodes))

    # ---- keys ---------------------------------------------------------------------------------------------
    @app.get(f"{V1}/keys", tags=["keys"])
    def list_keys(caller: Caller = admin, all: bool = Query(False)) -> dict:  # noqa: A002
        return {"items": [_key_json(k) for k in core.store.list_api_keys(include_revoked=all)]}

    @app.post(f"{V1}/keys", status_code=201, tags=["keys"])
    def create_key(body: KeyRequest, caller: Caller = admin) -> dict:
        """A new key; its plaintext is in this answer only."""
        expires = time.time() + body.expires_in_s if body.expires_in_s else None
        key = core.store.create_api_key(body.name, body.role, expires)
        return {"name": body.name, "role": body.role, "expires_at": expires, "key": key}

    @app.delete(f"{V1}/keys/{{name}}", tags=["keys"])
    def revoke_key(name: str = Path(min_length=1, max_length=200), caller: Caller = admin) -> dict:
        core.store.revoke_api_key(name)
        core.verifier.forget_all()
        return {"name": name, "revoked": True}

    return app


async def _event_stream(core: ApiCore, request: Request, run_id: str, after: int, follow: bool):
    settings = core.settings
    cursor = after
    last_sent = time.monotonic()
    while True:
        rows = await run_in_threadpool(core.store.events, run_id, cursor, 500)
        for e in rows:
            data = orjson.dumps(e.to_json_dict()).decode()
            yield f"id: {e.id}\nevent: {e.type}\ndata: {data}\n\n"
            cursor = e.id
        if rows:
            last_sent = time.monotonic()
            if len(rows) == 500:
                continue
        if not follow:
            return
        rec = await run_in_threadpool(core.store.get_workflow, run_id)
        if rec.status.terminal:
            rows = await run_in_threadpool(core.store.events, run_id, cursor, 500)
            if not rows:
                yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'status': rec.status.value})}\n\n"
                return
            continue
        if await request.is_disconnected():
            return
        if time.monotonic() - last_sent > settings.sse_keepalive_s:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(settings.sse_poll_s)


def _run_json(r) -> dict:
    return {"run_id": r.run_id, "name": r.name, "family": r.family, "policy": r.policy, "status": r.status.value,
            "error": r.error, "created_at": r.created_at, "started_at": r.started_at, "finished_at": r.finished_at,
            "updated_at": r.updated_at}


def _task_json(t) -> dict:
    return {"task_id": t.task_id, "category": t.category, "status": t.status.value, "attempt": t.attempt,
            "node": t.node, "priority": t.priority, "cpus": t.cpus, "memory": t.memory, "gpus": t.gpus,
            "error": t.error, "ready_at": t.ready_at, "started_at": t.started_at, "finished_at": t.finished_at,
            "next_attempt_at": t.next_attempt_at}


def explain(d) -> str:
    """A decision in words, from what the policy saw and chose."""
    if d.output and d.output.get("explanation"):
        return d.output["explanation"]
    inp = d.input or {}
    parts = [f"{d.policy} started task '{d.task_id}' on {d.node}"]
    if "ready" in inp:
        parts.append(f"{inp['ready']} task(s) were ready")
    if inp.get("predicted") is not None:
        parts.append(f"it was predicted to run {float(inp['predicted']):.3g} s")
    if inp.get("cpus") is not None:
        parts.append(f"it asked for {float(inp['cpus']):g} cpu(s)")
    return "; ".join(parts)


def _decision_json(d) -> dict:
    return {"id": d.id, "run_id": d.run_id, "task_id": d.task_id, "policy": d.policy, "node": d.node,
            "input": d.input, "output": d.output, "confidence": d.confidence, "latency_us": d.latency_us,
            "model_version": d.model_version, "created_at": d.created_at, "explanation": explain(d)}


def _key_json(k) -> dict:
    return {"name": k.name, "role": k.role, "created_at": k.created_at, "expires_at": getattr(k, "expires_at", None),
            "revoked_at": k.revoked_at, "last_used_at": k.last_used_at,
            "status": k.status() if hasattr(k, "status") else ("active" if k.revoked_at is None else "revoked")}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, max_queued_requests=1024)
@serve.ingress()
class ApiGateway:
    """The HTTP entry: authenticates, limits, validates, then reads the store, calls the orchestrator actor or a
    model deployment."""

    def __init__(self, settings: dict[str, Any], scheduler, optimizer, predictor):
        self.core = ApiCore(ApiSettings(**settings), scheduler, optimizer, predictor)

    def __serve_build_asgi_app__(self):
        return build_api(self.core)


def build_app(args: dict[str, Any] | None = None):
    """The Serve application. `args`: API settings (see `serve.settings.ApiSettings`), or `config`: a file with an
    `api:` section; the environment fills the rest."""
    args = dict(args or {})
    config = args.pop("config", None)
    settings = ApiSettings.load(config, args).model_dump()
    return ApiGateway.bind(settings, SchedulerModel.bind(settings), OptimizerModel.bind(settings),
                           PredictorModel.bind(settings))

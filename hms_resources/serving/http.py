"""The HTTP API (`hms serve`): FastAPI over `MemoryService`, versioned under `/v1`.

Every error has one body, `{"error": {"code", "message", "field"}}`; no key, digest or
`Authorization` header reaches a log, a metric label or an error body. Bodies above
`max_body_bytes` get 413 before they are read whole."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import orjson
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hms_resources.context.assembler import ContextItem
from hms_resources.serving.errors import ApiError
from hms_resources.serving.metrics import ServiceMetrics
from hms_resources.serving.service import MemoryService, settle_heap
from hms_resources.serving.tenants import Principal

log = logging.getLogger("hms.serve")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
TOO_LARGE = "hms.too_large"
RETRIEVAL_THREADS = 4
ITEM_STATUS = {"forbidden": 403, "conflict": 409}
"""The status of a single-memory add whose one item is refused with this code (otherwise 422)."""


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error.body(), status_code=error.status)


# Request and response models: they give the OpenAPI schema its shapes ------------------------------


class MemoryIn(BaseModel):
    """A memory to add: `user_id`, `content` and any other `memory.created` payload field."""

    model_config = ConfigDict(extra="allow")
    user_id: str
    content: str
    memory_id: str | None = None
    event_id: str | None = Field(None, description="The idempotency key: a retry with the same id stores nothing twice")
    occurred_at: str | None = Field(None, description="ISO 8601 with a time zone; default: now")
    memory_type: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    importance: float | None = None


class MemoryBatchIn(BaseModel):
    memories: list[dict[str, Any]]


class ItemResult(BaseModel):
    index: int
    status: Literal["created", "duplicate", "rejected"]
    memory_id: str | None = None
    event_id: str | None = None
    error: dict[str, Any] | None = None


class BatchResult(BaseModel):
    results: list[ItemResult]
    created: int
    duplicates: int
    rejected: int


class EventsIn(BaseModel):
    events: list[dict[str, Any]]


class SearchIn(BaseModel):
    user_id: str
    query: str
    limit: int = 10
    now: str | None = None


class ContextIn(BaseModel):
    user_id: str
    query: str
    max_tokens: int = 1024
    deep: bool = False
    now: str | None = Field(None, description="Answer as of this time (ISO 8601 with a zone); default: now")


class ContextOut(BaseModel):
    user_id: str
    query: str
    token_budget: int
    items: list[ContextItem]
    prompt: str
    token_count: int
    timings_ms: dict[str, float]
    adapter: dict[str, Any] | None


class FeedbackIn(BaseModel):
    user_id: str
    memory_id: str
    was_relevant: bool
    relevance_score: float | None = None


class ReasonIn(BaseModel):
    reason: str | None = None


class ErrorOut(BaseModel):
    error: dict[str, Any]


ERRORS = {status: {"model": ErrorOut} for status in (401, 403, 404, 413, 422, 503)}


def _body(value: Any) -> Any:
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [r["status"] for r in results]
    return {
        "results": results,
        "created": statuses.count("created"),
        "duplicates": statuses.count("duplicate"),
        "rejected": statuses.count("rejected"),
    }


class BodyLimit:
    """ASGI middleware: 413 for a body above `limit` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int, metrics: ServiceMetrics):
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        too_large = ApiError(413, "too_large", f"the request body is over the limit of {self.limit} bytes", "body")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.rejected.labels("too_large").inc()
            return await error_response(too_large)(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    scope[TOO_LARGE] = True
                    raise too_large
            return message

        return await self.app(scope, limited, send)


class Timing:
    """ASGI middleware: request counts and latency per route template (never the raw path)."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/mcp" if scope.get("path", "").startswith("/mcp") else "unmatched")
            self.metrics.observe_request(template, scope.get("method", ""), status, time.perf_counter() - started)


def create_app(
    service: MemoryService, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, mcp_app: Any = None, warm: bool = True, chat: Any = None
) -> "_Served":
    """The ASGI app. `mcp_app`, when given, is the MCP server's streamable-HTTP app, mounted at `/mcp`
    behind the same keys; `warm` loads the context indexes before the first request."""
    metrics = ServiceMetrics()
    service.on_append = metrics.appended.inc

    def index_age() -> float:
        snapshot = service.assembler.loaded_snapshot
        return time.time() - snapshot.loaded_at if snapshot is not None else float("nan")

    def behind() -> float:
        snapshot = service.assembler.loaded_snapshot
        try:
            return float(service.store.max_sequence() - snapshot.cursor) if snapshot is not None else float("nan")
        except Exception:  # noqa: BLE001 - a scrape must not fail because the store is down
            return float("nan")

    metrics.watch_indexes(index_age, behind)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.retrieval = anyio.CapacityLimiter(RETRIEVAL_THREADS)
        if warm:
            try:
                await run_in_threadpool(lambda: service.assembler.snapshot)
            except Exception as exc:  # noqa: BLE001 - /readyz says so until the store answers
                log.warning("context indexes not loaded at start: %s", type(exc).__name__)
            settle_heap()
            service.assembler.when_reloaded(settle_heap)
        if mcp_app is not None and hasattr(mcp_app, "router"):
            async with mcp_app.router.lifespan_context(mcp_app):
                yield
        else:
            yield
        service.assembler.close()

    app = FastAPI(
        title="HMS",
        version="1",
        description="The hierarchical memory system as a service: memories, events, search and context per tenant.",
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    app.state.service = service
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        metrics.rejected.labels(error.code).inc()
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        if first.get("type") == "json_invalid":
            metrics.rejected.labels("invalid").inc()
            return error_response(ApiError(422, "invalid", "the body is not valid JSON", "body"))
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        metrics.rejected.labels("invalid").inc()
        return error_response(ApiError(422, "invalid", message, field))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.scope.get(TOO_LARGE):
            metrics.rejected.labels("too_large").inc()
            return error_response(ApiError(413, "too_large", f"the request body is over the limit of {max_body_bytes} bytes", "body"))
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "invalid")
        metrics.rejected.labels(code).inc()
        return error_response(ApiError(error.status_code, code, str(error.detail)))

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> Response:
        log.error("request failed: %s", type(error).__name__)
        metrics.rejected.labels("internal").inc()
        return error_response(ApiError(500, "internal", "internal error"))

    async def principal(authorization: str | None = Header(None, include_in_schema=False)) -> Principal:
        """A key seen in the last seconds is answered on the event loop; others read the store in a thread."""
        return service.keys.cached(authorization) or await run_in_threadpool(service.authenticate, authorization)

    Caller = Depends(principal)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses=ERRORS)
    def readyz() -> Response:
        found = service.readiness()
        return JsonResponse(found, status_code=200 if found["ready"] else 503)

    @app.get("/metrics", tags=["health"], include_in_schema=True)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/memories", status_code=201, tags=["memories"], responses={**ERRORS, 200: {"model": BatchResult}})
    def add_memories(
        body: dict[str, Any] = Body(..., description="One memory (MemoryIn) or {'memories': [MemoryIn, ...]}"),
        idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
        caller: Principal = Caller,
    ) -> Response:
        if "memories" in body and "content" not in body:
            results = service.add_memories(caller, body["memories"], idempotency_key=idempotency_key)
            return JsonResponse(_summary(results), status_code=200)
        (result,) = service.add_memories(caller, [body], idempotency_key=idempotency_key)
        if result["status"] == "rejected":
            error = result["error"]
            raise ApiError(ITEM_STATUS.get(error["code"], 422), error["code"], error["message"], error["field"])
        return JsonResponse(result, status_code=201 if result["status"] == "created" else 200)

    @app.get("/v1/memories", tags=["memories"], responses=ERRORS)
    def list_memories(
        user_id: str,
        memory_type: str | None = None,
        category: str | None = None,
        tag: str | None = None,
        tier: Literal["hot", "warm", "cold"] | None = None,
        status: Literal["live", "archived", "forgotten", "any"] = "live",
        created_after: str | None = None,
        created_before: str | None = None,
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        caller: Principal = Caller,
    ) -> Response:
        return JsonResponse(
            service.list_memories(
                caller,
                user_id,
                memory_type=memory_type,
                category=category,
                tag=tag,
                tier=tier,
                status=status,
                created_after=created_after,
                created_before=created_before,
                cursor=cursor,
                limit=limit,
            )
        )

    @app.get("/v1/memories/{memory_id}", tags=["memories"], responses=ERRORS)
    def get_memory(memory_id: str = Path(...), user_id: str = Query(...), caller: Principal = Caller) -> Response:
        return JsonResponse(service.get_memory(caller, user_id, memory_id))

    @app.patch("/v1/memories/{memory_id}", tags=["memories"], responses=ERRORS)
    def update_memory(memory_id: str, user_id: str, changes: dict[str, Any] = Body(...), caller: Principal = Caller) -> Response:
        return JsonResponse(service.update_memory(caller, user_id, memory_id, changes))

    @app.delete("/v1/memories/{memory_id}", tags=["memories"], responses=ERRORS)
    def forget_memory(memory_id: str, user_id: str, reason: str | None = None, caller: Principal = Caller) -> Response:
        return JsonResponse(service.forget_memory(caller, user_id, memory_id, reason))

    @app.post("/v1/memories/{memory_id}/archive", tags=["memories"], responses=ERRORS)
    def archive_memory(memory_id: str, user_id: str, body: ReasonIn | None = None, caller: Principal = Caller) -> Response:
        return JsonResponse(service.archive_memory(caller, user_id, memory_id, body.reason if body else None))

    @app.get("/v1/memories/{memory_id}/history", tags=["memories"], responses=ERRORS)
    def memory_history(memory_id: str, user_id: str, caller: Principal = Caller) -> Response:
        return JsonResponse({"memory_id": memory_id, "events": service.memory_history(caller, user_id, memory_id)})

    @app.post("/v1/events", tags=["events"], response_model=BatchResult, responses=ERRORS)
    def append_events(body: EventsIn, caller: Principal = Caller) -> Response:
        return JsonResponse(_summary(service.append_events(caller, body.events)))

    async def retrieving(call: Callable[[], Any]) -> Any:
        """Retrieval is CPU work under one interpreter lock: a few threads at a time keep it fast."""
        limiter = getattr(app.state, "retrieval", None) or anyio.CapacityLimiter(RETRIEVAL_THREADS)
        app.state.retrieval = limiter
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    @app.post("/v1/search", tags=["retrieval"], responses=ERRORS)
    async def search(body: SearchIn, caller: Principal = Caller) -> Response:
        found = await retrieving(lambda: service.search(caller, body.user_id, body.query, body.limit, body.now))
        return JsonResponse({"results": found})

    @app.post("/v1/context", tags=["retrieval"], response_model=ContextOut, responses=ERRORS)
    async def context(body: ContextIn, caller: Principal = Caller) -> Response:
        found = await retrieving(lambda: service.context(caller, body.user_id, body.query, body.max_tokens, deep=body.deep, now=body.now))
        metrics.observe_stages(found["timings_ms"])
        return JsonResponse(found)

    @app.post("/v1/feedback", tags=["retrieval"], responses=ERRORS)
    def feedback(body: FeedbackIn, caller: Principal = Caller) -> Response:
        return JsonResponse(service.feedback(caller, body.user_id, body.memory_id, body.was_relevant, body.relevance_score))

    if chat is not None:
        add_chat_routes(app, chat, Caller)

    if mcp_app is not None:
        app.mount("/mcp", mcp_app)

    wrapped = BodyLimit(app, max_body_bytes, metrics)
    return _Served(Timing(_ApiErrors(wrapped), metrics), app)


def add_chat_routes(app: FastAPI, chat: Any, caller: Any) -> None:
    """`/v1/chat/completions` (OpenAI-compatible, streaming as server-sent events) and `/v1/models`."""
    from starlette.responses import StreamingResponse

    from hms_resources.serving.chat import parse_chat

    @app.get("/v1/models", tags=["chat"])
    async def models(principal: Principal = caller) -> Response:
        return JsonResponse(chat.models())

    @app.post("/v1/chat/completions", tags=["chat"], responses=ERRORS)
    async def completions(
        body: dict[str, Any] = Body(...),
        session: str | None = Header(None, alias="X-HMS-Session"),
        request_id: str | None = Header(None, alias="Idempotency-Key"),
        principal: Principal = caller,
    ) -> Response:
        request = parse_chat(body, session_header=session, request_id=request_id)
        if request.stream:
            events, headers = await run_in_threadpool(chat.stream, principal, request)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        found, headers = await run_in_threadpool(chat.complete, principal, request)
        return JsonResponse(found, headers=headers)


class _ApiErrors:
    """An `ApiError` raised below the routes (the streamed-body limit) as its error body."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except ApiError as error:
            if scope["type"] == "http":
                await error_response(error)(scope, receive, send)
            else:
                raise


class _Served:
    """The middleware stack as an ASGI app that still exposes the FastAPI app (`.fastapi`) and its state."""

    def __init__(self, asgi: Any, fastapi: FastAPI):
        self.asgi = asgi
        self.fastapi = fastapi
        self.state = fastapi.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.asgi(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        return self.fastapi.openapi()

"""The HTTP API (`hms serve`): FastAPI over `MemoryService`, versioned under `/v1`.

`create_app` only assembles: the routers of `serving/api/routes/`, the error handlers, the metrics,
the MCP mount and the middleware. Every error has one body, `{"error": {"code", "message",
"field"}}`; no key, digest or `Authorization` header reaches a log, a metric label or an error body.
Bodies above `max_body_bytes` get 413 before they are read whole."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from hms_resources.common.environment import SETTINGS
from hms_resources.serving.api.connections import header_deadline
from hms_resources.serving.api.handlers import add_exception_handlers
from hms_resources.serving.api.limits import Limits, RetrievalGate
from hms_resources.serving.api.middleware import Served, wrapped
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.api.routes import ROUTERS
from hms_resources.serving.metrics import ServiceMetrics
from hms_resources.serving.service import MemoryService, settle_heap

log = logging.getLogger("hms.serve")

DEFAULT_MAX_BODY_BYTES = SETTINGS["HMS_MAX_BODY_BYTES"].default


def create_app(
    service: MemoryService,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    mcp_app: Any = None,
    warm: bool = True,
    chat: Any = None,
    limits: Limits | None = None,
) -> Served:
    """The ASGI app. `mcp_app`, when given, is the MCP server's streamable-HTTP app, mounted at `/mcp`
    behind the same keys; `warm` loads the context indexes before the first request; `limits` (by
    default the environment's) bound what each tenant may take and how long a client may stall."""
    limits = limits or Limits.from_env()
    metrics = watched(service)
    app = FastAPI(
        title="HMS",
        version="1",
        description="The hierarchical memory system as a service: memories, events, search and context per tenant.",
        lifespan=lifespan(service, mcp_app, warm),
        default_response_class=JsonResponse,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.max_body_bytes = max_body_bytes
    app.state.limits = limits
    add_exception_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if chat is not None:
        from hms_resources.serving.api.routes import chat as chat_routes

        app.state.chat = chat
        app.include_router(chat_routes.router)
    if mcp_app is not None:
        from hms_resources.serving.mcp_server import mount

        mount(app, mcp_app)
    return wrapped(app, max_body_bytes, metrics, service=service, limits=limits)


def server_config(app: Served, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn as `hms serve` runs it, for tests and benchmarks too: a connection whose request
    headers take over the app's read timeout is closed (`connections.HeaderDeadline`). No
    `limit_concurrency`: it counts stalled connections too, so they would turn everyone away."""
    seconds = app.state.limits.read_timeout_seconds
    settings = {"log_level": "warning", "lifespan": "on", "http": header_deadline(seconds), **options}
    return uvicorn.Config(app, host=host, port=port, **settings)


def watched(service: MemoryService) -> ServiceMetrics:
    """The app's metrics, counting the service's appends and watching the age and lag of its indexes."""
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
    return metrics


def lifespan(service: MemoryService, mcp_app: Any, warm: bool) -> Callable[[FastAPI], Any]:
    """Start: the retrieval gate, the indexes loaded (when `warm`) and the MCP session manager.
    Stop: the service closed (queued access records stored, the context resource released)."""

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        app.state.retrieval = RetrievalGate.of(app.state.limits)
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
        service.close()

    return serving

"""What a route depends on: the service and the metrics of the app (`request.app.state`), and the
caller's `Principal`, from the `Authorization` header. Every dependency is async, so none costs
a request a trip to the thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from hms_resources.serving.metrics import ServiceMetrics
from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal

RETRIEVAL_THREADS = 4
T = TypeVar("T")


async def service(request: Request) -> MemoryService:
    return request.app.state.service


async def metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def chat(request: Request) -> Any:
    return request.app.state.chat


async def principal(request: Request, authorization: str | None = Header(None, include_in_schema=False)) -> Principal:
    """A key seen in the last seconds is answered on the event loop; others read the store in a thread."""
    found: MemoryService = request.app.state.service
    return found.keys.cached(authorization) or await run_in_threadpool(found.authenticate, authorization)


Service = Annotated[MemoryService, Depends(service)]
Metrics = Annotated[ServiceMetrics, Depends(metrics)]
Chat = Annotated[Any, Depends(chat)]
Caller = Annotated[Principal, Depends(principal)]


async def retrieving(request: Request, call: Callable[[], T]) -> T:
    """Retrieval is CPU work under one interpreter lock: a few threads at a time keep it fast."""
    state = request.app.state
    limiter = getattr(state, "retrieval", None) or anyio.CapacityLimiter(RETRIEVAL_THREADS)
    state.retrieval = limiter
    return await anyio.to_thread.run_sync(call, limiter=limiter)

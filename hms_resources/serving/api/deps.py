"""What a route depends on: the service and the metrics of the app (`request.app.state`), and the
caller's `Principal`, from the `Authorization` header. Every dependency is async, so none costs
a request a trip to the thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from hms_resources.serving.api.limits import Limits, RetrievalGate
from hms_resources.serving.api.middleware import PRINCIPAL
from hms_resources.serving.metrics import ServiceMetrics
from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal

T = TypeVar("T")


async def service(request: Request) -> MemoryService:
    return request.app.state.service


async def metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def chat(request: Request) -> Any:
    return request.app.state.chat


async def principal(request: Request, authorization: str | None = Header(None, include_in_schema=False)) -> Principal:
    """The caller the `Keys` middleware authenticated before the body was read. Without it (an app
    not behind the middleware, a path it does not key), a key seen in the last seconds is answered on
    the event loop; others read the store in a thread."""
    state = request.scope.setdefault("state", {})
    known = state.get(PRINCIPAL)
    if known is not None:
        return known
    found: MemoryService = request.app.state.service
    state[PRINCIPAL] = caller = found.keys.cached(authorization) or await run_in_threadpool(found.authenticate, authorization)
    return caller


Service = Annotated[MemoryService, Depends(service)]
Metrics = Annotated[ServiceMetrics, Depends(metrics)]
Chat = Annotated[Any, Depends(chat)]
Caller = Annotated[Principal, Depends(principal)]


async def retrieving(request: Request, call: Callable[[], T]) -> T:
    """`call` (a search or a context) as one of its tenant's few calls in flight, in the threads all
    tenants share, answered by its deadline (`limits.RetrievalGate`): 429 at once over the tenant's
    share, 503 past the deadline."""
    state = request.app.state
    gate = getattr(state, "retrieval", None)
    if not isinstance(gate, RetrievalGate):
        gate = state.retrieval = RetrievalGate.of(Limits.from_env())
    caller = request.scope.get("state", {}).get(PRINCIPAL)
    # The context indexes and the query model load once per process (`create_app(warm=True)` loads the
    # indexes at start); until a first call has finished, a call may be loading them, which is no work
    # of its own: no deadline counts it.
    warm = getattr(state, "retrieval_warm", False) and state.service.assembler.loaded_snapshot is not None
    found = await gate.run(caller.tenant if caller is not None else "", call, deadline=warm)
    state.retrieval_warm = True
    return found

"""`/v1/memories`: add (one or a batch), list, read, update, forget, archive, and a memory's history.

One memory is answered 201 (200 for a retry) or with its own error as the response's; a batch is
answered 200 with a result per item. (Routes carry no docstrings: they would become the OpenAPI
descriptions.)"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import ERRORS, NAME_PATTERN, BatchResult, ReasonIn, batch_summary
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.errors import item_error

router = APIRouter(prefix="/v1/memories", tags=["memories"], route_class=StrictJsonRoute)


@router.post("", status_code=201, responses={**ERRORS, 200: {"model": BatchResult}})
def add_memories(
    service: Service,
    caller: Caller,
    body: dict[str, Any] = Body(..., description="One memory (MemoryIn) or {'memories': [MemoryIn, ...]}"),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> Response:
    if "memories" in body and "content" not in body:
        results = service.add_memories(caller, body["memories"], idempotency_key=idempotency_key)
        return JsonResponse(batch_summary(results), status_code=200)
    (result,) = service.add_memories(caller, [body], idempotency_key=idempotency_key)
    if result["status"] == "rejected":
        raise item_error(result["error"])
    return JsonResponse(result, status_code=201 if result["status"] == "created" else 200)


@router.get("", responses=ERRORS)
def list_memories(
    service: Service,
    caller: Caller,
    user_id: str,
    memory_type: str | None = Query(None, pattern=NAME_PATTERN),
    category: str | None = Query(None, pattern=NAME_PATTERN),
    tag: str | None = Query(None, pattern=NAME_PATTERN),
    tier: Literal["hot", "warm", "cold"] | None = None,
    status: Literal["live", "archived", "forgotten", "any"] = "live",
    created_after: str | None = None,
    created_before: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
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


@router.get("/{memory_id}", responses=ERRORS)
def get_memory(service: Service, caller: Caller, memory_id: str = Path(...), user_id: str = Query(...)) -> Response:
    return JsonResponse(service.get_memory(caller, user_id, memory_id))


@router.patch("/{memory_id}", responses=ERRORS)
def update_memory(service: Service, caller: Caller, memory_id: str, user_id: str, changes: dict[str, Any] = Body(...)) -> Response:
    return JsonResponse(service.update_memory(caller, user_id, memory_id, changes))


@router.delete("/{memory_id}", responses=ERRORS)
def forget_memory(service: Service, caller: Caller, memory_id: str, user_id: str, reason: str | None = None) -> Response:
    return JsonResponse(service.forget_memory(caller, user_id, memory_id, reason))


@router.post("/{memory_id}/archive", responses=ERRORS)
def archive_memory(service: Service, caller: Caller, memory_id: str, user_id: str, body: ReasonIn | None = None) -> Response:
    return JsonResponse(service.archive_memory(caller, user_id, memory_id, body.reason if body else None))


@router.get("/{memory_id}/history", responses=ERRORS)
def memory_history(service: Service, caller: Caller, memory_id: str, user_id: str) -> Response:
    return JsonResponse({"memory_id": memory_id, "events": service.memory_history(caller, user_id, memory_id)})

"""`/v1/memories`: add (one, a batch, or a conversation's `messages`), list, read, update, forget (one
or all of a user's), archive, and a memory's history.

One memory is answered 201 (200 for a retry) or with its own error as the response's; a batch and
a conversation are answered 200 with a result per item. A memory is read without `user_id` when the
key's default user or exactly one user of the tenant has it. (Routes carry no docstrings: they would
become the OpenAPI descriptions.)"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Body, Header, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import (
    ERRORS,
    NAME_PATTERN,
    BatchResult,
    MemoryBatchIn,
    MessagesIn,
    ReasonIn,
    TurnsResult,
    batch_summary,
)
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.errors import item_error

router = APIRouter(prefix="/v1/memories", tags=["memories"], route_class=StrictJsonRoute)

M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], body: dict[str, Any]) -> M:
    """`body` as `model`, its first problem a 422 naming the field (`messages.3.content`), as FastAPI's own."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


@router.post("", status_code=201, responses={**ERRORS, 200: {"model": BatchResult | TurnsResult}})
def add_memories(
    service: Service,
    caller: Caller,
    body: dict[str, Any] = Body(
        ..., description="One memory (MemoryIn), {'memories': [MemoryIn, ...]} (MemoryBatchIn), or a conversation (MessagesIn)"
    ),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> Response:
    if "messages" in body and "content" not in body:
        conversation = _validated(MessagesIn, body)
        turns = [(m.role, m.content) for m in conversation.messages]
        results, session = service.add_messages(
            caller, conversation.user_id, turns, session_id=conversation.session_id, idempotency_key=idempotency_key
        )
        return JsonResponse({**batch_summary(results), "session_id": session}, status_code=200)
    if "memories" in body and "content" not in body:
        results = service.add_memories(caller, _validated(MemoryBatchIn, body).memories, idempotency_key=idempotency_key)
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


@router.delete("", responses=ERRORS)
def forget_user(
    service: Service, caller: Caller, user_id: str = Query(..., description="Whose memories to forget: all of them"), reason: str | None = None
) -> Response:
    return JsonResponse(service.forget_user(caller, user_id, reason))


@router.get("/{memory_id}", responses=ERRORS)
def get_memory(
    service: Service, caller: Caller, memory_id: str = Path(...), user_id: str | None = Query(None, description="Default: the memory's owner")
) -> Response:
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
def memory_history(service: Service, caller: Caller, memory_id: str, user_id: str | None = None) -> Response:
    return JsonResponse({"memory_id": memory_id, "events": service.memory_history(caller, user_id, memory_id)})

"""`/v1/chat/completions` (OpenAI-compatible, streaming as server-sent events) and `/v1/models`:
included only when `create_app` is given a chat service (`app.state.chat`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Header
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Chat
from hms_resources.serving.api.models import CHAT_ERRORS, ERRORS
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.chat import parse_chat

router = APIRouter(prefix="/v1", tags=["chat"], route_class=StrictJsonRoute)


@router.get("/models", responses=ERRORS)
async def models(chat: Chat, principal: Caller) -> Response:
    return JsonResponse(chat.models())


@router.post("/chat/completions", responses=CHAT_ERRORS)
async def completions(
    chat: Chat,
    principal: Caller,
    body: dict[str, Any] = Body(...),
    session: str | None = Header(None, alias="X-HMS-Session"),
    request_id: str | None = Header(None, alias="Idempotency-Key"),
) -> Response:
    request = parse_chat(body, session_header=session, request_id=request_id)
    if request.stream:
        events, headers = await run_in_threadpool(chat.stream, principal, request)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    found, headers = await run_in_threadpool(chat.complete, principal, request)
    return JsonResponse(found, headers=headers)

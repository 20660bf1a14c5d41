"""`/v1/feedback`: whether a recalled memory was relevant, for later rankings."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import ERRORS, FeedbackIn
from hms_resources.serving.api.responses import JsonResponse

router = APIRouter(prefix="/v1/feedback", tags=["retrieval"], route_class=StrictJsonRoute)


@router.post("", responses=ERRORS)
def feedback(service: Service, caller: Caller, body: FeedbackIn) -> Response:
    return JsonResponse(service.feedback(caller, body.user_id, body.memory_id, body.was_relevant, body.relevance_score))

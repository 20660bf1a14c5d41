"""`/v1/events`: raw events, validated as `hms ingest` validates a line, one result per item."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import ERRORS, BatchResult, EventsIn, batch_summary
from hms_resources.serving.api.responses import JsonResponse

router = APIRouter(prefix="/v1/events", tags=["events"], route_class=StrictJsonRoute)


@router.post("", response_model=BatchResult, responses=ERRORS)
def append_events(service: Service, caller: Caller, body: EventsIn) -> Response:
    return JsonResponse(batch_summary(service.append_events(caller, body.events)))

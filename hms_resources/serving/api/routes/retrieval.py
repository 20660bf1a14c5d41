"""`/v1/search` (its `filters` in `search_filters.py`) and `/v1/context`: retrieval, run in a few
threads at a time (`deps.retrieving`); each context's stage timings go to `hms_context_stage_seconds`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Metrics, Service, retrieving
from hms_resources.serving.api.models import ERRORS, ContextIn, ContextOut, SearchIn
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.search_filters import filtered_search

router = APIRouter(prefix="/v1", tags=["retrieval"], route_class=StrictJsonRoute)


@router.post("/search", responses=ERRORS)
async def search(request: Request, service: Service, caller: Caller, body: SearchIn) -> Response:
    filters = body.filters.model_dump(exclude_none=True) if body.filters is not None else None
    found = await retrieving(request, lambda: filtered_search(service, caller, body.user_id, body.query, body.limit, body.now, filters))
    return JsonResponse({"results": found})


@router.post("/context", response_model=ContextOut, responses=ERRORS)
async def context(request: Request, service: Service, metrics: Metrics, caller: Caller, body: ContextIn) -> Response:
    found = await retrieving(request, lambda: service.context(caller, body.user_id, body.query, body.max_tokens, deep=body.deep, now=body.now))
    metrics.observe_stages(found["timings_ms"])
    return JsonResponse(found)

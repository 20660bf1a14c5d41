"""`/v1/sessions/{session_id}`: a user's turns of one session in time order (`serving.users`)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import ERRORS
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.users import session_turns

router = APIRouter(prefix="/v1/sessions", tags=["users"], route_class=StrictJsonRoute)


@router.get("/{session_id:path}", responses=ERRORS)
def session(
    service: Service, caller: Caller, session_id: str = Path(...), user_id: str = Query(...), cursor: str | None = None,
    limit: int = Query(100, ge=1, le=500),
) -> Response:
    return JsonResponse(session_turns(service, caller, session_id, user_id, cursor=cursor, limit=limit))

"""`/v1/users`: the caller's tenant's users, paged, each with its count of memories (`serving.users`)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import ERRORS, UserOut, UsersOut
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.users import get_user, list_users

router = APIRouter(prefix="/v1/users", tags=["users"], route_class=StrictJsonRoute)


@router.get("", response_model=UsersOut, responses=ERRORS)
def users(service: Service, caller: Caller, cursor: str | None = None, limit: int = Query(50, ge=1, le=500)) -> Response:
    return JsonResponse(list_users(service, caller, cursor=cursor, limit=limit))


@router.get("/{user_id:path}", response_model=UserOut, responses=ERRORS)
def user(service: Service, caller: Caller, user_id: str = Path(...)) -> Response:
    return JsonResponse(get_user(service, caller, user_id))

"""Liveness, readiness and the Prometheus scrape. `/healthz` and `/readyz`'s `{"ready"}` need no key
(probes send none); the service-wide figures (the detailed readiness, `/metrics`) count every
tenant's requests and events, so they are the operator's: an admin key of `HMS_OPERATOR_TENANT`."""

from __future__ import annotations

from fastapi import APIRouter, Header
from starlette.responses import Response

from hms_resources.serving.api.deps import Metrics, Service
from hms_resources.serving.api.models import ERRORS
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.errors import ApiError
from hms_resources.serving.keys import is_operator, require_operator
from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=ERRORS)
def readyz(service: Service, authorization: str | None = Header(None, include_in_schema=False)) -> Response:
    if authorization and is_operator(service.authenticate(authorization)):
        found = service.readiness()
        return JsonResponse(found, status_code=200 if found["ready"] else 503)
    try:
        ready = bool(service.readiness()["ready"])
    except ApiError as error:
        if error.status != 503:
            raise
        ready = False
    return JsonResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=True, responses=ERRORS)
def prometheus(service: Service, metrics: Metrics, authorization: str | None = Header(None, include_in_schema=False)) -> Response:
    require_operator(_scraper(service, authorization))
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _scraper(service: MemoryService, authorization: str | None) -> Principal:
    """The scrape's key, verified; while the store is unreachable, as it was last verified, so the
    outage itself can be watched."""
    try:
        return service.authenticate(authorization)
    except ApiError as error:
        known = service.keys.last_known(authorization) if error.status == 503 else None
        if known is None:
            raise
        return known

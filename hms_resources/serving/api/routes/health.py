"""Liveness, readiness and the Prometheus scrape: no key needed."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from hms_resources.serving.api.deps import Metrics, Service
from hms_resources.serving.api.models import ERRORS
from hms_resources.serving.api.responses import JsonResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=ERRORS)
def readyz(service: Service) -> Response:
    found = service.readiness()
    return JsonResponse(found, status_code=200 if found["ready"] else 503)


@router.get("/metrics", include_in_schema=True)
def prometheus(metrics: Metrics) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

"""The exception handlers: every error the app answers becomes the one body
`{"error": {"code", "message", "field"}}`, counted in `hms_rejected_requests` by its code."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hms_resources.serving.api.middleware import TOO_LARGE, too_large
from hms_resources.serving.api.responses import error_response
from hms_resources.serving.errors import ApiError

log = logging.getLogger("hms.serve")


def _refused(request: Request, error: ApiError) -> Response:
    request.app.state.metrics.rejected.labels(error.code).inc()
    return error_response(error)


async def api_error(request: Request, error: ApiError) -> Response:
    return _refused(request, error)


UNION_MEMBER = re.compile(r"str|int|float|bool|none|(list|dict|tuple|literal|function-\w+)\[.+\]")
"""The tag pydantic puts in a location for the member of a union it tried (`input.str`): not a field."""


def validation_error(error: RequestValidationError) -> ApiError:
    """The first problem pydantic found, named by its field (`query: Field required`)."""
    first = error.errors()[0] if error.errors() else {}
    if first.get("type") == "json_invalid":
        return ApiError(422, "invalid", "the body is not valid JSON", "body")
    loc = [str(p) for p in first.get("loc", ()) if not UNION_MEMBER.fullmatch(str(p))]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:] or [loc[0]]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
    return ApiError(422, "invalid", message, field)


async def invalid(request: Request, error: RequestValidationError) -> Response:
    return _refused(request, validation_error(error))


async def http_error(request: Request, error: StarletteHTTPException) -> Response:
    if request.scope.get(TOO_LARGE):
        return _refused(request, too_large(request.app.state.max_body_bytes))
    if error.status_code == 400:
        # FastAPI's own body reading (a route without `StrictJsonRoute`): what it could not parse.
        return _refused(request, ApiError(422, "invalid", "the body is not valid JSON", "body"))
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "invalid")
    return _refused(request, ApiError(error.status_code, code, str(error.detail)))


async def internal(request: Request, error: Exception) -> Response:
    log.error("request failed: %s", type(error).__name__)
    return _refused(request, ApiError(500, "internal", "internal error"))


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal)

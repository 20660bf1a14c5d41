"""The one JSON response class of the API, and an `ApiError` as its uniform error body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from hms_resources.serving.errors import ApiError


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error.body(), status_code=error.status)

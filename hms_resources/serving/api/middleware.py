"""The ASGI layers around the FastAPI app: the body limit, request timing, an `ApiError` raised
below the routes as its error body, and `Served`, the stack that still exposes the app."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from hms_resources.serving.api.responses import error_response
from hms_resources.serving.errors import ApiError
from hms_resources.serving.metrics import ServiceMetrics

TOO_LARGE = "hms.too_large"
"""The ASGI scope key set when a streamed body went over the limit."""


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the request body is over the limit of {limit} bytes", "body")


class BodyLimit:
    """ASGI middleware: 413 for a body above `limit` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int, metrics: ServiceMetrics):
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        refused = too_large(self.limit)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.rejected.labels("too_large").inc()
            return await error_response(refused)(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    scope[TOO_LARGE] = True
                    raise refused
            return message

        return await self.app(scope, limited, send)


class Timing:
    """ASGI middleware: request counts and latency per route template (never the raw path)."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/mcp" if scope.get("path", "").startswith("/mcp") else "unmatched")
            self.metrics.observe_request(template, scope.get("method", ""), status, time.perf_counter() - started)


class ApiErrors:
    """An `ApiError` raised below the routes (the streamed-body limit) as its error body."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except ApiError as error:
            if scope["type"] == "http":
                await error_response(error)(scope, receive, send)
            else:
                raise


class Served:
    """The middleware stack as an ASGI app that still exposes the FastAPI app (`.fastapi`) and its state."""

    def __init__(self, asgi: Any, fastapi: FastAPI):
        self.asgi = asgi
        self.fastapi = fastapi
        self.state = fastapi.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.asgi(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        return self.fastapi.openapi()


def wrapped(app: FastAPI, max_body_bytes: int, metrics: ServiceMetrics) -> Served:
    """The app inside its layers, outermost first: timing, `ApiError` bodies, the body limit."""
    return Served(Timing(ApiErrors(BodyLimit(app, max_body_bytes, metrics)), metrics), app)

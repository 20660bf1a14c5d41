"""The ASGI layers around the FastAPI app: request timing, an `ApiError` raised below the routes as
its error body, the caller's key and its tenant's request rate, the body's read deadline and the body
limit, and `Served`, the stack that still exposes the app. Everything up to the body limit is decided
from the headers alone: a refused request's body is never read."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI

from hms_resources.serving.api.limits import (
    Limits,
    TenantRates,
    rate_limited,
    retry_after,
)
from hms_resources.serving.api.responses import JsonResponse, error_response
from hms_resources.serving.errors import ApiError
from hms_resources.serving.metrics import ServiceMetrics

log = logging.getLogger("hms.serve")

TOO_LARGE = "hms.too_large"
"""The ASGI scope key set when a streamed body went over the limit."""
PRINCIPAL = "hms_principal"
"""The key of the caller's `Principal` in the ASGI scope's `state` (as the MCP server names it)."""
KEYED_PREFIXES = ("/v1", "/mcp")
"""Paths that need a key; the rest (/healthz, /readyz, /metrics, /docs) decide for themselves."""


def keyed(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in KEYED_PREFIXES)


def _header(scope: dict, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers") or () if key == name), None)


def body_pending(scope: dict) -> bool:
    """Whether the client is (or may be) still sending a body that nobody will read."""
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() not in (b"", b"0"))


def refusal(error: ApiError, scope: dict, **headers: str) -> JsonResponse:
    """The error body for a request refused before its body was read: the connection is closed after
    it when a body is still coming, so an unread body is neither read nor trickled in forever."""
    if body_pending(scope):
        headers["connection"] = "close"
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    return JsonResponse(error.body(), status_code=error.status, headers=headers)


class Keys:
    """ASGI middleware: the caller of a keyed path is authenticated from its `Authorization` header
    before the app reads a byte of the body (401/503 otherwise), its tenant's request rate is counted
    (429 with `Retry-After` above it), and its `Principal` goes on in `scope["state"]` for
    `deps.principal`. Any 429 below gets a `Retry-After` too."""

    def __init__(self, app: Any, service: Any, rates: TenantRates, metrics: ServiceMetrics):
        self.app = app
        self.service = service
        self.rates = rates
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not keyed(scope.get("path", "")):
            return await self.app(scope, receive, send)
        authorization = _header(scope, b"authorization")
        header = authorization.decode("latin-1") if authorization is not None else None
        try:
            principal = self.service.keys.cached(header) or await anyio.to_thread.run_sync(self.service.authenticate, header)
        except ApiError as error:
            return await self._refuse(refusal(error, scope), error, scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - a fault of the key check is one error body, never a traceback
            log.error("key check failed: %s", type(exc).__name__)
            failed = ApiError(500, "internal", "internal error")
            return await self._refuse(refusal(failed, scope), failed, scope, receive, send)
        wait = self.rates.take(principal.tenant)
        if wait:
            limited = rate_limited(f"this tenant is over its {self.rates.rate:g} requests a second; retry after the Retry-After seconds")
            return await self._refuse(refusal(limited, scope, **{"retry-after": str(retry_after(wait))}), limited, scope, receive, send)
        scope.setdefault("state", {})[PRINCIPAL] = principal

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                headers = list(message.get("headers") or ())
                if not any(name.lower() == b"retry-after" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"retry-after", b"1")]}
            await send(message)

        await self.app(scope, receive, sending)

    async def _refuse(self, response: JsonResponse, error: ApiError, scope: dict, receive: Any, send: Any) -> None:
        self.metrics.rejected.labels(error.code).inc()
        await response(scope, receive, send)


def body_timeout(seconds: float) -> ApiError:
    return ApiError(408, "timeout", f"no part of the request body arrived within {seconds:g} seconds", "body")


class BodyDeadline:
    """ASGI middleware: 408 (and the connection closed) when the client sends no part of a body the app
    is waiting for within `seconds`. Once the body is complete, `receive` waits without a deadline (a
    streamed answer listens there for the client going away). The app may turn the error into any
    answer while it parses the body: whatever it answers, the client gets the 408."""

    def __init__(self, app: Any, seconds: float, metrics: ServiceMetrics):
        self.app = app
        self.seconds = seconds
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        complete = False
        timed_out = False
        answered = False
        error = body_timeout(self.seconds)

        async def receiving() -> dict:
            nonlocal complete, timed_out
            if complete:
                return await receive()
            try:
                with anyio.fail_after(self.seconds):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise error from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def sending(message: dict) -> None:
            nonlocal answered
            if not timed_out:
                await send(message)
            elif not answered:
                answered = True
                await self._timed_out(error, scope, send)

        try:
            await self.app(scope, receiving, sending)
        except ApiError:
            if not timed_out or answered:
                raise
            answered = True
            await self._timed_out(error, scope, send)

    async def _timed_out(self, error: ApiError, scope: dict, send: Any) -> None:
        self.metrics.rejected.labels(error.code).inc()
        await refusal(error, scope)(scope, _nothing, send)


async def _nothing() -> dict:
    return {"type": "http.disconnect"}


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
            template = "/mcp" if (scope.get("path", "") + "/").startswith("/mcp/") else getattr(route, "path", None) or "unmatched"
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


def wrapped(app: FastAPI, max_body_bytes: int, metrics: ServiceMetrics, *, service: Any = None, limits: Limits | None = None) -> Served:
    """The app inside its layers, outermost first: timing, `ApiError` bodies, keys and rates (with a
    `service` to check keys against), the body's read deadline (with `limits`), the body limit."""
    inner: Any = BodyLimit(app, max_body_bytes, metrics)
    if limits is not None:
        inner = BodyDeadline(inner, limits.read_timeout_seconds, metrics)
    if service is not None:
        rate = limits or Limits.from_env()
        inner = Keys(inner, service, TenantRates(rate.tenant_rate, rate.tenant_burst), metrics)
    return Served(Timing(ApiErrors(inner), metrics), app)

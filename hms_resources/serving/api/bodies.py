"""JSON request bodies decoded strictly, once, before FastAPI reads them: what is not JSON (invalid
UTF-8, nesting past orjson's 1,024 levels, a number too large for a double, a byte order mark) is a
422 on `body`; a lone surrogate, NaN or Infinity, which Python's own parser lets through and the
store cannot keep, is a 422 naming the field that holds it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any, Self

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from hms_resources.common.text import is_unicode_text
from hms_resources.serving.errors import ApiError, bad_request

MAX_FIELD_DEPTH = 8
"""Levels of a field's path a refusal names (deeper ones are named by their first eight)."""

_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class _Constant(float):
    """NaN or ±Infinity as the body spelled it, so the refusal can say which."""

    spelled: str

    def __new__(cls, spelled: str) -> Self:
        made = super().__new__(cls, _CONSTANTS[spelled])
        made.spelled = spelled
        return made


def decoded_json(raw: bytes) -> Any:
    """The body's JSON value, or the `ApiError` that names what is wrong and where."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _refusal(raw, str(exc)) from None


def _refusal(raw: bytes, reason: str) -> ApiError:
    """orjson refuses lone surrogates and NaN with a position; Python's parser accepts both, so a
    second, lenient read finds the field that holds the first of them."""
    try:
        lenient = json.loads(raw.decode("utf-8"), parse_constant=_Constant)
    except (ValueError, RecursionError):
        lenient = None
    found = _first_unstorable(lenient) if lenient is not None else None
    if found is None:
        return bad_request(f"the body is not valid JSON: {reason}", "body")
    path, problem = found
    field = ".".join(str(p)[:64] for p in path[:MAX_FIELD_DEPTH]) or "body"
    return bad_request(f"{field} {problem}", field)


def _first_unstorable(value: Any) -> tuple[list[str | int], str] | None:
    """The path of the first string (or key) holding a lone surrogate, or of NaN or Infinity."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if not is_unicode_text(key):
                    return path, "has a key with a lone surrogate (\\ud800-\\udfff): keys must be valid Unicode text"
                stack.append((child, [*path, key]))
        elif isinstance(item, list):
            stack.extend((child, [*path, i]) for i, child in reversed(list(enumerate(item))))
        elif isinstance(item, str) and not is_unicode_text(item):
            return path, "has a lone surrogate (\\ud800-\\udfff): strings must be valid Unicode text"
        elif isinstance(item, _Constant):
            return path, f"is {item.spelled}, which is not a JSON number: numbers must be finite"
    return None


class StrictJsonRequest(Request):
    """A request whose `json()` is `decoded_json` of its body, decoded once."""

    async def json(self) -> Any:
        if not hasattr(self, "_decoded"):
            self._decoded = decoded_json(await self.body())
        return self._decoded


def _is_json(content_type: str | None) -> bool:
    """What FastAPI reads as JSON (a body without a content type it leaves as bytes: a 422 on `body`)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class StrictJsonRoute(APIRoute):
    """The route class of every router with a JSON body: the body is decoded by `decoded_json` before
    FastAPI's handler runs, so its refusal is answered as itself (FastAPI would turn any error raised
    while it reads the body into an undocumented 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def decoding(request: Request) -> Response:
            strict = StrictJsonRequest(request.scope, request.receive)
            if _is_json(strict.headers.get("content-type")) and await strict.body():
                await strict.json()
            return await handle(strict)

        return decoding

"""The one error the service raises: an HTTP status, a stable code, a message and the field at fault.
The HTTP API and the MCP server both turn it into their own error form."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        message, field = printable(message), printable(field) if field is not None else None
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def printable(text: str) -> str:
    """`text` as UTF-8 can carry it: a message quoting a client's lone surrogate must still render."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, "invalid", message, field)


def not_found(message: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, field)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "store_unavailable", message)


ITEM_STATUS = {"forbidden": 403, "conflict": 409}
"""The status of a single-memory add whose one item is refused with this code (otherwise 422)."""


def item_error(error: dict) -> ApiError:
    """A batch item's refusal (`{"code", "message", "field"}`) as the error of a call that added only it."""
    return ApiError(ITEM_STATUS.get(error["code"], 422), error["code"], error["message"], error.get("field"))

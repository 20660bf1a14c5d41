"""The request and response models of the HTTP API: the validation boundary of typed fields (a
wrong type or a missing field is a 422 naming it; request models are strict, so `"yes"` is not
true and `"5"` is not 5) and the shapes of the OpenAPI schema, with every error status documented.

Ranges (`limit`, `max_tokens`, `relevance_score`) and user ids are checked by `MemoryService`,
after the key's scope and tenant, so a request that is both forbidden and out of range is a 403.
A memory to add stays a plain object (`MemoryIn` documents it): the service answers each item
of a batch with its own error, so the body cannot fail as a whole."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hms_resources.context.assembler import ContextItem


class MemoryIn(BaseModel):
    """A memory to add: `user_id`, `content` and any other `memory.created` payload field."""

    model_config = ConfigDict(extra="allow")
    user_id: str
    content: str
    memory_id: str | None = None
    event_id: str | None = Field(None, description="The idempotency key: a retry with the same id stores nothing twice")
    occurred_at: str | None = Field(None, description="ISO 8601 with a time zone; default: now")
    memory_type: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    importance: float | None = None


NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""A filter's name (memory type, category, tag): no control characters, as the store keeps none."""

STRICT = ConfigDict(strict=True)
"""Request models take JSON's own types only: no string read as a number or a boolean."""


class MemoryBatchIn(BaseModel):
    model_config = STRICT
    memories: list[dict[str, Any]]


class ItemResult(BaseModel):
    index: int
    status: Literal["created", "duplicate", "rejected"]
    memory_id: str | None = None
    event_id: str | None = None
    error: dict[str, Any] | None = None


class BatchResult(BaseModel):
    results: list[ItemResult]
    created: int
    duplicates: int
    rejected: int


class EventsIn(BaseModel):
    model_config = STRICT
    events: list[dict[str, Any]]


class SearchIn(BaseModel):
    model_config = STRICT
    user_id: str
    query: str
    limit: int = 10
    now: str | None = None


class ContextIn(BaseModel):
    model_config = STRICT
    user_id: str
    query: str
    max_tokens: int = 1024
    deep: bool = False
    now: str | None = Field(None, description="Answer as of this time (ISO 8601 with a zone); default: now")


class ContextOut(BaseModel):
    user_id: str
    query: str
    token_budget: int
    items: list[ContextItem]
    prompt: str
    token_count: int
    timings_ms: dict[str, float]
    adapter: dict[str, Any] | None


class FeedbackIn(BaseModel):
    model_config = STRICT
    user_id: str
    memory_id: str
    was_relevant: bool
    relevance_score: float | None = None


class ReasonIn(BaseModel):
    model_config = STRICT
    reason: str | None = None


class ErrorBody(BaseModel):
    code: str = Field(description="Stable: what the client can branch on (`invalid`, `forbidden`, ...)")
    message: str = Field(description="What is wrong and how to fix it, in words")
    field: str | None = Field(description="The field (`query`, `memories.1.content`), header (`Idempotency-Key`) or `body` at fault")


class ErrorOut(BaseModel):
    error: ErrorBody


def _documented(statuses: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut, "description": meaning} for status, meaning in statuses.items()}


ERRORS: dict[int | str, dict[str, Any]] = _documented({
    401: "`unauthorized`: no key, an unknown key or a revoked one",
    403: "`forbidden`: the key's scope is too low, or the user id names another tenant",
    404: "`not_found`: no such memory of this user (or no such key)",
    408: "`timeout`: the request body did not arrive in time",
    409: "`conflict`: the event id (or `Idempotency-Key`) was stored before with other content",
    410: "`forgotten`: the memory was forgotten; it cannot be changed",
    413: "`too_large`: the body is over the server's limit (`HMS_MAX_BODY_BYTES`)",
    421: "`wrong_shard`: the user is served by another shard; the message names it",
    422: "`invalid`: a field, header or the body is wrong; `field` names it",
    429: "`rate_limited`: the tenant is over its rate or concurrency; retry after `Retry-After` seconds",
    503: "`store_unavailable` or `deadline_exceeded`: the store did not answer, or the call ran past its deadline",
})
"""The error responses every keyed route documents: each has the `ErrorOut` body."""

CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **_documented({
        400: "`context_length_exceeded`: the prompt does not fit the model's window",
        502: "`provider_error`: the model's provider could not answer",
    }),
}
"""A chat call also answers for the model behind it."""


def batch_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch's per-item results with their counts (the `BatchResult` shape)."""
    statuses = [r["status"] for r in results]
    return {
        "results": results,
        "created": statuses.count("created"),
        "duplicates": statuses.count("duplicate"),
        "rejected": statuses.count("rejected"),
    }

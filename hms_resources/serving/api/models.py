"""The request and response models of the HTTP API: the validation boundary of typed fields (a
wrong type or a missing field is a 422 naming it) and the shapes of the OpenAPI schema.

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


class MemoryBatchIn(BaseModel):
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
    events: list[dict[str, Any]]


class SearchIn(BaseModel):
    user_id: str
    query: str
    limit: int = 10
    now: str | None = None


class ContextIn(BaseModel):
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
    user_id: str
    memory_id: str
    was_relevant: bool
    relevance_score: float | None = None


class ReasonIn(BaseModel):
    reason: str | None = None


class ErrorOut(BaseModel):
    error: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorOut} for status in (401, 403, 404, 413, 422, 503)}
"""The error responses a route documents: every one has the `ErrorOut` body."""


def batch_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch's per-item results with their counts (the `BatchResult` shape)."""
    statuses = [r["status"] for r in results]
    return {
        "results": results,
        "created": statuses.count("created"),
        "duplicates": statuses.count("duplicate"),
        "rejected": statuses.count("rejected"),
    }

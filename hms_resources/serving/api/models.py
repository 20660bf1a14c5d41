"""The request and response models of the HTTP API: the validation boundary of typed fields (a
wrong type or a missing field is a 422 naming it; request models are strict, so `"yes"` is not
true and `"5"` is not 5) and the shapes of the OpenAPI schema, with every error status documented.

Ranges (`limit`, `max_tokens`, `relevance_score`) and user ids are checked by `MemoryService`,
after the key's scope and tenant, so a request that is both forbidden and out of range is a 403.
A memory to add stays a plain object (`MemoryIn` documents it): the service answers each item
of a batch with its own error, so the body cannot fail as a whole."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hms_resources.context.assembler import ContextItem


class MemoryIn(BaseModel):
    """A memory to add: `user_id`, `content` and the other `memory.created` payload fields (the store's
    schema, `store/events.py`, checks each; a field that is none of these is a 422 naming it)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    user_id: str
    content: str
    memory_id: str | None = None
    event_id: str | None = Field(None, description="The idempotency key: a retry with the same id stores nothing twice")
    occurred_at: str | None = Field(None, description="ISO 8601 with a time zone; default: now")
    memory_type: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    importance: float | None = Field(None, ge=0, le=1)
    confidence: float | None = Field(None, ge=0, le=1)
    session_id: str | None = None
    source_type: str | None = None
    source_id: str | None = None
    created_by: str | None = None
    parent_memory_id: str | None = None
    related_memory_ids: list[str] | None = None
    context: dict[str, Any] | None = Field(None, description="Keys among temporal, spatial, social, environmental, emotional, technical, custom")
    metadata: dict[str, Any] | None = None


NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""A filter's name (memory type, category, tag): no control characters, as the store keeps none."""

STRICT = ConfigDict(strict=True)
"""Request models take JSON's own types only: no string read as a number or a boolean."""

FORBID = ConfigDict(strict=True, extra="forbid")
"""...and no field the API does not know: a misspelt or unsupported one (`filter`, `tag` beside
`query`) is a 422 naming it, never silently ignored."""


class MemoryBatchIn(BaseModel):
    """Memories to add at once: each item is a `MemoryIn`, answered with its own result."""

    model_config = FORBID
    memories: list[Any] = Field(description="Up to 1,000 MemoryIn objects")


class MessageIn(BaseModel):
    model_config = FORBID
    role: Literal["user", "assistant", "system"]
    content: str = Field(min_length=1, pattern=r"\S", description="The turn's text: at least one non-blank character")


class MessagesIn(BaseModel):
    """A conversation to remember, Mem0's and Zep's shape: its turns are stored in order as conversation
    turns of the session (`session_id`, a new one when left out), `created_by` their role."""

    model_config = FORBID
    user_id: str
    messages: list[MessageIn] = Field(min_length=1, max_length=1_000)
    session_id: str | None = Field(None, min_length=1, max_length=255, pattern=NAME_PATTERN)


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


class TurnsResult(BatchResult):
    """What adding `messages` stored: a result per turn, and the session they are turns of."""

    session_id: str


class EventsIn(BaseModel):
    model_config = FORBID
    events: list[dict[str, Any]]


class SearchFilters(BaseModel):
    """What a found memory must be: the filters of `GET /v1/memories`, all of them at once."""

    model_config = FORBID
    memory_type: str | None = Field(None, pattern=NAME_PATTERN)
    category: str | None = Field(None, pattern=NAME_PATTERN)
    tag: str | None = Field(None, pattern=NAME_PATTERN)
    tags: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(None, max_length=32, description="Every one of these tags")
    tier: Literal["hot", "warm", "cold"] | None = None
    created_after: str | None = Field(None, description="ISO 8601 with a time zone")
    created_before: str | None = Field(None, description="ISO 8601 with a time zone")


class SearchIn(BaseModel):
    model_config = FORBID
    user_id: str
    query: str
    limit: int = 10
    now: str | None = None
    filters: SearchFilters | None = Field(None, description="Only memories that pass these; the best of them are found however many others rank higher")


class ContextIn(BaseModel):
    model_config = FORBID
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


class EmbeddingsIn(BaseModel):
    """OpenAI's embeddings request: what the official clients send."""

    model_config = FORBID
    input: str | list[str] = Field(description="A text or a list of texts (token arrays are not taken)")
    model: str = Field(description="The configured embedder's name (`all-MiniLM-L6-v2` by default) or `hms-embedding`")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="The model's own dimension, if given")
    user: str | None = Field(None, description="Accepted for compatibility; not stored")


class EmbeddingOut(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingsOut(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingOut]
    model: str
    usage: dict[str, int]


class UserOut(BaseModel):
    user_id: str = Field(description="The tenant's own name for the user")
    memories: int = Field(description="Memories not forgotten")


class UsersOut(BaseModel):
    users: list[UserOut]
    next_cursor: str | None


class FeedbackIn(BaseModel):
    model_config = FORBID
    user_id: str
    memory_id: str
    was_relevant: bool
    relevance_score: float | None = None


class ReasonIn(BaseModel):
    model_config = FORBID
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
    409: "`conflict`: the event id (or `Idempotency-Key`) was stored before with other content, or several users have the memory read without `user_id`",
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
        400: "`context_length_exceeded`: the prompt does not fit the model's window; `invalid`: a field HMS cannot honour or "
             "does not know, or a model no provider is known for (named in `field`)",
        502: "`provider_error`: the model's provider could not answer (its status and message, secrets redacted)",
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

"""Memory events: the envelope, the payload of each type, and their validation.

Validation here is structural and pure; whether the memory an event names exists is decided by the
event store inside the append transaction, where the store's state is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

DEFAULT_MAX_CONTENT_BYTES = 64 * 1024

MEMORY_CREATED = "memory.created"
MEMORY_UPDATED = "memory.updated"
MEMORY_ACCESSED = "memory.accessed"
MEMORY_TAGGED = "memory.tagged"
MEMORY_RELATED = "memory.related"
MEMORY_ARCHIVED = "memory.archived"
MEMORY_FORGOTTEN = "memory.forgotten"

EVENT_TYPES = (
    MEMORY_CREATED,
    MEMORY_UPDATED,
    MEMORY_ACCESSED,
    MEMORY_TAGGED,
    MEMORY_RELATED,
    MEMORY_ARCHIVED,
    MEMORY_FORGOTTEN,
)

CONTEXT_KINDS = ("temporal", "spatial", "social", "environmental", "emotional", "technical", "custom")

# Payload fields that carry what the user said; `memory.forgotten` erases them from every stored event.
ERASABLE_FIELDS = ("content", "context", "metadata", "query", "access_context", "reason")


class EventError(ValueError):
    """An event that cannot be stored; the message names the field and what is wrong with it."""


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _nonempty_string(value: Any) -> bool:
    return type(value) is str and value != ""


MAX_ID_LENGTH = 255


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _identifier(value: Any, name: str) -> str:
    """Ids are non-empty, at most 255 characters and free of control characters (graph keys join
    them with one)."""
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and not _CONTROL_CHARACTER.search(value):
        return value
    if not _nonempty_string(value):
        raise EventError(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise EventError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    raise EventError(f"{name} must not contain control characters")


def _unit_interval(value: Any) -> bool:
    return type(value) in (int, float) and 0.0 <= value <= 1.0


def _text(value: Any) -> bool:
    return type(value) is str and not value.isspace() and value != ""


def _string_list(value: Any) -> bool:
    return type(value) is list and all(type(v) is str and v for v in value)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _context(value: Any) -> bool:
    return isinstance(value, dict) and all(k in CONTEXT_KINDS for k in value)


def _string_or_object(value: Any) -> bool:
    return isinstance(value, (str, dict))


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


_MEMORY_FIELDS: dict[str, tuple[Any, str]] = {
    "content": (_text, "a string with at least one non-blank character"),
    "session_id": (_nonempty_string, "a non-empty string"),
    "memory_type": (_nonempty_string, "a non-empty string"),
    "category": (_nonempty_string, "a non-empty string"),
    "tags": (_string_list, "a list of non-empty strings"),
    "importance": (_unit_interval, "a number from 0 to 1"),
    "confidence": (_unit_interval, "a number from 0 to 1"),
    "source_type": (_nonempty_string, "a non-empty string"),
    "source_id": (_nonempty_string, "a non-empty string"),
    "created_by": (_nonempty_string, "a non-empty string"),
    "parent_memory_id": (_nonempty_string, "a non-empty string"),
    "related_memory_ids": (_string_list, "a list of non-empty strings"),
    "context": (_context, "an object whose keys are among " + ", ".join(CONTEXT_KINDS)),
    "metadata": (_object, "an object"),
}

PAYLOAD_FIELDS: dict[str, dict[str, tuple[Any, str]]] = {
    MEMORY_CREATED: _MEMORY_FIELDS,
    MEMORY_UPDATED: _MEMORY_FIELDS,
    MEMORY_ACCESSED: {
        "access_context": (_string_or_object, "a string or an object"),
        "access_method": (_nonempty_string, "a non-empty string"),
        "query": (_string, "a string"),
        "was_relevant": (_boolean, "true or false"),
        "relevance_score": (_unit_interval, "a number from 0 to 1"),
    },
    MEMORY_TAGGED: {
        "tags": (_string_list, "a list of non-empty strings"),
        "remove": (_string_list, "a list of non-empty strings"),
    },
    MEMORY_RELATED: {
        "target": (_nonempty_string, "a non-empty string"),
        "relationship_type": (_nonempty_string, "a non-empty string"),
        "strength": (_unit_interval, "a number from 0 to 1"),
    },
    MEMORY_ARCHIVED: {"reason": (_string, "a string")},
    MEMORY_FORGOTTEN: {"reason": (_string, "a string")},
}

REQUIRED_PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    MEMORY_CREATED: ("content",),
    MEMORY_RELATED: ("target", "relationship_type"),
}

ENVELOPE_FIELDS = ("event_id", "type", "user_id", "memory_id", "occurred_at", "payload")
_ENVELOPE_SET = frozenset(ENVELOPE_FIELDS)


@dataclass(slots=True)
class MemoryEvent:
    """One stored fact about a memory. `occurred_at` is normalised to UTC text, so it sorts."""

    event_id: str
    type: str
    user_id: str
    memory_id: str
    occurred_at: str
    payload: dict[str, Any] = field(default_factory=dict)
    sequence: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.memory_id)

    def to_dict(self) -> dict[str, Any]:
        record = {
            "event_id": self.event_id,
            "type": self.type,
            "user_id": self.user_id,
            "memory_id": self.memory_id,
            "occurred_at": self.occurred_at,
            "payload": self.payload,
        }
        if self.sequence is not None:
            record["sequence"] = self.sequence
        return record


def normalize_timestamp(value: Any, name: str = "occurred_at") -> str:
    """ISO 8601 with a time zone, as fixed-width UTC text (`2026-01-02T03:04:05.000000Z`)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise EventError(f"{name} is not an ISO 8601 timestamp: {value!r}") from None
    else:
        raise EventError(f"{name} must be an ISO 8601 string, not {type(value).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventError(f"{name} must include a time zone: {value!r}")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_event(record: Any, *, max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES) -> MemoryEvent:
    """Check one decoded JSON value against the event schema; raise `EventError` naming the field."""
    if not isinstance(record, dict):
        raise EventError(f"an event must be a JSON object, not {type(record).__name__}")
    if not record.keys() <= _ENVELOPE_SET:
        unknown = sorted(set(record) - _ENVELOPE_SET)
        raise EventError(f"unknown envelope field {unknown[0]!r}")
    event_id = record.get("event_id")
    if event_id is None:
        raise EventError("event_id is required")
    _identifier(event_id, "event_id")
    event_type = record.get("type")
    if event_type is None:
        raise EventError("type is required")
    if event_type not in EVENT_TYPES:
        raise EventError(f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    user_id = record.get("user_id")
    if user_id is None:
        raise EventError("user_id is required")
    _identifier(user_id, "user_id")
    memory_id = record.get("memory_id")
    if memory_id is None:
        if event_type != MEMORY_CREATED:
            raise EventError(f"memory_id is required for {event_type}")
        memory_id = event_id
    else:
        _identifier(memory_id, "memory_id")
    if "occurred_at" not in record:
        raise EventError("occurred_at is required")
    occurred_at = normalize_timestamp(record["occurred_at"])
    payload = record.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise EventError(f"payload must be an object, not {type(payload).__name__}")
    _check_payload(event_type, payload, max_content_bytes)
    return MemoryEvent(event_id, event_type, user_id, memory_id, occurred_at, payload)


def _check_payload(event_type: str, payload: dict[str, Any], max_content_bytes: int) -> None:
    schema = PAYLOAD_FIELDS[event_type]
    for name in REQUIRED_PAYLOAD_FIELDS.get(event_type, ()):
        if name not in payload:
            raise EventError(f"payload.{name} is required for {event_type}")
    for name, value in payload.items():
        if name not in schema:
            raise EventError(f"payload.{name} is not a field of {event_type}")
        check, expected = schema[name]
        if not check(value):
            raise EventError(f"payload.{name} must be {expected}, got {_show(value)}")
    if event_type == MEMORY_UPDATED and not payload:
        raise EventError("payload of memory.updated must change at least one field")
    if event_type == MEMORY_TAGGED and not (payload.get("tags") or payload.get("remove")):
        raise EventError("payload.tags or payload.remove must name at least one tag")
    content = payload.get("content")
    if content is not None and len(content) * 4 > max_content_bytes:
        size = len(content.encode("utf-8"))
        if size > max_content_bytes:
            raise EventError(
                f"payload.content is {size} bytes, over the limit of {max_content_bytes} bytes"
            )


def _show(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() if value is not None else "null"
    return text if len(text) <= 40 else text[:37] + "..."


def erase_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with what the user said removed, for `memory.forgotten`."""
    return {k: v for k, v in payload.items() if k not in ERASABLE_FIELDS}

"""Memory events: the envelope, the payload of each type, and their validation.

Validation here is structural and pure; whether the memory an event names exists is decided by the
event store inside the append transaction, where the store's state is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from hms_resources.common.limits import (
    CONTROL_CHARACTER,
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ID_LENGTH,
    MAX_INTEGER,
    MAX_LIST_ITEMS,
    MAX_MEMORY_TYPE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_NESTING_DEPTH,
    MAX_OBJECT_BYTES,
    MIN_INTEGER,
)
from hms_resources.common.text import is_unicode_text

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

# A read of several memories at once (what one context returned) is one `memory.accessed` whose
# `payload.memory_ids` lists them all, the envelope's `memory_id` first: the log keeps one event per
# read, the fold counts one access per memory listed (`accesses_of`).
READ_MEMORY_IDS = "memory_ids"
_FEEDBACK_FIELDS = ("was_relevant", "relevance_score")

# Payload fields a forgotten memory's stored events keep: ids of other memories, numbers, flags and a
# relation's type, what reads of other memories and the fold need. Every other field is the client's
# free text (content, tags, category, names, reasons, queries): `memory.forgotten` erases it (`erase_payload`).
KEPT_WHEN_ERASED = frozenset((READ_MEMORY_IDS, "target", "relationship_type", "strength", "importance", "confidence", *_FEEDBACK_FIELDS))


class EventError(ValueError):
    """An event that cannot be stored; the message names the field and what is wrong with it."""


def _identifier(value: Any, name: str) -> str:
    """Ids are non-empty, at most 255 characters and free of control characters (graph keys join
    them with one)."""
    problem = _id_problem(value)
    if problem:
        raise EventError(f"{name} {problem}")
    return value


def _id_problem(value: Any, limit: int = MAX_ID_LENGTH) -> str | None:
    if type(value) is str and 0 < len(value) <= limit and (value.isprintable() or not (CONTROL_CHARACTER.search(value) or _string_problem(value))):
        return None
    if type(value) is not str or value == "":
        return "must be a non-empty string"
    if len(value) > limit:
        return f"is longer than {limit} characters"
    if CONTROL_CHARACTER.search(value):
        return "must not contain control characters"
    return "must not contain " + str(_string_problem(value)).removeprefix("contains ")


def _name(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        problem = _id_problem(value, limit)
        return None if problem is None else f"{problem}, got {_show(value)}"

    return check


def _names(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if type(value) is not list:
            return f"must be a list of non-empty strings, got {_show(value)}"
        if len(value) > MAX_LIST_ITEMS:
            return f"has {len(value)} items, over the limit of {MAX_LIST_ITEMS}"
        for position, item in enumerate(value):
            problem = _id_problem(item, limit)
            if problem:
                return f"[{position}] {problem}"
        return None

    return check


def _unit_interval(value: Any) -> str | None:
    if type(value) in (int, float) and 0.0 <= value <= 1.0:
        return None
    return f"must be a number from 0 to 1, got {_show(value)}"


def _text(value: Any) -> str | None:
    if type(value) is not str or value == "" or value.isspace():
        return f"must be a string with at least one non-blank character, got {_show(value)}"
    return _string(value)


def _string(value: Any) -> str | None:
    if type(value) is not str:
        return f"must be a string, got {_show(value)}"
    problem = _string_problem(value)
    return "must not contain " + problem.removeprefix("contains ") if problem else None


def _boolean(value: Any) -> str | None:
    return None if type(value) is bool else f"must be true or false, got {_show(value)}"


def _object(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be an object, got {_show(value)}"
    return json_value_problem(value)


def _context(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be an object whose keys are among {', '.join(CONTEXT_KINDS)}, got {_show(value)}"
    if any(k not in CONTEXT_KINDS for k in value):
        return f"must be an object whose keys are among {', '.join(CONTEXT_KINDS)}, got {_show(value)}"
    return json_value_problem(value)


def _string_or_object(value: Any) -> str | None:
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return json_value_problem(value)
    return f"must be a string or an object, got {_show(value)}"


def json_value_problem(value: Any) -> str | None:
    """What makes a decoded JSON value unstorable, or None: nesting deeper than 32 levels, a NUL or a
    lone surrogate in a string or key, an integer outside 64 bits, a number that is not finite, or more
    than 64 KiB of JSON."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if depth >= MAX_NESTING_DEPTH:
                return f"nests deeper than {MAX_NESTING_DEPTH} levels (at {path or 'the top'})"
            if kind is dict:
                for key, child in item.items():
                    problem = _string_problem(key)
                    if problem:
                        return f"has a key that {problem} (at {path or 'the top'})"
                    stack.append((child, depth + 1, f"{path}.{key}" if len(path) < 200 else path))
            else:
                stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))
        elif kind is str:
            problem = _string_problem(item)
            if problem:
                return f"has a string that {problem} (at {path or 'the top'})"
        elif kind is int:
            if not MIN_INTEGER <= item <= MAX_INTEGER:
                return f"has an integer outside the 64-bit range (at {path or 'the top'})"
        elif kind is float:
            if not math.isfinite(item):
                return f"has a number that is not finite (at {path or 'the top'})"
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError as exc:
        return f"cannot be stored as JSON: {exc}"
    if size > MAX_OBJECT_BYTES:
        return f"is {size} bytes of JSON, over the limit of {MAX_OBJECT_BYTES}"
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains NUL (\\u0000)"
    if not is_unicode_text(text):
        return "contains a lone surrogate (\\ud800-\\udfff): strings must be valid Unicode text"
    return None


_ID = _name(MAX_ID_LENGTH)
_NAME = _name(MAX_NAME_LENGTH)

_MEMORY_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "content": _text,
    "session_id": _NAME,
    "memory_type": _name(MAX_MEMORY_TYPE_LENGTH),
    "category": _NAME,
    "tags": _names(MAX_NAME_LENGTH),
    "importance": _unit_interval,
    "confidence": _unit_interval,
    "source_type": _NAME,
    "source_id": _NAME,
    "created_by": _NAME,
    "parent_memory_id": _ID,
    "related_memory_ids": _names(MAX_ID_LENGTH),
    "context": _context,
    "metadata": _object,
}

PAYLOAD_FIELDS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    MEMORY_CREATED: _MEMORY_FIELDS,
    MEMORY_UPDATED: _MEMORY_FIELDS,
    MEMORY_ACCESSED: {
        "access_context": _string_or_object,
        "access_method": _NAME,
        "query": _string,
        "was_relevant": _boolean,
        "relevance_score": _unit_interval,
        "memory_ids": _names(MAX_ID_LENGTH),
    },
    MEMORY_TAGGED: {"tags": _names(MAX_NAME_LENGTH), "remove": _names(MAX_NAME_LENGTH)},
    MEMORY_RELATED: {"target": _ID, "relationship_type": _NAME, "strength": _unit_interval},
    MEMORY_ARCHIVED: {"reason": _string},
    MEMORY_FORGOTTEN: {"reason": _string},
}

# Free-text fields held to the content limit.
_TEXT_FIELDS = ("content", "query", "reason", "access_context")

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
    """ISO 8601 with a time zone, as fixed-width UTC text (`2026-01-02T03:04:05.000000Z`), from
    1900-01-01 to 2199-12-31 in UTC (`EARLIEST_TIME`, `LATEST_TIME`)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise EventError(f"{name} is not an ISO 8601 timestamp: {_show(value)}") from None
    else:
        raise EventError(f"{name} must be an ISO 8601 string, not {type(value).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventError(f"{name} must include a time zone: {_show(value)}")
    try:
        text = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"
    except (OverflowError, ValueError):
        text = ""
    if not EARLIEST_TIME <= text <= LATEST_TIME or len(text) != len(EARLIEST_TIME):
        raise EventError(f"{name} {_show(value)} is outside the supported range {EARLIEST_TIME} to {LATEST_TIME}")
    return text


def parse_event(record: Any, *, max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES) -> MemoryEvent:
    """Check one decoded JSON value against the event schema; raise `EventError` naming the field."""
    if not isinstance(record, dict):
        raise EventError(f"an event must be a JSON object, not {type(record).__name__}")
    if not record.keys() <= _ENVELOPE_SET:
        unknown = sorted(set(record) - _ENVELOPE_SET)
        raise EventError(f"unknown envelope field {unknown[0][:40]!r}")
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
    if READ_MEMORY_IDS in payload:
        _check_read(event_type, memory_id, payload)
    return MemoryEvent(event_id, event_type, user_id, memory_id, occurred_at, payload)


def _check_read(event_type: str, memory_id: str, payload: dict[str, Any]) -> None:
    """A read of several memories names each once, its anchor first, and carries no feedback (which is
    about one memory)."""
    memory_ids = payload[READ_MEMORY_IDS]
    if not memory_ids:
        raise EventError(f"payload.{READ_MEMORY_IDS} must name at least one memory")
    if memory_ids[0] != memory_id:
        raise EventError(f"payload.{READ_MEMORY_IDS}[0] must be the event's memory_id {_show(memory_id)}, got {_show(memory_ids[0])}")
    if len(set(memory_ids)) != len(memory_ids):
        repeated = next(m for i, m in enumerate(memory_ids) if m in memory_ids[:i])
        raise EventError(f"payload.{READ_MEMORY_IDS} names {_show(repeated)} twice")
    feedback = next((name for name in _FEEDBACK_FIELDS if name in payload), None)
    if feedback is not None:
        raise EventError(f"payload.{feedback} is about one memory and cannot go with payload.{READ_MEMORY_IDS} in {event_type}")


def is_read_of_many(event: MemoryEvent) -> bool:
    return event.type == MEMORY_ACCESSED and READ_MEMORY_IDS in event.payload


def accesses_of(event: MemoryEvent) -> list[MemoryEvent]:
    """The event as the per-memory accesses it stands for: a read of several memories becomes one
    `memory.accessed` per memory (same id, time and sequence), any other event itself. Every reader
    that counts accesses folds these, so a batched read counts exactly as single accesses would."""
    if not is_read_of_many(event):
        return [event]
    payload = {k: v for k, v in event.payload.items() if k != READ_MEMORY_IDS}
    return [
        MemoryEvent(event.event_id, event.type, event.user_id, memory_id, event.occurred_at, payload, event.sequence)
        for memory_id in event.payload[READ_MEMORY_IDS]
    ]


def read_records(event_id: str, user_id: str, memory_ids: list[str], occurred_at: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One read of `memory_ids` (each counted once) as `memory.accessed` records: one record, or one per
    `MAX_LIST_ITEMS` memories (`<event_id>-2`, ...); a read of one memory is a plain access."""
    unique = list(dict.fromkeys(memory_ids))
    found = []
    for part, start in enumerate(range(0, len(unique), MAX_LIST_ITEMS)):
        named = unique[start : start + MAX_LIST_ITEMS]
        found.append({"event_id": event_id if part == 0 else f"{event_id}-{part + 1}", "type": MEMORY_ACCESSED, "user_id": user_id,
                      "memory_id": named[0], "occurred_at": occurred_at,
                      "payload": {**payload, READ_MEMORY_IDS: named} if len(named) > 1 else dict(payload)})
    return found


def without_reads_of(event_payload: dict[str, Any], dropped: set[str]) -> list[str]:
    """The memories a read still names once `dropped` (forgotten or missing ones) are taken out."""
    return [m for m in event_payload.get(READ_MEMORY_IDS, ()) if m not in dropped]


def _check_payload(event_type: str, payload: dict[str, Any], max_content_bytes: int) -> None:
    schema = PAYLOAD_FIELDS[event_type]
    for name in REQUIRED_PAYLOAD_FIELDS.get(event_type, ()):
        if name not in payload:
            raise EventError(f"payload.{name} is required for {event_type}")
    for name, value in payload.items():
        if name not in schema:
            shown = name if len(name) <= 40 and name.isprintable() else _show(name)
            raise EventError(f"payload.{shown} is not a field of {event_type}")
        problem = schema[name](value)
        if problem:
            raise EventError(f"payload.{name} {problem}")
    if event_type == MEMORY_UPDATED and not payload:
        raise EventError("payload of memory.updated must change at least one field")
    if event_type == MEMORY_TAGGED and not (payload.get("tags") or payload.get("remove")):
        raise EventError("payload.tags or payload.remove must name at least one tag")
    for name in _TEXT_FIELDS:
        text = payload.get(name)
        if type(text) is str and len(text) * 4 > max_content_bytes:
            size = len(text.encode("utf-8"))
            if size > max_content_bytes:
                raise EventError(f"payload.{name} is {size} bytes, over the limit of {max_content_bytes} bytes")


def _show(value: Any) -> str:
    if type(value) is float and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def erase_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with what the user said removed, for `memory.forgotten`: an allow-list, so a field
    added later is erased until someone decides it holds no text."""
    return {k: v for k, v in payload.items() if k in KEPT_WHEN_ERASED}

"""The current state of every memory, as a pure, deterministic fold over its events.

`replay_events(all)` equals `apply_events(replay_events(old), new)` for any split of a log in
sequence order; the incremental `memories` asset relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable

import orjson

from hms_resources.common.bulk import gc_paused
from hms_resources.store.events import (
    MEMORY_ACCESSED,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    MEMORY_RELATED,
    MEMORY_TAGGED,
    MEMORY_UPDATED,
    MemoryEvent,
    accesses_of,
    is_read_of_many,
)

MemoryKey = tuple[str, str]

_UPDATABLE = (
    "content",
    "session_id",
    "memory_type",
    "category",
    "tags",
    "importance",
    "confidence",
    "source_type",
    "source_id",
    "created_by",
    "parent_memory_id",
    "related_memory_ids",
    "context",
    "metadata",
)


CONVERSATION_TURN = "conversation_turn"
"""The memory type of a conversation turn: its `created_by` is the speaker, indexed with its text and
shown in the prompt."""


@dataclass(slots=True)
class Memory:
    user_id: str
    memory_id: str
    content: str | None = None
    session_id: str | None = None
    memory_type: str | None = None
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    importance: float | None = None
    confidence: float | None = None
    source_type: str | None = None
    source_id: str | None = None
    created_by: str | None = None
    parent_memory_id: str | None = None
    related_memory_ids: list[str] = field(default_factory=list)
    relations: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    last_modified_at: str | None = None
    access_count: int = 0
    last_accessed_at: str | None = None
    relevant_count: int = 0
    irrelevant_count: int = 0
    relevance_score_sum: float = 0.0
    relevance_score_count: int = 0
    is_archived: bool = False
    archive_reason: str | None = None
    archived_at: str | None = None
    is_forgotten: bool = False
    forgotten_at: str | None = None
    event_count: int = 0
    last_sequence: int | None = None

    @property
    def key(self) -> MemoryKey:
        return (self.user_id, self.memory_id)

    @property
    def status(self) -> str:
        if self.is_forgotten:
            return "forgotten"
        return "archived" if self.is_archived else "live"


MEMORY_COLUMNS = tuple(f.name for f in fields(Memory))
JSON_COLUMNS = ("tags", "related_memory_ids", "relations", "context", "metadata")

MemoryState = dict[MemoryKey, Memory]


def _later(a: str | None, b: str) -> str:
    return b if a is None or b > a else a


def apply_event(state: MemoryState, event: MemoryEvent) -> None:
    """Apply one event in place. Events on a forgotten memory change nothing: its content stays gone.
    A read of several memories counts as one access of each (`accesses_of`); a memory whose state is
    already past the read's sequence has counted it."""
    if is_read_of_many(event):
        for access in accesses_of(event):
            memory = state.get(access.key)
            if memory is None or access.sequence is None or memory.last_sequence is None or memory.last_sequence < access.sequence:
                _apply_one(state, access)
        return
    _apply_one(state, event)


def _apply_one(state: MemoryState, event: MemoryEvent) -> None:
    key = event.key
    memory = state.get(key)
    if event.type == MEMORY_CREATED:
        if memory is not None:
            return
        memory = Memory(user_id=event.user_id, memory_id=event.memory_id, created_at=event.occurred_at)
        state[key] = memory
        _set_fields(memory, event.payload)
        memory.last_modified_at = event.occurred_at
    elif memory is None or memory.is_forgotten:
        return
    elif event.type == MEMORY_UPDATED:
        _set_fields(memory, event.payload)
        memory.last_modified_at = _later(memory.last_modified_at, event.occurred_at)
    elif event.type == MEMORY_ACCESSED:
        memory.access_count += 1
        memory.last_accessed_at = _later(memory.last_accessed_at, event.occurred_at)
        relevant = event.payload.get("was_relevant")
        if relevant is True:
            memory.relevant_count += 1
        elif relevant is False:
            memory.irrelevant_count += 1
        score = event.payload.get("relevance_score")
        if score is not None:
            memory.relevance_score_sum += float(score)
            memory.relevance_score_count += 1
    elif event.type == MEMORY_TAGGED:
        removed = set(event.payload.get("remove", ()))
        tags = [t for t in memory.tags if t not in removed]
        for tag in event.payload.get("tags", ()):
            if tag not in tags:
                tags.append(tag)
        memory.tags = tags
        memory.last_modified_at = _later(memory.last_modified_at, event.occurred_at)
    elif event.type == MEMORY_RELATED:
        relation = {
            "target": event.payload["target"],
            "relationship_type": event.payload["relationship_type"],
            "strength": float(event.payload.get("strength", 1.0)),
        }
        memory.relations = [
            r
            for r in memory.relations
            if (r["target"], r["relationship_type"]) != (relation["target"], relation["relationship_type"])
        ] + [relation]
        memory.last_modified_at = _later(memory.last_modified_at, event.occurred_at)
    elif event.type == MEMORY_ARCHIVED:
        memory.is_archived = True
        memory.archive_reason = event.payload.get("reason")
        memory.archived_at = event.occurred_at
    elif event.type == MEMORY_FORGOTTEN:
        _forget(memory, event.occurred_at)
    memory.event_count += 1
    if event.sequence is not None:
        memory.last_sequence = event.sequence


def _set_fields(memory: Memory, payload: dict[str, Any]) -> None:
    for name in _UPDATABLE:
        if name in payload:
            value = payload[name]
            if type(value) is list:
                value = list(value)
            elif type(value) is dict:
                value = orjson.loads(orjson.dumps(value))
            setattr(memory, name, value)


def _forget(memory: Memory, at: str) -> None:
    """Keep only a tombstone: the identity and when it was forgotten."""
    tombstone = Memory(user_id=memory.user_id, memory_id=memory.memory_id, created_at=memory.created_at)
    for name in MEMORY_COLUMNS:
        setattr(memory, name, getattr(tombstone, name))
    memory.is_forgotten = True
    memory.forgotten_at = at
    memory.last_modified_at = at


def apply_events(state: MemoryState, events: Iterable[MemoryEvent]) -> MemoryState:
    with gc_paused():
        for event in events:
            apply_event(state, event)
    return state


def replay_events(events: Iterable[MemoryEvent]) -> MemoryState:
    """The state of every memory after `events`, applied in the order given (the store's sequence)."""
    return apply_events({}, events)

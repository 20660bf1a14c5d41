"""The door every write goes through: memory events are built, validated, stamped with the one clock
and appended here, and nowhere else (the HTTP service, MCP, chat capture, the CLI, feedback and the
access record all call `MemoryWriter`). Callers speak stored names; a transport that renames (a
tenant's `acme/alice`) passes its `Names`. A refused write raises `WriteRefused`, whose `kind` a
transport turns into its own error."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from hms_resources.common.clock import utc_now
from hms_resources.context.assembly import query_text
from hms_resources.memory.accesses import AccessLog
from hms_resources.memory.exchange import Exchange, exchange_records
from hms_resources.store.event_store import AppendResult, EventStore
from hms_resources.store.events import (
    ENVELOPE_FIELDS,
    MEMORY_ACCESSED,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    MEMORY_UPDATED,
    EventError,
    MemoryEvent,
    parse_event,
)
from hms_resources.store.ingest import IngestReport, ingest_path
from hms_resources.store.salvage import append_salvaging

INVALID, MISSING, FORGOTTEN, REJECTED, CONFLICT = "invalid", "missing", "forgotten", "rejected", "conflict"
_FIELD = re.compile(r"^(?:payload\.)?([A-Za-z_][A-Za-z0-9_]*)")


class WriteRefused(ValueError):
    """A write that stores nothing: `kind` is `invalid`, `missing` (no such memory), `forgotten` or
    `conflict` (the store refused it); `field` names the input at fault."""

    def __init__(self, kind: str, message: str, field: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field


def field_of(message: str, payload_prefix: bool = False) -> str | None:
    """The field an `EventError` message names first (`payload.content is required` -> `content`)."""
    match = _FIELD.match(message)
    if match is None:
        return None
    return match.group(0) if payload_prefix else match.group(1)


FORGET_CHUNK = 100
"""Memories a forget-all appends per transaction: about 0.3-0.5 s of the write lock (3-5 ms a memory)."""


def new_event_id(stem: str) -> str:
    """A fresh event id for a write the caller did not name (`updated-<hex>`)."""
    return f"{stem}-{uuid.uuid4().hex}"


class Names(Protocol):
    """How a transport's names map to stored ones (a tenant's `Principal` is one)."""

    def stored_user(self, user_id: str) -> str: ...

    def stored_id(self, event_id: str) -> str: ...


class AsStored:
    """The names callers inside the process speak: the stored ones."""

    def stored_user(self, user_id: str) -> str:
        return user_id

    def stored_id(self, event_id: str) -> str:
        return event_id


AS_STORED = AsStored()


def under_names(event: MemoryEvent, names: Names) -> MemoryEvent:
    """The event with its event id and user id as `names` stores them (its memory id is the user's own)."""
    return replace(event, event_id=names.stored_id(event.event_id), user_id=names.stored_user(event.user_id))


def check_changes(changes: Any) -> None:
    """What an update must be: at least one memory field, and no envelope field."""
    if not isinstance(changes, dict) or not changes:
        raise WriteRefused(INVALID, "an update must change at least one field", "body")
    for name in ENVELOPE_FIELDS:
        if name in changes:
            raise WriteRefused(INVALID, f"{name} cannot be updated", name)


@dataclass(frozen=True)
class NewMemory:
    """A memory to add (`memory.created`), under stored names; without `occurred_at` it is stamped now,
    and a retry of a stored one (same id and content) is its duplicate, answered with the stored time."""

    event_id: str
    user_id: str
    memory_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    occurred_at: Any = None


@dataclass(frozen=True)
class Outcome:
    """What became of one event of a batch: `created`, `duplicate` (its id was stored before: a retry),
    `invalid` (never built: `reason` is the validation message), `rejected` or `conflict` (the store's
    reason)."""

    status: str
    event: MemoryEvent | None = None
    reason: str = ""


class MemoryWriter:
    """The door over one event store. `on_written(result)` hears of every append of memories or events
    (the context resource reads them on its next call, the service counts them); feedback and access
    records, which change no memory's text, are not announced."""

    def __init__(self, store: EventStore, on_written: Callable[[AppendResult], None] | None = None):
        self.store = store
        self.on_written = on_written
        self._accesses: AccessLog | None = None
        self._lock = threading.Lock()

    # Batches ----------------------------------------------------------------------------------

    def add_memories(self, memories: Sequence[NewMemory]) -> list[Outcome]:
        """Add memories, one outcome each: invalid ones store nothing, the valid rest is stored in one
        transaction. A memory without `occurred_at` is stamped now, and the store, under its append
        lock, takes it for a duplicate of a stored event of its id and content whatever that one's
        time: so concurrent retries are duplicates, answered with the stored event."""
        outcomes: list[Outcome | None] = [None] * len(memories)
        batch: list[tuple[int, MemoryEvent]] = []
        stamped: list[bool] = []
        for i, memory in enumerate(memories):
            envelope = next((name for name in ENVELOPE_FIELDS if name in memory.fields), None)
            if envelope is not None:
                outcomes[i] = Outcome(INVALID, reason=f"{envelope} is not a memory field")
                continue
            record = {"event_id": memory.event_id, "type": MEMORY_CREATED, "user_id": memory.user_id,
                      "memory_id": memory.memory_id, "occurred_at": memory.occurred_at or utc_now(), "payload": memory.fields}
            try:
                batch.append((i, self.read_event(record)))
                stamped.append(memory.occurred_at is None)
            except EventError as exc:
                outcomes[i] = Outcome(INVALID, reason=str(exc))
        return self._store_batch(batch, outcomes, stamped)

    def read_event(self, record: Any) -> MemoryEvent:
        """One raw event, validated as `hms ingest` validates a line (`EventError` says what is wrong)."""
        return parse_event(record, max_content_bytes=self.store.max_content_bytes)

    def append_events(self, events: Sequence[MemoryEvent]) -> list[Outcome]:
        """Append events read with `read_event` in one transaction, one outcome each; their client gave
        each its time, so a stored event of the same id at another time is a conflict."""
        return self._store_batch(list(enumerate(events)), [None] * len(events))

    def _store_batch(self, batch: list[tuple[int, MemoryEvent]], outcomes: list[Outcome | None], stamped: list[bool] | None = None) -> list[Outcome]:
        """The batch appended, and each event's outcome as the store decided it under its lock: a
        duplicate is answered with the stored event's time."""
        result = self._append([event for _, event in batch], stamped) if batch else AppendResult()
        refused = {index: (REJECTED, reason) for index, reason in result.rejected}
        refused.update({index: (CONFLICT, reason) for index, reason in result.conflicts})
        duplicated = dict(result.duplicated)
        for position, (i, event) in enumerate(batch):
            if position in refused:
                status, reason = refused[position]
                outcomes[i] = Outcome(status, event, reason)
            elif position in duplicated:
                outcomes[i] = Outcome("duplicate", replace(event, occurred_at=duplicated[position]))
            else:
                outcomes[i] = Outcome("created", event)
        return [outcome for outcome in outcomes if outcome is not None]

    def _append(self, events: list[MemoryEvent], stamped: list[bool] | None = None) -> AppendResult:
        result = append_salvaging(self.store, events, stamped)
        if self.on_written is not None:
            self.on_written(result)
        return result

    def ingest_file(self, path: str | Path, **options: Any) -> IngestReport:
        """A JSONL file (`-`: standard input) as `hms ingest` stores it: see `store.ingest.ingest_path`."""
        report = ingest_path(self.store, path, **options)
        if self.on_written is not None and report.last_sequence is not None:
            self.on_written(AppendResult(accepted=report.accepted, duplicates=report.duplicates, last_sequence=report.last_sequence))
        return report

    # One memory -------------------------------------------------------------------------------

    def update(self, user_id: str, memory_id: str, changes: dict[str, Any], *, names: Names = AS_STORED) -> MemoryEvent:
        check_changes(changes)
        return self._change(user_id, memory_id, MEMORY_UPDATED, changes, names.stored_id(new_event_id("updated")))

    def forget(self, user_id: str, memory_id: str, reason: str | None = None, *, names: Names = AS_STORED, stem: str = "forgotten") -> MemoryEvent:
        """Forget the memory totally before answering: its append erases it from every stored event and
        every derived table, then its files are purged (`privacy.forget.forget_at_acknowledgement`)."""
        from hms_resources.privacy.forget import forget_at_acknowledgement

        event = self._change(user_id, memory_id, MEMORY_FORGOTTEN, {"reason": reason} if reason else {}, names.stored_id(new_event_id(stem)))
        forget_at_acknowledgement(self.store, {(event.user_id, event.memory_id)})
        return event

    def forget_all(self, user_id: str, reason: str | None = None, *, names: Names = AS_STORED) -> int:
        """Forget every memory of the stored user, as totally as `forget`: one `memory.forgotten` per
        memory not yet forgotten, appended in transactions of FORGET_CHUNK memories (so the write lock is
        never held long enough to stall other tenants), then the files purged, before answering. A retry
        after a failure forgets the rest. Returns how many this call forgot."""
        from hms_resources.privacy.forget import forget_at_acknowledgement

        memory_ids = self.store.user_memory_ids(user_id)
        at, payload = utc_now(), ({"reason": reason} if reason else {})
        try:
            events = [
                self.read_event({"event_id": names.stored_id(new_event_id("forgotten")), "type": MEMORY_FORGOTTEN, "user_id": user_id,
                                 "memory_id": memory_id, "occurred_at": at, "payload": payload})
                for memory_id in memory_ids
            ]
        except EventError as exc:
            raise WriteRefused(INVALID, str(exc).replace("payload.", "", 1), "reason") from None
        forgotten = set()
        for start in range(0, len(events), FORGET_CHUNK):
            outcomes = self.append_events(events[start : start + FORGET_CHUNK])
            forgotten |= {outcome.event.key for outcome in outcomes if outcome.status == "created"}
        if forgotten:
            forget_at_acknowledgement(self.store, forgotten)
        return len(forgotten)

    def archive(self, user_id: str, memory_id: str, reason: str | None = None, *, names: Names = AS_STORED) -> MemoryEvent:
        return self._change(user_id, memory_id, MEMORY_ARCHIVED, {"reason": reason} if reason else {}, names.stored_id(new_event_id("archived")))

    def _change(self, user_id: str, memory_id: str, event_type: str, payload: dict[str, Any], event_id: str) -> MemoryEvent:
        """One event on an existing memory that is not forgotten; `user_id` is the stored id."""
        status = self.store.memory_statuses([(user_id, memory_id)]).get((user_id, memory_id))
        if status is None:
            raise WriteRefused(MISSING, f"no memory {memory_id!r} of user {user_id!r}", "memory_id")
        if status == "forgotten":
            raise WriteRefused(FORGOTTEN, f"memory {memory_id!r} was forgotten", "memory_id")
        record = {"event_id": event_id, "type": event_type, "user_id": user_id, "memory_id": memory_id, "occurred_at": utc_now(), "payload": payload}
        try:
            event = self.read_event(record)
        except EventError as exc:
            raise WriteRefused(INVALID, str(exc).replace("payload.", "", 1), field_of(str(exc))) from None
        result = self._append([event])
        if result.rejected:
            raise WriteRefused(CONFLICT, result.rejected[0][1], "memory_id")
        return event

    # Records of reads -------------------------------------------------------------------------

    def feedback(self, user_id: str, memory_id: str, was_relevant: Any, relevance_score: Any = None) -> MemoryEvent:
        """Whether a returned memory helped, stored now. `missing`: no live memory of that id (memory
        ids are unique per user, so `user_id` is required)."""
        if not isinstance(was_relevant, bool):
            raise WriteRefused(INVALID, "was_relevant must be true or false", "was_relevant")
        if relevance_score is not None and (
            isinstance(relevance_score, bool) or not isinstance(relevance_score, (int, float)) or not 0 <= relevance_score <= 1
        ):
            raise WriteRefused(INVALID, "relevance_score must be a number from 0 to 1", "relevance_score")
        payload: dict[str, Any] = {"access_method": "feedback", "was_relevant": was_relevant}
        if relevance_score is not None:
            payload["relevance_score"] = relevance_score
        record = {"event_id": new_event_id("feedback"), "type": MEMORY_ACCESSED, "user_id": user_id, "memory_id": memory_id,
                  "occurred_at": utc_now(), "payload": payload}
        try:
            event = self.read_event(record)
        except EventError as exc:
            raise WriteRefused(MISSING, f"feedback on {user_id}/{memory_id}: {exc}", "memory_id") from None
        result = self.store.append([event])
        if result.rejected:
            raise WriteRefused(MISSING, f"feedback on {user_id}/{memory_id}: {result.rejected[0][1]}", "memory_id")
        return event

    def record_accesses(self, user_id: str, memory_ids: list[str], query: str) -> None:
        """What a context returned, stored off the caller's path (`AccessLog`), with the query as the
        context resource read it."""
        if not memory_ids:
            return
        self._access_log().record(user_id, memory_ids, query_text(query))

    def _access_log(self) -> AccessLog:
        if self._accesses is None:
            with self._lock:
                if self._accesses is None:
                    self._accesses = AccessLog(self.store)
        return self._accesses

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the accesses recorded so far are stored (or dropped after a failure)."""
        if self._accesses is not None:
            self._accesses.flush(timeout)

    def close(self) -> None:
        with self._lock:
            accesses, self._accesses = self._accesses, None
        if accesses is not None:
            accesses.close()

    # Chat -------------------------------------------------------------------------------------

    def check_exchange(self, exchange: Exchange, *, names: Names = AS_STORED) -> None:
        """Refuse (`conflict`, field `call_id`) a call whose id is stored already with another user
        turn: a reused request id, caught before the model spends time on a reply that could not be
        stored. A retry of the same turn passes."""
        events = []
        for record in exchange_records(replace(exchange, reply="", memory_ids=[])):
            try:
                events.append(under_names(self.read_event(record), names))
            except EventError:
                continue
        differences = self.store.stored_differences(events, stamped=[True] * len(events)) if events else []
        if differences:
            raise WriteRefused(CONFLICT, f"a call with this id is stored already with a different user turn ({differences[0][1]})", "call_id")

    def capture_exchange(self, exchange: Exchange, *, names: Names = AS_STORED) -> Captured:
        """Store one model call's turns and accesses (`memory/exchange.py`) in one transaction, stamped
        now (a retry's turns are duplicates of the stored ones). An event that cannot be built (a turn
        past the content limit) is left out, the rest stored; `Captured.not_stored` says which turn
        is not in the store, and why."""
        events, not_stored = [], []
        for record in exchange_records(exchange):
            try:
                events.append(under_names(self.read_event(record), names))
            except EventError as exc:
                if record["type"] == MEMORY_CREATED:
                    not_stored.append(f"{_turn(record['payload'])}: {str(exc).replace('payload.', '', 1)}")
        result = self._append(events, [True] * len(events)) if events else AppendResult()
        for index, _ in result.conflicts:
            if events[index].type == MEMORY_CREATED:
                not_stored.append(f"{_turn(events[index].payload)}: a call with this id is stored already with a different one")
        for index, reason in result.rejected:
            if events[index].type == MEMORY_CREATED:
                not_stored.append(f"{_turn(events[index].payload)}: {reason}")
        return Captured(result, not_stored)


@dataclass(frozen=True)
class Captured:
    """What a model call's capture stored: `not_stored` says, turn by turn, why a turn is not in the
    store (empty: every turn is, stored now or by an earlier try of the same call)."""

    result: AppendResult
    not_stored: list[str] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return not self.not_stored


def _turn(payload: dict[str, Any]) -> str:
    return "the reply" if payload.get("created_by") == "assistant" else "the user's turn"


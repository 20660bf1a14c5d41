"""What the HTTP API and the MCP server do, as plain Python over the event store and the context
resource: every call takes the caller's `Principal`, checks its scope, and speaks the tenant's own user
names. A write returns only after its events are committed; the memories it adds are found by the
next `context` call through the resource's fresh-events path."""

from __future__ import annotations

import base64
import gc
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from hms_resources.common.home import redact_url
from hms_resources.context.access_log import utc_now
from hms_resources.context.assembler import Context, ContextAssembler, ContextItem, UserNotServed
from hms_resources.serving.errors import ApiError, bad_request, not_found, unavailable
from hms_resources.serving.keys import KeyRing
from hms_resources.serving.tenants import Principal
from hms_resources.store.event_store import AppendResult, EventStore, StoreError
from hms_resources.store.events import (
    ENVELOPE_FIELDS,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    MEMORY_UPDATED,
    EventError,
    MemoryEvent,
    parse_event,
)
from hms_resources.store.ingest import append_salvaging
from hms_resources.store.memory_state import Memory, replay_events
from hms_resources.tiers.assignment import current_tiers

MAX_BATCH = 1_000
MAX_PAGE = 500
MAX_SEARCH = 100
MAX_CONTEXT_TOKENS = 32_768
STATUSES = ("live", "archived", "forgotten", "any")
_FIELD = re.compile(r"^(?:payload\.)?([A-Za-z_][A-Za-z0-9_]*)")
_STORE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, StoreError)

T = TypeVar("T")


def field_of(message: str, payload_prefix: bool = False) -> str | None:
    """The field an `EventError` message names first (`payload.content is required` -> `content`)."""
    match = _FIELD.match(message)
    if match is None:
        return None
    return match.group(0) if payload_prefix else match.group(1)


def memory_json(memory: Memory, principal: Principal, tier: str | None = None) -> dict[str, Any]:
    found = {name: getattr(memory, name) for name in Memory.__slots__ if name not in ("user_id", "last_sequence", "event_count")}
    found["user_id"] = principal.own_name(memory.user_id)
    found["status"] = memory.status
    found["tier"] = tier
    return found


def item_json(item: ContextItem) -> dict[str, Any]:
    return asdict(item)


def _cursor(memory_id: str) -> str:
    return base64.urlsafe_b64encode(memory_id.encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise bad_request("cursor is not one this service returned", "cursor") from None


def _positive(value: Any, name: str, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise bad_request(f"{name} must be an integer from 1 to {most}", name)
    return value


def settle_heap() -> None:
    """Collect once, then move every object alive now (the context indexes: hundreds of thousands of
    them) out of the collector's sight, so that full collections stop pausing requests for
    hundreds of milliseconds. Run again after each reload, which replaces the indexes."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class MemoryService:
    """One per process: the event store, the context resource and the key ring it authenticates with."""

    def __init__(self, store: EventStore, assembler: ContextAssembler, *, on_append: Callable[[int], None] | None = None):
        self.store = store
        self.assembler = assembler
        self.keys = KeyRing(store)
        self.on_append = on_append

    def authenticate(self, authorization: str | None) -> Principal:
        return self.guard(lambda: self.keys.principal(authorization))

    def guard(self, call: Callable[[], T]) -> T:
        """Run `call`, turning an unreachable store into a 503 that says so (its URL masked), and a user
        of another shard into a 421 that names the shard to ask."""
        try:
            return call()
        except UserNotServed as exc:
            raise ApiError(421, "wrong_shard", str(exc), "user_id") from None
        except _STORE_DOWN as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise unavailable(f"the event store is unreachable: {redact_url(reason[0] if reason else type(exc).__name__)[:300]}") from None

    # Writing ----------------------------------------------------------------------------------

    def _append(self, batch: list[MemoryEvent]) -> AppendResult:
        result = self.guard(lambda: append_salvaging(self.store, batch))
        self.assembler.note_written(result.last_sequence)
        if self.on_append is not None and result.accepted:
            self.on_append(result.accepted)
        return result

    def _client_event_id(self, principal: Principal, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise bad_request(f"{field} must be a non-empty string", field)
        if len(principal.stored_id(value)) > 255:
            raise bad_request(f"{field} is at most {255 - len(principal.prefix)} characters for this tenant", field)
        return value

    @staticmethod
    def _checked_batch(items: Any, name: str) -> list[dict[str, Any]]:
        if not isinstance(items, list) or not items:
            raise bad_request(f"{name} must be a non-empty list", name)
        if len(items) > MAX_BATCH:
            raise bad_request(f"at most {MAX_BATCH} {name} per request", name)
        return [{} for _ in items]

    def _store_batch(self, principal: Principal, batch: list[tuple[int, MemoryEvent]], stored: set[str], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the valid events in one transaction and answer each: `created`, `duplicate` (its id
        was stored before `stored` was read: a retry) or `rejected` (conflict or invalid)."""
        result = self._append([event for _, event in batch]) if batch else AppendResult()
        refused = {index: ("invalid", reason) for index, reason in result.rejected}
        refused.update({index: ("conflict", reason) for index, reason in result.conflicts})
        for position, (i, event) in enumerate(batch):
            found: dict[str, Any] = {"index": i, "event_id": principal.own_name(event.event_id), "memory_id": event.memory_id}
            if position in refused:
                code, reason = refused[position]
                for stored_name in (event.event_id, event.user_id):
                    reason = reason.replace(repr(stored_name), repr(principal.own_name(stored_name)))
                found.update(status="rejected", error={"code": code, "message": reason, "field": None})
            else:
                found.update(status="duplicate" if event.event_id in stored else "created", user_id=principal.own_name(event.user_id))
            results[i] = found
        return results

    @staticmethod
    def _rejected(i: int, error: ApiError) -> dict[str, Any]:
        return {"index": i, "status": "rejected", "error": error.body()["error"]}

    def add_memories(self, principal: Principal, items: list[Any], *, idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """Add memories (`memory.created`), one result per item. Invalid items store nothing; the
        valid rest is stored in one transaction. A retry without `occurred_at` reuses the stored time,
        so it is a duplicate, not a conflict."""
        principal.require("write")
        results = self._checked_batch(items, "memories")
        pending: list[tuple[int, dict[str, Any], bool]] = []
        for i, item in enumerate(items):
            try:
                record, timed = self._created_record(principal, item, i, idempotency_key, len(items) > 1)
                pending.append((i, record, timed))
            except ApiError as error:
                results[i] = self._rejected(i, error)
        stored = self.guard(lambda: self.store.stored_times([r["event_id"] for _, r, _ in pending]))
        batch: list[tuple[int, MemoryEvent]] = []
        for i, record, timed in pending:
            if not timed and record["event_id"] in stored:
                record["occurred_at"] = stored[record["event_id"]]
            try:
                batch.append((i, parse_event(record, max_content_bytes=self.store.max_content_bytes)))
            except EventError as exc:
                message = str(exc).replace("payload.", "", 1) if str(exc).startswith("payload.") else str(exc)
                results[i] = self._rejected(i, bad_request(message, field_of(str(exc))))
        return self._store_batch(principal, batch, set(stored), results)

    def _created_record(self, principal: Principal, item: Any, i: int, idempotency_key: str | None, batched: bool) -> tuple[dict[str, Any], bool]:
        if not isinstance(item, dict):
            raise bad_request(f"memory {i} must be an object", "memories")
        fields = dict(item)
        user = principal.stored_user(fields.pop("user_id", None))
        event_id = fields.pop("event_id", None)
        if event_id is None and idempotency_key:
            event_id = f"{idempotency_key}:{i}" if batched else idempotency_key
        event_id = self._client_event_id(principal, event_id or f"mem-{uuid.uuid4().hex}", "event_id")
        memory_id = fields.pop("memory_id", None) or event_id
        occurred_at = fields.pop("occurred_at", None)
        for name in ENVELOPE_FIELDS:
            if name in fields:
                raise bad_request(f"{name} is not a memory field", name)
        record = {
            "event_id": principal.stored_id(event_id),
            "type": MEMORY_CREATED,
            "user_id": user,
            "memory_id": memory_id,
            "occurred_at": occurred_at or utc_now(),
            "payload": fields,
        }
        return record, occurred_at is not None

    def append_events(self, principal: Principal, records: list[Any]) -> list[dict[str, Any]]:
        """Raw events, validated as `hms ingest` validates a line; one result per item."""
        principal.require("write")
        results = self._checked_batch(records, "events")
        batch: list[tuple[int, MemoryEvent]] = []
        for i, record in enumerate(records):
            try:
                event = parse_event(record, max_content_bytes=self.store.max_content_bytes)
                stored_id = principal.stored_id(self._client_event_id(principal, event.event_id, "event_id"))
                user = principal.stored_user(event.user_id)
                batch.append((i, MemoryEvent(stored_id, event.type, user, event.memory_id, event.occurred_at, event.payload)))
            except EventError as exc:
                results[i] = self._rejected(i, bad_request(str(exc), field_of(str(exc), True)))
            except ApiError as error:
                results[i] = self._rejected(i, error)
        stored = self.guard(lambda: self.store.stored_times([e.event_id for _, e in batch]))
        return self._store_batch(principal, batch, set(stored), results)

    def _change(self, principal: Principal, user_id: str, memory_id: str, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        principal.require("write")
        user = principal.stored_user(user_id)
        memory_id = self._memory_id(memory_id)
        status = self.guard(lambda: self.store.memory_statuses([(user, memory_id)])).get((user, memory_id))
        if status is None:
            raise not_found(f"no memory {memory_id!r} of user {user_id!r}", "memory_id")
        if status == "forgotten":
            raise ApiError(410, "forgotten", f"memory {memory_id!r} was forgotten", "memory_id")
        record = {
            "event_id": principal.stored_id(f"{event_type.split('.')[1]}-{uuid.uuid4().hex}"),
            "type": event_type,
            "user_id": user,
            "memory_id": memory_id,
            "occurred_at": utc_now(),
            "payload": payload,
        }
        try:
            event = parse_event(record, max_content_bytes=self.store.max_content_bytes)
        except EventError as exc:
            message = str(exc).replace("payload.", "", 1)
            raise bad_request(message, field_of(str(exc))) from None
        result = self._append([event])
        if result.rejected:
            raise ApiError(409, "conflict", result.rejected[0][1], "memory_id")
        return {"memory_id": memory_id, "event_id": principal.own_name(event.event_id), "type": event_type}

    def update_memory(self, principal: Principal, user_id: str, memory_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(changes, dict) or not changes:
            raise bad_request("an update must change at least one field", "body")
        for name in ENVELOPE_FIELDS:
            if name in changes:
                raise bad_request(f"{name} cannot be updated", name)
        return self._change(principal, user_id, memory_id, MEMORY_UPDATED, changes)

    def forget_memory(self, principal: Principal, user_id: str, memory_id: str, reason: str | None = None) -> dict[str, Any]:
        """Erase the memory's content from every stored event, as `memory.forgotten` does."""
        return self._change(principal, user_id, memory_id, MEMORY_FORGOTTEN, {"reason": reason} if reason else {})

    def archive_memory(self, principal: Principal, user_id: str, memory_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._change(principal, user_id, memory_id, MEMORY_ARCHIVED, {"reason": reason} if reason else {})

    def feedback(self, principal: Principal, user_id: str, memory_id: str, was_relevant: Any, relevance_score: Any = None) -> dict[str, Any]:
        principal.require("write")
        user = principal.stored_user(user_id)
        memory_id = self._memory_id(memory_id)
        if not isinstance(was_relevant, bool):
            raise bad_request("was_relevant must be true or false", "was_relevant")
        if relevance_score is not None and (isinstance(relevance_score, bool) or not isinstance(relevance_score, (int, float)) or not 0 <= relevance_score <= 1):
            raise bad_request("relevance_score must be a number from 0 to 1", "relevance_score")
        try:
            self.guard(lambda: self.assembler.feedback(memory_id, was_relevant, relevance_score, user_id=user))
        except ValueError:
            raise not_found(f"no live memory {memory_id!r} of user {user_id!r}", "memory_id") from None
        return {"memory_id": memory_id, "recorded": True}

    # Reading ----------------------------------------------------------------------------------

    @staticmethod
    def _memory_id(memory_id: Any) -> str:
        if not isinstance(memory_id, str) or not memory_id or len(memory_id) > 255:
            raise bad_request("memory_id must be a string of 1 to 255 characters", "memory_id")
        return memory_id

    def get_memory(self, principal: Principal, user_id: str, memory_id: str) -> dict[str, Any]:
        """The memory's current state, folded from its own events (so a write just made is there)."""
        principal.require("read")
        user = principal.stored_user(user_id)
        memory_id = self._memory_id(memory_id)
        events = self.guard(lambda: self.store.memory_events(user, memory_id))
        memory = replay_events(events).get((user, memory_id))
        if memory is None:
            raise not_found(f"no memory {memory_id!r} of user {user_id!r}", "memory_id")
        tier = self.guard(lambda: current_tiers(self.store, user)).get((user, memory_id))
        return memory_json(memory, principal, tier)

    def memory_history(self, principal: Principal, user_id: str, memory_id: str) -> list[dict[str, Any]]:
        """The memory's events in the order they are replayed (a forgotten memory's, with the content erased)."""
        principal.require("read")
        user = principal.stored_user(user_id)
        memory_id = self._memory_id(memory_id)
        events = self.guard(lambda: self.store.memory_events(user, memory_id))
        if not events:
            raise not_found(f"no memory {memory_id!r} of user {user_id!r}", "memory_id")
        return [
            {
                "sequence": e.sequence,
                "event_id": principal.own_name(e.event_id),
                "type": e.type,
                "occurred_at": e.occurred_at,
                "payload": e.payload,
            }
            for e in events
        ]

    def list_memories(
        self,
        principal: Principal,
        user_id: str,
        *,
        memory_type: str | None = None,
        category: str | None = None,
        tag: str | None = None,
        tier: str | None = None,
        status: str = "live",
        created_after: str | None = None,
        created_before: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """A page of the user's memories in `memory_id` order, as of the end of the log, filtered;
        `next_cursor` continues it (null on the last page). An unknown user has none."""
        principal.require("read")
        user = principal.stored_user(user_id)
        limit = _positive(limit, "limit", MAX_PAGE)
        if status not in STATUSES:
            raise bad_request(f"status must be one of {', '.join(STATUSES)}", "status")
        bounds = {}
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None:
                try:
                    bounds[name] = parse_event(
                        {"event_id": "x", "type": MEMORY_CREATED, "user_id": "x", "occurred_at": value, "payload": {"content": "x"}}
                    ).occurred_at
                except EventError as exc:
                    raise bad_request(str(exc).replace("occurred_at", name), name) from None
        after = _after(cursor)
        memories = self.guard(lambda: self.store.current_memories(user))
        tiers = self.guard(lambda: current_tiers(self.store, user)) if memories else {}
        page: list[dict[str, Any]] = []
        more = False
        for memory in memories:
            if after is not None and memory.memory_id <= after:
                continue
            if status != "any" and memory.status != status:
                continue
            if memory_type is not None and memory.memory_type != memory_type:
                continue
            if category is not None and memory.category != category:
                continue
            if tag is not None and tag not in memory.tags:
                continue
            memory_tier = tiers.get(memory.key)
            if tier is not None and memory_tier != tier:
                continue
            created = memory.created_at or ""
            if "created_after" in bounds and not created > bounds["created_after"]:
                continue
            if "created_before" in bounds and not created < bounds["created_before"]:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(memory_json(memory, principal, memory_tier))
        return {"memories": page, "next_cursor": _cursor(page[-1]["memory_id"]) if more and page else None}

    def search(self, principal: Principal, user_id: str, query: Any, limit: int = 10, now: str | None = None) -> list[dict[str, Any]]:
        principal.require("read")
        user = principal.stored_user(user_id)
        if not isinstance(query, str):
            raise bad_request("query must be a string", "query")
        limit = _positive(limit, "limit", MAX_SEARCH)
        items = self.guard(lambda: self._with_time(lambda at: self.assembler.search(user, query, limit, now=at), now))
        return [{k: v for k, v in item_json(i).items() if k not in ("source_ids",)} for i in items]

    def context(
        self,
        principal: Principal,
        user_id: str,
        query: Any,
        max_tokens: int = 1024,
        *,
        deep: bool = False,
        now: str | None = None,
        record_access: bool | None = None,
    ) -> dict[str, Any]:
        """The assembled context as JSON and as prompt text, with its timings and the chosen adapter."""
        principal.require("read")
        user = principal.stored_user(user_id)
        if not isinstance(query, str):
            raise bad_request("query must be a string", "query")
        max_tokens = _positive(max_tokens, "max_tokens", MAX_CONTEXT_TOKENS)
        if not isinstance(deep, bool):
            raise bad_request("deep must be true or false", "deep")
        context: Context = self.guard(lambda: self._with_time(lambda at: self.assembler.assemble(user, query, max_tokens, now=at, deep=deep, record_access=record_access), now))
        adapter = asdict(context.adapter) if context.adapter is not None else None
        return {
            "user_id": principal.own_name(context.user_id),
            "query": context.query,
            "token_budget": context.token_budget,
            "items": [item_json(i) for i in context.items],
            "prompt": context.to_prompt(),
            "token_count": context.token_count,
            "timings_ms": {k: round(v, 3) for k, v in context.timings_ms.items()},
            "adapter": adapter,
        }

    @staticmethod
    def _with_time(call: Callable[[Any], T], now: Any) -> T:
        if now is not None and not isinstance(now, (str, datetime)):
            raise bad_request("now must be an ISO 8601 timestamp with a time zone", "now")
        try:
            return call(now)
        except EventError as exc:
            raise bad_request(str(exc), "now") from None

    # Health -----------------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """Whether the store answers and the indexes are loaded, with their age and how far the log
        has moved past them; raises 503 when the store is unreachable."""
        last = self.guard(self.store.max_sequence)
        snapshot = self.assembler.loaded_snapshot
        if snapshot is None:
            return {"ready": False, "store": "reachable", "indexes": "loading", "last_sequence": last}
        return {
            "ready": True,
            "store": "reachable",
            "indexes": "loaded",
            "index_age_seconds": round(time.time() - snapshot.loaded_at, 3),
            "indexed_sequence": snapshot.cursor,
            "events_since_index": max(0, last - snapshot.cursor),
            "last_sequence": last,
        }

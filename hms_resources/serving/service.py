"""What the HTTP API and the MCP server do, as plain Python over the door for writes
(`memory/writes.py`) and the context resource: every call takes the caller's `Principal`, checks its
scope, and speaks the tenant's own user names. A write returns only after its events are committed;
the memories it adds are found by the next `context` call through the resource's fresh-events path."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from hms_resources.common.environment import setting
from hms_resources.common.home import redact_url
from hms_resources.common.limits import CONTROL_CHARACTER, MAX_ID_LENGTH
from hms_resources.common.text import is_unicode_text
from hms_resources.context.assembler import Context, ContextAssembler, UserNotServed
from hms_resources.memory.writes import (
    CONFLICT,
    FORGOTTEN,
    INVALID,
    MISSING,
    REJECTED,
    MemoryWriter,
    NewMemory,
    Outcome,
    WriteRefused,
    check_changes,
    field_of,
    new_event_id,
    under_names,
)
from hms_resources.serving.cursors import continue_after, page_cursor
from hms_resources.serving.errors import ApiError, bad_request, not_found, unavailable
from hms_resources.serving.history import history_json
from hms_resources.serving.keys import KeyRing
from hms_resources.serving.owners import owner_of
from hms_resources.serving.tenants import Principal
from hms_resources.serving.turns import session_of, turn_items
from hms_resources.store.event_store import AppendResult, EventStore, StoreError
from hms_resources.store.events import EventError, MemoryEvent, normalize_timestamp
from hms_resources.store.memory_state import Memory, replay_events
from hms_resources.tiers.assignment import current_tiers

MAX_BATCH = 1_000
MAX_PAGE = 500
MAX_SEARCH = 100
MAX_CONTEXT_TOKENS = 32_768
STATUSES = ("live", "archived", "forgotten", "any")
_STORE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, StoreError)

T = TypeVar("T")

# JSON shapes and request checks -----------------------------------------------------------------


def memory_json(memory: Memory, principal: Principal, tier: str | None = None) -> dict[str, Any]:
    found = {name: getattr(memory, name) for name in Memory.__slots__ if name not in ("user_id", "last_sequence", "event_count")}
    found["user_id"] = principal.own_user(memory.user_id)
    found["status"] = memory.status
    found["tier"] = tier
    return found


def written_json(i: int, outcome: Outcome, principal: Principal) -> dict[str, Any]:
    """One item's answer to a batch write, in the tenant's names (the store's reasons included)."""
    event = outcome.event
    found: dict[str, Any] = {"index": i, "event_id": principal.own_name(event.event_id), "memory_id": event.memory_id}
    if outcome.status in (REJECTED, CONFLICT):
        reason = outcome.reason
        for stored_name, own in ((event.event_id, principal.own_name(event.event_id)), (event.user_id, principal.own_user(event.user_id))):
            reason = reason.replace(repr(stored_name), repr(own))
        code = "invalid" if outcome.status == REJECTED else "conflict"
        field = "memory_id" if reason.startswith("memory ") else field_of(reason, True)
        found.update(status="rejected", error={"code": code, "message": reason, "field": field})
    else:
        found.update(status=outcome.status, user_id=principal.own_user(event.user_id))
    return found


def rejected_json(i: int, error: ApiError) -> dict[str, Any]:
    return {"index": i, "status": "rejected", "error": error.body()["error"]}




def positive_at_most(value: Any, name: str, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise bad_request(f"{name} must be an integer from 1 to {most}", name)
    return value


def checked_name(value: Any, field: str, most: int) -> str:
    """An id or name from a path or query (`memory_id`, `session_id`): 1 to `most` characters of
    text the store can hold, or a 422 naming `field`."""
    if not isinstance(value, str) or not value or len(value) > most:
        raise bad_request(f"{field} must be a string of 1 to {most} characters", field)
    if CONTROL_CHARACTER.search(value) or not is_unicode_text(value):
        raise bad_request(f"{field} must be text without control characters or lone surrogates", field)
    return value


def _memory_id(memory_id: Any) -> str:
    return checked_name(memory_id, "memory_id", MAX_ID_LENGTH)


def _checked_batch(items: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not items:
        raise bad_request(f"{name} must be a non-empty list", name)
    if len(items) > MAX_BATCH:
        raise bad_request(f"at most {MAX_BATCH} {name} per request", name)
    return [{} for _ in items]


def _client_event_id(principal: Principal, value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"{field} must be a non-empty string", field)
    if len(principal.stored_id(value)) > 255:
        raise bad_request(f"{field} is at most {255 - len(principal.prefix)} characters for this tenant", field)
    return value


def _idempotency_key(principal: Principal, key: str | None, items: int, batched: bool) -> str | None:
    """The `Idempotency-Key` header, checked as the event ids it becomes (`<key>:<i>` in a batch of
    several), and named as the header when it cannot be one."""
    if key is None:
        return None
    name = "Idempotency-Key"
    if not key or not key.isprintable():
        raise bad_request(f"{name} must be non-empty printable text", name)
    suffix = len(f":{items - 1}") if batched else 0
    most = MAX_ID_LENGTH - len(principal.prefix) - suffix
    if len(key) > most:
        raise bad_request(f"{name} is at most {most} characters for this tenant and batch", name)
    return key


def checked_query(query: Any) -> str:
    """A query is text of at most `HMS_MAX_QUERY_BYTES` bytes (8 KiB by default): retrieval work and
    the echoed context grow with it."""
    if not isinstance(query, str):
        raise bad_request("query must be a string", "query")
    most = setting("HMS_MAX_QUERY_BYTES")
    try:
        size = len(query.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad_request("query has a lone surrogate (\\ud800-\\udfff): it must be valid Unicode text", "query") from None
    if size > most:
        raise bad_request(f"query is {size} bytes, over the limit of {most} bytes (HMS_MAX_QUERY_BYTES)", "query")
    if "\x00" in query:
        raise bad_request("query must not contain NUL (\\u0000)", "query")
    return query


def _new_memory(principal: Principal, item: Any, i: int, idempotency_key: str | None, batched: bool) -> NewMemory:
    """A memory as the client sent it, under the tenant's stored names."""
    if not isinstance(item, dict):
        raise bad_request(f"memory {i} must be an object", "memories")
    fields = dict(item)
    user = principal.stored_user(fields.pop("user_id", None))
    event_id = fields.pop("event_id", None)
    if event_id is None and idempotency_key:
        event_id = f"{idempotency_key}:{i}" if batched else idempotency_key
    event_id = _client_event_id(principal, new_event_id("mem") if event_id is None else event_id, "event_id")
    memory_id = fields.pop("memory_id", None)
    occurred_at = fields.pop("occurred_at", None)
    if occurred_at is not None:
        try:
            normalize_timestamp(occurred_at)
        except EventError as exc:
            raise bad_request(f"{exc}; leave it out for now", "occurred_at") from None
    return NewMemory(principal.stored_id(event_id), user, event_id if memory_id is None else memory_id, fields, occurred_at)


def _refused(exc: WriteRefused, missing: str) -> ApiError:
    """A refused write as the API says it; `missing` is the message for a memory that is not there."""
    if exc.kind == MISSING:
        return not_found(missing, "memory_id")
    if exc.kind == FORGOTTEN:
        return ApiError(410, "forgotten", exc.message, exc.field)
    if exc.kind == CONFLICT:
        return ApiError(409, "conflict", exc.message, exc.field)
    return bad_request(exc.message, exc.field)


def settle_heap() -> None:
    """Collect once, then move every object alive now (the context indexes: hundreds of thousands of
    them) out of the collector's sight, so that full collections stop pausing requests for
    hundreds of milliseconds. Run again after each reload, which replaces the indexes."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class MemoryService:
    """One per process: the door for writes, the context resource and the key ring it authenticates with."""

    def __init__(
        self, store: EventStore, assembler: ContextAssembler, *, on_append: Callable[[int], None] | None = None, record_access: bool = True
    ):
        self.store = store
        self.assembler = assembler
        self.record_access = record_access
        """Whether what a context returned is recorded (`memory.accessed`), unless a call says."""
        self.keys = KeyRing(store)
        self.on_append = on_append
        self.writer = MemoryWriter(store, on_written=self._written)
        assembler.watch()

    def _written(self, result: AppendResult) -> None:
        """The next context call reads what was just stored, whatever its refresh interval."""
        self.assembler.note_written(result.last_sequence)
        if self.on_append is not None and result.accepted:
            self.on_append(result.accepted)

    def close(self) -> None:
        """Store the accesses still queued, then release the context resource."""
        self.writer.close()
        self.assembler.close()

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

    def _through_door(self, call: Callable[[], T], missing: str = "") -> T:
        try:
            return self.guard(call)
        except WriteRefused as exc:
            raise _refused(exc, missing) from None

    # Writing ----------------------------------------------------------------------------------

    def add_memories(self, principal: Principal, items: list[Any], *, idempotency_key: str | None = None, batched: bool | None = None) -> list[dict[str, Any]]:
        """Add memories (`memory.created`), one result per item. Invalid items store nothing; the
        valid rest is stored in one transaction. A retry without `occurred_at` reuses the stored time,
        so it is a duplicate, not a conflict. `batched` (default: more than one item) makes the
        `Idempotency-Key` `<key>:<i>` per item, so a list that grows on a retry keeps its first ids."""
        principal.require("write")
        results = _checked_batch(items, "memories")
        batched = len(items) > 1 if batched is None else batched
        idempotency_key = _idempotency_key(principal, idempotency_key, len(items), batched)
        drafts: list[tuple[int, NewMemory]] = []
        for i, item in enumerate(items):
            try:
                drafts.append((i, _new_memory(principal, item, i, idempotency_key, batched)))
            except ApiError as error:
                results[i] = rejected_json(i, error)
        outcomes = self.guard(lambda: self.writer.add_memories([draft for _, draft in drafts]))
        for (i, _), outcome in zip(drafts, outcomes):
            if outcome.status == INVALID:
                reason = outcome.reason
                message = reason.replace("payload.", "", 1) if reason.startswith("payload.") else reason
                results[i] = rejected_json(i, bad_request(message, field_of(reason)))
            else:
                results[i] = written_json(i, outcome, principal)
        return results

    def add_messages(
        self, principal: Principal, user_id: str, messages: list[tuple[str, str]], *, session_id: str | None = None, idempotency_key: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """A conversation's `(role, content)` turns, in order, as conversation turns of a session
        (`serving/turns.py`), added as one batch; returns a result per turn and the session."""
        principal.require("write")
        principal.stored_user(user_id)
        session = session_of(session_id, idempotency_key)
        items = turn_items(user_id, messages, session, self.store.max_content_bytes)
        return self.add_memories(principal, items, idempotency_key=idempotency_key or new_event_id("turns"), batched=True), session

    def append_events(self, principal: Principal, records: list[Any]) -> list[dict[str, Any]]:
        """Raw events, validated as `hms ingest` validates a line; one result per item."""
        principal.require("write")
        results = _checked_batch(records, "events")
        batch: list[tuple[int, MemoryEvent]] = []
        for i, record in enumerate(records):
            try:
                event = self.writer.read_event(record)
                _client_event_id(principal, event.event_id, "event_id")
                batch.append((i, under_names(event, principal)))
            except EventError as exc:
                results[i] = rejected_json(i, bad_request(str(exc), field_of(str(exc), True)))
            except ApiError as error:
                results[i] = rejected_json(i, error)
        outcomes = self.guard(lambda: self.writer.append_events([event for _, event in batch]))
        for (i, _), outcome in zip(batch, outcomes):
            results[i] = written_json(i, outcome, principal)
        return results

    def _change(self, principal: Principal, user_id: str, memory_id: str, write: Callable[[str, str], MemoryEvent]) -> dict[str, Any]:
        principal.require("write")
        user = principal.stored_user(user_id)
        memory_id = _memory_id(memory_id)
        event = self._through_door(lambda: write(user, memory_id), f"no memory {memory_id!r} of user {user_id!r}")
        return {"memory_id": memory_id, "event_id": principal.own_name(event.event_id), "type": event.type}

    def update_memory(self, principal: Principal, user_id: str, memory_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        self._through_door(lambda: check_changes(changes))
        return self._change(principal, user_id, memory_id, lambda user, mid: self.writer.update(user, mid, changes, names=principal))

    def forget_memory(self, principal: Principal, user_id: str, memory_id: str, reason: str | None = None) -> dict[str, Any]:
        """Forget the memory totally before answering (`MemoryWriter.forget`): the log, the derived tables
        and the files under the home hold nothing of it once this returns."""
        return self._change(principal, user_id, memory_id, lambda user, mid: self.writer.forget(user, mid, reason, names=principal))

    def forget_user(self, principal: Principal, user_id: str, reason: str | None = None) -> dict[str, Any]:
        """Forget every memory of the user, totally, before answering (`MemoryWriter.forget_all`)."""
        principal.require("write")
        user = principal.stored_user(user_id)
        if reason is not None and not isinstance(reason, str):
            raise bad_request("reason must be a string", "reason")
        return {"user_id": principal.own_user(user), "forgotten": self._through_door(lambda: self.writer.forget_all(user, reason, names=principal))}

    def archive_memory(self, principal: Principal, user_id: str, memory_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._change(principal, user_id, memory_id, lambda user, mid: self.writer.archive(user, mid, reason, names=principal))

    def feedback(self, principal: Principal, user_id: str, memory_id: str, was_relevant: Any, relevance_score: Any = None) -> dict[str, Any]:
        principal.require("write")
        user = principal.stored_user(user_id)
        memory_id = _memory_id(memory_id)
        self._through_door(
            lambda: self.writer.feedback(user, memory_id, was_relevant, relevance_score), f"no live memory {memory_id!r} of user {user_id!r}"
        )
        return {"memory_id": memory_id, "recorded": True}

    # Reading ----------------------------------------------------------------------------------

    def _whose(self, principal: Principal, user_id: str | None, memory_id: Any) -> tuple[str, str]:
        """The stored user and the checked memory id; without `user_id`, the memory's owner (`owners.py`)."""
        principal.require("read")
        user = principal.stored_user(user_id) if user_id is not None else None
        memory_id = _memory_id(memory_id)
        return (user if user is not None else self.guard(lambda: owner_of(self.store, principal, memory_id))), memory_id

    def get_memory(self, principal: Principal, user_id: str | None, memory_id: str) -> dict[str, Any]:
        """The memory's current state, folded from its own events (so a write just made is there)."""
        user, memory_id = self._whose(principal, user_id, memory_id)
        events = self.guard(lambda: self.store.memory_events(user, memory_id))
        memory = replay_events(events).get((user, memory_id))
        if memory is None:
            raise not_found(f"no memory {memory_id!r} of user {principal.own_user(user)!r}", "memory_id")
        tier = self.guard(lambda: current_tiers(self.store, user)).get((user, memory_id))
        return memory_json(memory, principal, tier)

    def memory_history(self, principal: Principal, user_id: str | None, memory_id: str) -> list[dict[str, Any]]:
        """The memory's events in the order they are replayed, each update with its fields' values before
        and after (`history.py`; a forgotten memory's, with the content erased)."""
        user, memory_id = self._whose(principal, user_id, memory_id)
        events = self.guard(lambda: self.store.memory_events(user, memory_id))
        if not events:
            raise not_found(f"no memory {memory_id!r} of user {principal.own_user(user)!r}", "memory_id")
        return history_json(events, principal)

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
        limit = positive_at_most(limit, "limit", MAX_PAGE)
        if status not in STATUSES:
            raise bad_request(f"status must be one of {', '.join(STATUSES)}", "status")
        bounds = {}
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None:
                try:
                    bounds[name] = normalize_timestamp(value, name)
                except EventError as exc:
                    raise bad_request(str(exc), name) from None
        after = continue_after(cursor)
        wanted = {"status": status, "memory_type": memory_type, "category": category, "tag": tag, "tier": tier, **bounds}

        def read_page() -> tuple[list[dict[str, Any]], str | None]:
            """The page and the id the next one continues after: the store reads a window of ids at a
            time, and stops a long scan of memories that fail the filters with a short page."""
            page: list[dict[str, Any]] = []
            last = None
            for window in self.store.memory_windows(user, after=after, limit=limit, **wanted):
                for memory in window.memories:
                    memory_tier = window.tiers.get(memory.memory_id)
                    if not passes_listing_filters(memory, memory_tier, after, status, memory_type, category, tag, tier, bounds):
                        continue
                    if len(page) == limit:
                        return page, page[-1]["memory_id"]
                    page.append(memory_json(memory, principal, memory_tier))
                last = window.last
            return page, last

        page, last = self.guard(read_page)
        return {"memories": page, "next_cursor": page_cursor(last) if last is not None else None}

    def search(self, principal: Principal, user_id: str, query: Any, limit: int = 10, now: str | None = None) -> list[dict[str, Any]]:
        principal.require("read")
        user = principal.stored_user(user_id)
        query = checked_query(query)
        limit = positive_at_most(limit, "limit", MAX_SEARCH)
        items = self.guard(lambda: self._with_time(lambda at: self.assembler.search(user, query, limit, now=at), now))
        return [{k: v for k, v in i.to_json().items() if k != "source_ids"} for i in items]

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
        """The assembled context as JSON and as prompt text, with its timings and the chosen adapter;
        what it returned is recorded through the door (`record_access`, by default the service's own
        setting)."""
        principal.require("read")
        user = principal.stored_user(user_id)
        query = checked_query(query)
        max_tokens = positive_at_most(max_tokens, "max_tokens", MAX_CONTEXT_TOKENS)
        if not isinstance(deep, bool):
            raise bad_request("deep must be true or false", "deep")
        def assemble(at: Any) -> Context:
            return self.assembler.assemble(user, query, max_tokens, now=at, deep=deep)

        context = self.guard(lambda: self._with_time(assemble, now))
        if self.record_access if record_access is None else record_access:
            self.writer.record_accesses(user, context.source_ids, query)
        return context.to_json(user_id=principal.own_user(context.user_id))

    @staticmethod
    def _with_time(call: Callable[[Any], T], now: Any) -> T:
        if now is not None and not isinstance(now, (str, datetime)):
            raise bad_request("now must be an ISO 8601 timestamp with a time zone", "now")
        try:
            if now is not None:
                normalize_timestamp(now, "now")
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


def passes_listing_filters(
    memory: Memory, memory_tier: str | None, after: str | None, status: str, memory_type: str | None, category: str | None,
    tag: str | None, tier: str | None, bounds: dict[str, str],
) -> bool:
    """Whether a memory passes `list_memories`' cursor and filters."""
    if after is not None and memory.memory_id <= after:
        return False
    if status != "any" and memory.status != status:
        return False
    if memory_type is not None and memory.memory_type != memory_type:
        return False
    if category is not None and memory.category != category:
        return False
    if tag is not None and tag not in memory.tags:
        return False
    if tier is not None and memory_tier != tier:
        return False
    created = memory.created_at or ""
    if "created_after" in bounds and not created > bounds["created_after"]:
        return False
    return not ("created_before" in bounds and not created < bounds["created_before"])

"""The append-only event store: append (idempotent, atomic batches), read in sequence order, replay.

One code path for the embedded SQLite file and for PostgreSQL (`HMS_DATABASE_URL`), with the
driver's fast paths on PostgreSQL (`postgres.py`: COPY in, a server-side cursor out). Appends are
serialised by the database (SQLite's `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so sequence
numbers are dense and commit in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
from pydantic import PrivateAttr
from sqlalchemy import Connection, Engine, Row, Select, and_, bindparam, distinct, func, select
from sqlalchemy.engine import make_url

from hms_resources.common.bulk import gc_paused
from hms_resources.common.home import default_database_url, hms_home, redact_error, redact_url
from hms_resources.store import erasure, postgres
from hms_resources.store.database import READ_ONLY, lock_appends, make_engine, upgrade
from hms_resources.store.events import (
    DEFAULT_MAX_CONTENT_BYTES,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    MEMORY_RELATED,
    MemoryEvent,
    erase_payload,
    normalize_timestamp,
)
from hms_resources.store.memory_state import Memory, MemoryKey, MemoryState, apply_events
from hms_resources.store.rows import by_user, chunks, driver_select, insert_many, memory_from_row, memory_to_row
from hms_resources.store.schema import concepts, events, memories, memory_keys, projection_cursors


class StoreError(RuntimeError):
    """The store cannot do what was asked (unreachable, wrong schema, ...)."""


@dataclass
class AppendResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    conflicts: list[tuple[int, str]] = field(default_factory=list)
    """Events whose id is stored already with other content: never stored twice, reported apart."""
    last_sequence: int | None = None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventStore(dg.ConfigurableResource):
    """The source of truth for every memory: an append-only log of memory events."""

    database_url: str = ""
    hms_home: str = ""
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES

    _engine: Engine | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "EventStore":
        from hms_resources.common.environment import from_environment

        return from_environment(cls)

    @property
    def url(self) -> str:
        if self.database_url:
            return self.database_url
        home = hms_home(self.hms_home or None)
        home.mkdir(parents=True, exist_ok=True)
        return default_database_url(home)

    @property
    def home(self) -> Path:
        """The HMS home, where file-based assets (the embedding index) live beside the embedded store."""
        return hms_home(self.hms_home or None)

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "database_url" and isinstance(value, str) else value)

    @property
    def is_postgres(self) -> bool:
        return make_url(self.url).get_backend_name() == "postgresql"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = make_engine(self.url)
            try:
                upgrade(engine)
            except Exception as exc:
                engine.dispose()
                raise StoreError(f"cannot open the event store at {self.display_url}: {redact_url(str(exc))}") from redact_error(exc)
            self._engine = engine
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction holding the store's append lock."""
        with self.engine.begin() as conn:
            lock_appends(conn)
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn

    # Appending ------------------------------------------------------------------------------

    def append(self, batch: Sequence[MemoryEvent], *, strict: bool = False) -> AppendResult:
        """Store a batch in one transaction.

        Already-stored event ids are skipped: counted as duplicates when the content is the same, as
        conflicts (with a reason) when it differs. Events whose memory does not exist (or was
        forgotten) are rejected with a reason; with `strict`, any rejection stores nothing and raises.
        """
        result = AppendResult()
        if not batch:
            return result
        with self.writing() as conn:
            known_ids = self._stored_events(conn, [e.event_id for e in batch])
            statuses = self._memory_statuses(conn, batch)
            next_sequence = (conn.execute(select(func.max(events.c.sequence))).scalar() or 0) + 1
            recorded_at = _now()
            rows: list[tuple[Any, ...]] = []
            dumps = orjson.dumps
            new_keys: list[tuple[str, str, str, int]] = []
            status_changes: dict[MemoryKey, str] = {}
            forgotten: list[MemoryKey] = []
            for index, ev in enumerate(batch):
                if ev.event_id in known_ids:
                    difference = _difference(known_ids[ev.event_id], ev)
                    if difference:
                        result.conflicts.append((index, f"event_id {ev.event_id!r} is stored already with a different {difference}; the stored event is kept"))
                    else:
                        result.duplicates += 1
                    continue
                key = (ev.user_id, ev.memory_id)
                problem = _reference_problem(ev, key, statuses)
                if problem:
                    result.rejected.append((index, problem))
                    continue
                known_ids[ev.event_id] = _StoredEvent(ev.type, ev.user_id, ev.memory_id, ev.occurred_at, ev.payload, False)
                sequence = next_sequence + len(rows)
                if ev.type == MEMORY_CREATED:
                    statuses[key] = "live"
                    new_keys.append((ev.user_id, ev.memory_id, "live", sequence))
                elif ev.type == MEMORY_ARCHIVED:
                    statuses[key] = status_changes[key] = "archived"
                elif ev.type == MEMORY_FORGOTTEN:
                    statuses[key] = status_changes[key] = "forgotten"
                    forgotten.append(key)
                rows.append(
                    (sequence, ev.event_id, ev.type, ev.user_id, ev.memory_id, ev.occurred_at, recorded_at, dumps(ev.payload).decode(), False)
                )
            if strict and result.rejected:
                index, reason = result.rejected[0]
                raise _BatchRejected(f"event {index} ({batch[index].event_id}): {reason}")
            if forgotten:
                erased_keys = set(forgotten)
                rows = [
                    (*row[:7], dumps(erase_payload(orjson.loads(row[7]))).decode(), True)
                    if (row[3], row[4]) in erased_keys
                    else row
                    for row in rows
                ]
                for key in forgotten:
                    erasure.erase_stored(conn, key)
            _store_rows(conn, rows, new_keys, status_changes)
        result.accepted = len(rows)
        result.last_sequence = rows[-1][0] if rows else None
        return result

    def _stored_events(self, conn: Connection, event_ids: list[str]) -> dict[str, "_StoredEvent"]:
        if conn.dialect.name == "postgresql":
            return {event_id: _StoredEvent(*values) for event_id, *values in postgres.stored_events(conn, event_ids)}
        found: dict[str, _StoredEvent] = {}
        sql = "SELECT event_id, type, user_id, memory_id, occurred_at, payload, erased FROM events WHERE event_id IN ({})"
        for chunk in chunks(sorted(set(event_ids))):
            for event_id, *values in driver_select(conn, sql, [], chunk):
                found[event_id] = _StoredEvent(*values)
        return found

    def _memory_statuses(self, conn: Connection, batch: Sequence[MemoryEvent]) -> dict[MemoryKey, str]:
        wanted: set[MemoryKey] = set()
        for ev in batch:
            wanted.add(ev.key)
            if ev.type == MEMORY_RELATED:
                wanted.add((ev.user_id, ev.payload["target"]))
        if conn.dialect.name == "postgresql":
            return {(u, m): status for u, m, status in postgres.memory_statuses(conn, wanted)}
        statuses: dict[MemoryKey, str] = {}
        sql = "SELECT memory_id, status FROM memory_keys WHERE user_id = {} AND memory_id IN ({})"
        for user_id, memory_ids in by_user(wanted):
            for memory_id, status in driver_select(conn, sql, [user_id], memory_ids):
                statuses[(user_id, memory_id)] = status
        return statuses

    # Reading --------------------------------------------------------------------------------

    def max_sequence(self) -> int:
        with self.reading() as conn:
            return conn.execute(select(func.max(events.c.sequence))).scalar() or 0

    def read_events(
        self,
        *,
        after_sequence: int = 0,
        until_sequence: int | None = None,
        until_time: str | datetime | None = None,
        user_id: str | None = None,
        page_size: int = 20_000,
    ) -> Iterator[MemoryEvent]:
        """Stored events in sequence order, paged so that a long log never sits in memory at once."""
        for page in self.read_event_pages(
            after_sequence=after_sequence,
            until_sequence=until_sequence,
            until_time=until_time,
            user_id=user_id,
            page_size=page_size,
        ):
            yield from page

    def read_event_pages(
        self,
        *,
        after_sequence: int = 0,
        until_sequence: int | None = None,
        until_time: str | datetime | None = None,
        user_id: str | None = None,
        page_size: int = 20_000,
    ) -> Iterator[list[MemoryEvent]]:
        cols = (
            events.c.sequence,
            events.c.event_id,
            events.c.type,
            events.c.user_id,
            events.c.memory_id,
            events.c.occurred_at,
            events.c.payload,
        )
        if until_time is not None:
            until_time = normalize_timestamp(until_time, "until_time")
        query = select(*cols).order_by(events.c.sequence)
        if until_sequence is not None:
            query = query.where(events.c.sequence <= until_sequence)
        if until_time is not None:
            query = query.where(events.c.occurred_at <= until_time)
        if user_id is not None:
            query = query.where(events.c.user_id == user_id)
        loads = orjson.loads
        for rows in self._event_rows(query, after_sequence, page_size):
            yield [MemoryEvent(e, t, u, m, o, loads(p), s) for s, e, t, u, m, o, p in rows]

    def _event_rows(self, query: Select, after_sequence: int, page_size: int) -> Iterator[Sequence[Row]]:
        """The rows of an events query ordered by sequence, a page at a time. PostgreSQL streams them
        from one server-side cursor (one snapshot, memory bounded by the page); SQLite reads each page
        by its own keyset query, so no read transaction stays open between pages."""
        if self.is_postgres:
            with self.reading() as conn:
                result = conn.execution_options(yield_per=page_size).execute(query.where(events.c.sequence > after_sequence))
                yield from result.partitions()
            return
        last = after_sequence
        while True:
            with self.reading() as conn:
                rows = conn.execute(query.where(events.c.sequence > last).limit(page_size)).all()
            if not rows:
                return
            yield rows
            last = rows[-1][0]
            if len(rows) < page_size:
                return

    def replay(
        self,
        *,
        until_sequence: int | None = None,
        until_time: str | datetime | None = None,
        user_id: str | None = None,
    ) -> MemoryState:
        """The state of every memory as of a sequence number or a point in time (ISO 8601 with a zone)."""
        state: MemoryState = {}
        with gc_paused():
            for page in self.read_event_pages(until_sequence=until_sequence, until_time=until_time, user_id=user_id):
                apply_events(state, page)
        return state

    def fold_since(
        self, state: MemoryState, after_sequence: int, *, follow: Callable[[MemoryEvent], bool]
    ) -> tuple[int, set[MemoryKey]]:
        """Bring the memories in `state` up to the end of the log with the fold (`apply_events`), for a
        reader that keeps a few memories current between refreshes of the memories table. A memory joins
        `state`, from its row in that table, once an event after `after_sequence` passes `follow` (a row
        already past `after_sequence` has its counters, not its text or status, counted twice).
        Returns the last sequence read and the memories that changed; one query when nothing is new."""
        last = after_sequence
        changed: set[MemoryKey] = set()
        for page in self.read_event_pages(after_sequence=after_sequence):
            last = page[-1].sequence or last
            joining = {e.key for e in page if e.key not in state and follow(e)}
            if joining:
                state.update(self.load_memories(joining))
            touched = [e for e in page if e.key in state or e.key in joining]
            apply_events(state, touched)
            changed.update(e.key for e in touched if e.key in state)
        return last, changed

    def memory_events(self, user_id: str, memory_id: str) -> list[MemoryEvent]:
        """One memory's events in sequence order: its history, and its current state when folded."""
        query = (
            select(events.c.event_id, events.c.type, events.c.user_id, events.c.memory_id, events.c.occurred_at, events.c.payload, events.c.sequence)
            .where(events.c.user_id == user_id, events.c.memory_id == memory_id)
            .order_by(events.c.sequence)
        )
        with self.reading() as conn:
            return [MemoryEvent(e, t, u, m, o, orjson.loads(p), s) for e, t, u, m, o, p, s in conn.execute(query)]

    def current_memories(self, user_id: str) -> list[Memory]:
        """A user's memories as of the end of the log: the memories table, with the user's events stored
        since it was last refreshed folded in (each only onto a row it is newer than)."""
        cursor = self.projection_cursor("memories")
        state = {m.key: m for m in self.read_memories(user_id=user_id, include_forgotten=True)}
        for page in self.read_event_pages(after_sequence=cursor, user_id=user_id):
            for event in page:
                memory = state.get(event.key)
                if memory is None or memory.last_sequence is None or (event.sequence or 0) > memory.last_sequence:
                    apply_events(state, [event])
        return sorted(state.values(), key=lambda m: m.memory_id)

    def stored_times(self, event_ids: Sequence[str]) -> dict[str, str]:
        """The `occurred_at` of those of `event_ids` already stored: a retried write reuses it."""
        found: dict[str, str] = {}
        with self.reading() as conn:
            for part in chunks(list(event_ids)):
                query = select(events.c.event_id, events.c.occurred_at).where(events.c.event_id.in_(part))
                found.update(dict(conn.execute(query).all()))
        return found

    def stats(self) -> dict[str, Any]:
        with self.reading() as conn:
            event_count = conn.execute(select(func.count()).select_from(events)).scalar() or 0
            users = conn.execute(select(func.count(distinct(memory_keys.c.user_id)))).scalar() or 0
            by_status = dict(
                conn.execute(select(memory_keys.c.status, func.count()).group_by(memory_keys.c.status)).all()
            )
            last_sequence = conn.execute(select(func.max(events.c.sequence))).scalar() or 0
            concept_count = conn.execute(select(func.count()).select_from(concepts)).scalar() or 0
        return {
            "events": event_count,
            "last_sequence": last_sequence,
            "users": users,
            "memories": {
                "total": sum(by_status.values()),
                "live": by_status.get("live", 0),
                "archived": by_status.get("archived", 0),
                "forgotten": by_status.get("forgotten", 0),
            },
            "concepts": concept_count,
        }

    def event_time_range(self) -> tuple[str | None, str | None]:
        """The earliest and latest `occurred_at` in the log."""
        with self.reading() as conn:
            first, last = conn.execute(select(func.min(events.c.occurred_at), func.max(events.c.occurred_at))).one()
        return first, last

    def counts_at(self, sequence: int) -> dict[str, int]:
        """Memory counts by status as of `sequence`, computed from the raw log (not from any fold)."""
        upto = events.c.sequence <= sequence
        with self.reading() as conn:
            created = conn.execute(
                select(func.count()).select_from(events).where(upto, events.c.type == MEMORY_CREATED)
            ).scalar()
            forgotten = conn.execute(
                select(func.count()).select_from(events).where(upto, events.c.type == MEMORY_FORGOTTEN)
            ).scalar()
            forgotten_keys = (
                select(events.c.user_id, events.c.memory_id)
                .where(upto, events.c.type == MEMORY_FORGOTTEN)
                .subquery()
            )
            archived_keys = (
                select(events.c.user_id, events.c.memory_id)
                .where(upto, events.c.type == MEMORY_ARCHIVED)
                .except_(select(forgotten_keys.c.user_id, forgotten_keys.c.memory_id))
                .subquery()
            )
            archived = conn.execute(select(func.count()).select_from(archived_keys)).scalar()
        return {
            "live": created - archived - forgotten,
            "archived": archived,
            "forgotten": forgotten,
        }

    def unerased_events_of_forgotten(self) -> int:
        """Events of forgotten memories whose payload still holds what the user said (must be 0)."""
        return erasure.unerased_events_of_forgotten(self)

    def forgotten_memories(self) -> set[MemoryKey]:
        return erasure.forgotten_memories(self)

    def unerased_events(self, user_id: str, memory_id: str) -> int:
        """Events of one memory whose payload still holds what the user said."""
        return erasure.unerased_events(self, user_id, memory_id)

    def drop_erased_pages(self) -> None:
        """Make erased text unrecoverable from the database files (as far as the backend allows)."""
        erasure.drop_erased_pages(self)

    def erased_pages_state(self) -> tuple[bool, str]:
        """Whether old page images could still hold erased text, read back from the database."""
        return erasure.erased_pages_state(self)

    # The memories projection ----------------------------------------------------------------

    def projection_cursor(self, name: str) -> int:
        with self.reading() as conn:
            value = conn.execute(
                select(projection_cursors.c.sequence).where(projection_cursors.c.name == name)
            ).scalar()
        return value or 0

    def load_memories(self, keys: Iterable[MemoryKey]) -> MemoryState:
        state: MemoryState = {}
        with self.reading() as conn:
            for user_id, memory_ids in by_user(keys):
                query = select(memories).where(memories.c.user_id == user_id, memories.c.memory_id.in_(memory_ids))
                for row in conn.execute(query).mappings():
                    memory = memory_from_row(row)
                    state[memory.key] = memory
        return state

    def memory_statuses(self, keys: Iterable[MemoryKey]) -> dict[MemoryKey, str]:
        """Which of `keys` exist in the log, and whether each is live, archived or forgotten."""
        found: dict[MemoryKey, str] = {}
        with self.reading() as conn:
            for user_id, memory_ids in by_user(keys):
                query = select(memory_keys.c.memory_id, memory_keys.c.status).where(
                    memory_keys.c.user_id == user_id, memory_keys.c.memory_id.in_(memory_ids)
                )
                found.update({(user_id, memory_id): status for memory_id, status in conn.execute(query)})
        return found

    def read_memories(self, *, user_id: str | None = None, include_forgotten: bool = False) -> list[Memory]:
        query = select(memories).order_by(memories.c.user_id, memories.c.memory_id)
        if user_id is not None:
            query = query.where(memories.c.user_id == user_id)
        if not include_forgotten:
            query = query.where(memories.c.is_forgotten.is_(False))
        with self.reading() as conn:
            return [memory_from_row(row) for row in conn.execute(query).mappings()]

    def save_memories(self, changed: Iterable[Memory], *, cursor_name: str, cursor: int) -> int:
        """Upsert changed memories and move the projection's cursor, in one transaction."""
        rows = [memory_to_row(m) for m in changed]
        with self.writing() as conn:
            insert_many(conn, memories, rows, upsert_on=("user_id", "memory_id"))
            insert_many(conn, projection_cursors, [(cursor_name, cursor, _now())], upsert_on=("name",))
        return len(rows)

    def clear_memories(self, *, cursor_name: str) -> None:
        with self.writing() as conn:
            conn.execute(memories.delete())
            conn.execute(projection_cursors.delete().where(projection_cursors.c.name == cursor_name))

    def memory_summary(self) -> dict[str, Any]:
        """What an operator wants to see of the memories projection."""
        live = and_(memories.c.is_forgotten.is_(False), memories.c.is_archived.is_(False))
        with self.reading() as conn:
            by_type = conn.execute(
                select(func.coalesce(memories.c.memory_type, "(none)"), func.count())
                .where(live)
                .group_by(memories.c.memory_type)
                .order_by(func.count().desc())
            ).all()
            by_category = conn.execute(
                select(func.coalesce(memories.c.category, "(none)"), func.count())
                .where(live)
                .group_by(memories.c.category)
                .order_by(func.count().desc(), memories.c.category)
                .limit(10)
            ).all()
            users = conn.execute(select(func.count(distinct(memories.c.user_id)))).scalar() or 0
            flags = conn.execute(
                select(memories.c.is_archived, memories.c.is_forgotten, func.count()).group_by(
                    memories.c.is_archived, memories.c.is_forgotten
                )
            ).all()
            empty_live = conn.execute(
                select(func.count()).select_from(memories).where(
                    live, (memories.c.content.is_(None)) | (func.length(func.trim(memories.c.content)) == 0)
                )
            ).scalar()
            forgotten_with_content = conn.execute(
                select(func.count()).select_from(memories).where(
                    memories.c.is_forgotten.is_(True), memories.c.content.is_not(None)
                )
            ).scalar()
        forgotten_n = sum(n for _, is_forgotten, n in flags if is_forgotten)
        archived_n = sum(n for is_archived, is_forgotten, n in flags if is_archived and not is_forgotten)
        live_n = sum(n for is_archived, is_forgotten, n in flags if not is_archived and not is_forgotten)
        return {
            "users": users,
            "live": live_n,
            "archived": archived_n,
            "forgotten": forgotten_n,
            "by_type": [(str(k), int(v)) for k, v in by_type],
            "by_category": [(str(k), int(v)) for k, v in by_category],
            "live_without_content": int(empty_live or 0),
            "forgotten_with_content": int(forgotten_with_content or 0),
        }


class _BatchRejected(StoreError):
    pass


@dataclass(frozen=True)
class _StoredEvent:
    type: str
    user_id: str
    memory_id: str
    occurred_at: str
    payload: str | dict[str, Any]
    erased: bool


def _difference(stored: _StoredEvent, ev: MemoryEvent) -> str | None:
    """Which part of an event differs from the stored event of the same id (None: a true duplicate).
    A forgotten memory's stored events lost what the user said, so only the rest is compared."""
    for name in ("type", "user_id", "memory_id", "occurred_at"):
        if getattr(stored, name) != getattr(ev, name):
            return name
    new = erase_payload(ev.payload) if stored.erased else ev.payload
    if isinstance(stored.payload, str) and stored.payload == orjson.dumps(new).decode():
        return None
    payload = stored.payload if isinstance(stored.payload, dict) else orjson.loads(stored.payload)
    return None if payload == new else "payload"


def _store_rows(
    conn: Connection, rows: list[tuple[Any, ...]], new_keys: list[tuple[str, str, str, int]], status_changes: dict[MemoryKey, str]
) -> None:
    """Write what an append decided: COPY and one UPDATE on PostgreSQL, executemany on SQLite."""
    if conn.dialect.name == "postgresql":
        postgres.copy_rows(conn, events, rows)
        postgres.copy_rows(conn, memory_keys, new_keys)
        if status_changes:
            postgres.set_statuses(conn, status_changes)
        return
    insert_many(conn, events, rows)
    insert_many(conn, memory_keys, new_keys)
    if status_changes:
        conn.execute(
            memory_keys.update()
            .where(
                and_(
                    memory_keys.c.user_id == bindparam("key_user_id"),
                    memory_keys.c.memory_id == bindparam("key_memory_id"),
                )
            )
            .values(status=bindparam("new_status")),
            [{"key_user_id": u, "key_memory_id": m, "new_status": status} for (u, m), status in status_changes.items()],
        )


def _reference_problem(ev: MemoryEvent, key: MemoryKey, statuses: dict[MemoryKey, str]) -> str | None:
    status = statuses.get(key)
    if ev.type == MEMORY_CREATED:
        return f"memory {ev.memory_id!r} already exists for user {ev.user_id!r}" if status else None
    if status is None:
        return f"memory {ev.memory_id!r} does not exist for user {ev.user_id!r}"
    if status == "forgotten":
        return f"memory {ev.memory_id!r} was forgotten"
    if ev.type == MEMORY_RELATED:
        target = ev.payload["target"]
        if target == ev.memory_id:
            return "payload.target must name another memory, not the memory itself"
        target_status = statuses.get((ev.user_id, target))
        if target_status is None:
            return f"payload.target: memory {target!r} does not exist for user {ev.user_id!r}"
        if target_status == "forgotten":
            return f"payload.target: memory {target!r} was forgotten"
    return None

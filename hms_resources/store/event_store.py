"""The append-only event store: append (idempotent, atomic batches), read in sequence order, replay.

One code path for the embedded SQLite file and for PostgreSQL (`HMS_DATABASE_URL`). Appends are
serialised by the database (SQLite's `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so sequence
numbers are dense and commit in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import PrivateAttr
from sqlalchemy import Connection, Engine, and_, bindparam, create_engine, distinct, event, func, select
from sqlalchemy.engine import make_url

from hms_resources.common.bulk import gc_paused
from hms_resources.common.home import default_database_url, hms_home, positive_int_from_env, redact_error, redact_url
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
from hms_resources.store.memory_state import JSON_COLUMNS, MEMORY_COLUMNS, Memory, MemoryKey, MemoryState
from hms_resources.store.schema import VERSION_TABLE, concepts, events, memories, memory_keys, projection_cursors

MIGRATIONS = Path(__file__).parent / "migrations"
APPEND_LOCK_ID = 0x484D5331  # "HMS1": the PostgreSQL advisory lock that serialises appends
_IN_CHUNK = 500


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


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _make_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA wal_autocheckpoint=16384")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        deferred = conn.get_execution_options().get("hms_read_only", False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


class EventStore(dg.ConfigurableResource):
    """The source of truth for every memory: an append-only log of memory events."""

    database_url: str = ""
    hms_home: str = ""
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES

    _engine: Engine | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "EventStore":
        return cls(
            database_url=os.environ.get("HMS_DATABASE_URL", ""),
            hms_home=os.environ.get("HMS_HOME", ""),
            max_content_bytes=positive_int_from_env("HMS_MAX_CONTENT_BYTES", DEFAULT_MAX_CONTENT_BYTES),
        )

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
            engine = _make_engine(self.url)
            try:
                _upgrade(engine)
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
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_ID)))
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(hms_read_only=True)
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
                    self._erase_stored(conn, key)
            _insert_many(conn, events, rows)
            _insert_many(conn, memory_keys, new_keys)
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
                    [
                        {"key_user_id": u, "key_memory_id": m, "new_status": status}
                        for (u, m), status in status_changes.items()
                    ],
                )
        result.accepted = len(rows)
        result.last_sequence = rows[-1][0] if rows else None
        return result

    def _stored_events(self, conn: Connection, event_ids: list[str]) -> dict[str, "_StoredEvent"]:
        found: dict[str, _StoredEvent] = {}
        sql = "SELECT event_id, type, user_id, memory_id, occurred_at, payload, erased FROM events WHERE event_id IN ({})"
        for chunk in _chunks(sorted(set(event_ids))):
            for event_id, *values in _driver_select(conn, sql, [], chunk):
                found[event_id] = _StoredEvent(*values)
        return found

    def _memory_statuses(self, conn: Connection, batch: Sequence[MemoryEvent]) -> dict[MemoryKey, str]:
        wanted: set[MemoryKey] = set()
        for ev in batch:
            wanted.add(ev.key)
            if ev.type == MEMORY_RELATED:
                wanted.add((ev.user_id, ev.payload["target"]))
        statuses: dict[MemoryKey, str] = {}
        sql = "SELECT memory_id, status FROM memory_keys WHERE user_id = {} AND memory_id IN ({})"
        for user_id, memory_ids in _by_user(wanted):
            for memory_id, status in _driver_select(conn, sql, [user_id], memory_ids):
                statuses[(user_id, memory_id)] = status
        return statuses

    def _erase_stored(self, conn: Connection, key: MemoryKey) -> None:
        user_id, memory_id = key
        where = and_(events.c.user_id == user_id, events.c.memory_id == memory_id, events.c.erased.is_(False))
        for sequence, payload in conn.execute(select(events.c.sequence, events.c.payload).where(where)).all():
            erased = orjson.dumps(erase_payload(orjson.loads(payload))).decode()
            conn.execute(events.update().where(events.c.sequence == sequence).values(payload=erased, erased=True))

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
        last = after_sequence
        loads = orjson.loads
        if until_time is not None:
            until_time = normalize_timestamp(until_time, "until_time")
        while True:
            query = select(*cols).where(events.c.sequence > last).order_by(events.c.sequence).limit(page_size)
            if until_sequence is not None:
                query = query.where(events.c.sequence <= until_sequence)
            if until_time is not None:
                query = query.where(events.c.occurred_at <= until_time)
            if user_id is not None:
                query = query.where(events.c.user_id == user_id)
            with self.reading() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            yield [MemoryEvent(e, t, u, m, o, loads(p), s) for s, e, t, u, m, o, p in rows]
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
        from hms_resources.store.memory_state import apply_events

        state: MemoryState = {}
        with gc_paused():
            for page in self.read_event_pages(until_sequence=until_sequence, until_time=until_time, user_id=user_id):
                apply_events(state, page)
        return state

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
        joined = events.join(
            memory_keys,
            and_(events.c.user_id == memory_keys.c.user_id, events.c.memory_id == memory_keys.c.memory_id),
        )
        query = (
            select(func.count())
            .select_from(joined)
            .where(memory_keys.c.status == "forgotten", events.c.erased.is_(False))
        )
        with self.reading() as conn:
            return conn.execute(query).scalar() or 0

    def forgotten_memories(self) -> set[MemoryKey]:
        with self.reading() as conn:
            query = select(memory_keys.c.user_id, memory_keys.c.memory_id).where(memory_keys.c.status == "forgotten")
            return {(u, m) for u, m in conn.execute(query)}

    def unerased_events(self, user_id: str, memory_id: str) -> int:
        """Events of one memory whose payload still holds what the user said."""
        where = and_(events.c.user_id == user_id, events.c.memory_id == memory_id, events.c.erased.is_(False))
        with self.reading() as conn:
            return conn.execute(select(func.count()).select_from(events).where(where)).scalar() or 0

    def drop_erased_pages(self) -> None:
        """Make erased text unrecoverable from the database files. SQLite (always `secure_delete`, which
        zeroes freed space) copies the WAL into the database and truncates it, so no old page image is
        left. PostgreSQL: VACUUM makes the dead row versions reclaimable; their bytes stay on disk (and in
        WAL archives and backups) until overwritten, which only VACUUM FULL and encrypted storage bound."""
        if self.is_postgres:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in (events, memories, concepts):
                    conn.exec_driver_sql(f"VACUUM {table.name}")
            return
        self._sqlite_pragma("wal_checkpoint(TRUNCATE)")

    def _sqlite_pragma(self, pragma: str) -> tuple[Any, ...]:
        """A pragma outside any transaction (the engine's transactions take the write lock first)."""
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            row = cursor.execute(f"PRAGMA {pragma}").fetchone()
            cursor.close()
            return tuple(row or ())
        finally:
            connection.close()

    def erased_pages_state(self) -> tuple[bool, str]:
        """Whether old page images could still hold erased text, read back from the database."""
        if self.is_postgres:
            return True, "PostgreSQL: dead row versions are reclaimable after VACUUM, not zeroed"
        secure = self._sqlite_pragma("secure_delete")[0]
        wal = Path(make_url(self.url).database + "-wal")
        size = wal.stat().st_size if wal.exists() else 0
        return bool(secure) and size == 0, f"SQLite: secure_delete {'on' if secure else 'off'}, WAL holds {size} bytes"

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
            for user_id, memory_ids in _by_user(keys):
                query = select(memories).where(memories.c.user_id == user_id, memories.c.memory_id.in_(memory_ids))
                for row in conn.execute(query).mappings():
                    memory = memory_from_row(row)
                    state[memory.key] = memory
        return state

    def memory_statuses(self, keys: Iterable[MemoryKey]) -> dict[MemoryKey, str]:
        """Which of `keys` exist in the log, and whether each is live, archived or forgotten."""
        found: dict[MemoryKey, str] = {}
        with self.reading() as conn:
            for user_id, memory_ids in _by_user(keys):
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
            _insert_many(conn, memories, rows, upsert_on=("user_id", "memory_id"))
            _insert_many(conn, projection_cursors, [(cursor_name, cursor, _now())], upsert_on=("name",))
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


def _insert_many(
    conn: Connection, table: Any, rows: Sequence[tuple[Any, ...]], *, upsert_on: tuple[str, ...] = ()
) -> None:
    """executemany of rows given in the table's column order, as an upsert on `upsert_on` if given
    (SQLite and PostgreSQL spell ON CONFLICT alike). On SQLite the rows go straight to the driver,
    where SQLAlchemy's per-row parameter handling would cost more than the insert itself."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    if conn.dialect.name != "sqlite":
        statement = table.insert()
        if upsert_on:
            from sqlalchemy.dialects.postgresql import insert

            statement = insert(table)
            statement = statement.on_conflict_do_update(
                index_elements=list(upsert_on),
                set_={n: statement.excluded[n] for n in names if n not in upsert_on},
            )
        conn.execute(statement, [dict(zip(names, row)) for row in rows])
        return
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    if upsert_on:
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in upsert_on)
        sql += f" ON CONFLICT ({', '.join(upsert_on)}) DO UPDATE SET {updates}"
    conn.exec_driver_sql(sql, list(rows))


def _driver_select(conn: Connection, sql: str, values: list[Any], in_values: Sequence[Any]) -> list[Any]:
    """A lookup with a long IN list, sent to the driver as it is: SQLAlchemy's rendering of expanding
    IN parameters costs more than the lookup. `sql` has one `{}` per scalar value, then one for the list;
    every value is a bound parameter."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    text_sql = sql.format(*([mark] * len(values)), ", ".join([mark] * len(in_values)))
    return conn.exec_driver_sql(text_sql, tuple(values) + tuple(in_values)).all()


def _by_user(keys: Iterable[MemoryKey]) -> Iterator[tuple[str, Sequence[str]]]:
    """Keys grouped per user, in chunks, for lookups that use the (user_id, memory_id) index."""
    grouped: dict[str, list[str]] = {}
    for user_id, memory_id in set(keys):
        grouped.setdefault(user_id, []).append(memory_id)
    for user_id in sorted(grouped):
        for chunk in _chunks(sorted(grouped[user_id])):
            yield user_id, chunk


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


_JSON_INDEXES = tuple(MEMORY_COLUMNS.index(name) for name in JSON_COLUMNS)
_BOOL_INDEXES = tuple(MEMORY_COLUMNS.index(name) for name in ("is_archived", "is_forgotten"))


def memory_to_row(memory: Memory) -> tuple[Any, ...]:
    """A memory as a row of the memories table, in column order."""
    values = [getattr(memory, name) for name in MEMORY_COLUMNS]
    for index in _JSON_INDEXES:
        values[index] = orjson.dumps(values[index]).decode()
    return tuple(values)


def memory_from_row(row: Any) -> Memory:
    values = [row[name] for name in MEMORY_COLUMNS]
    for index in _JSON_INDEXES:
        values[index] = orjson.loads(values[index])
    for index in _BOOL_INDEXES:
        values[index] = bool(values[index])
    return Memory(*values)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision, under the store's write lock so processes don't race."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    if current == head:
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_ID)))
        command.upgrade(_alembic_config(conn), "head")


def migrate(url: str, revision: str) -> None:
    """Move the schema to `revision` (`head`, `base` or an id): the operator's upgrade and downgrade."""
    engine = _make_engine(url)
    try:
        with engine.begin() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
            config = _alembic_config(conn)
            if revision == "base" or (current is not None and revision != "head" and revision < current):
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
    finally:
        engine.dispose()


def schema_revision(url: str) -> str | None:
    engine = _make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    finally:
        engine.dispose()

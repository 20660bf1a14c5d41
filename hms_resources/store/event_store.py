"""The append-only event store: append (idempotent, atomic batches), read in sequence order, replay.

One code path for the embedded SQLite file and for PostgreSQL (`HMS_DATABASE_URL`), with the
driver's fast paths on PostgreSQL (`postgres.py`: COPY in, a server-side cursor out). Appends are
serialised by the database (SQLite's `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so sequence
numbers are dense and commit in order. The resource holds the connection and its transactions; the
SQL lives in its parts: `append.py` (the append path), `log_reads.py` (the log), `memory_table.py`
(the memories projection), `erasure.py` (the checks that a forget left nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
from pydantic import PrivateAttr
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from hms_resources.common.bulk import gc_paused
from hms_resources.common.home import default_database_url, hms_home, redact_error, redact_url
from hms_resources.store import log_reads, memory_table
from hms_resources.store.append import AppendResult, append_batch, stored_differences
from hms_resources.store.database import READ_ONLY, StoreError, lock_appends, make_engine, upgrade
from hms_resources.store.events import DEFAULT_MAX_CONTENT_BYTES, MemoryEvent, accesses_of
from hms_resources.store.memory_state import Memory, MemoryKey, MemoryState, apply_events

__all__ = ["AppendResult", "EventStore", "StoreError"]


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

    # The log --------------------------------------------------------------------------------

    def append(self, batch: Sequence[MemoryEvent], *, strict: bool = False, stamped: Sequence[bool] = ()) -> AppendResult:
        """Store a batch in one transaction (see `append.append_batch`): duplicates skipped, conflicts
        and rejections reported; with `strict`, any rejection stores nothing and raises. `stamped[i]`:
        event i's time was stamped by the server, so a stored event differing only in time is its
        duplicate (decided under the append lock)."""
        if not batch:
            return AppendResult()
        with self.writing() as conn:
            return append_batch(conn, batch, strict=strict, stamped=stamped)

    def stored_differences(self, batch: Sequence[MemoryEvent], *, stamped: Sequence[bool] = ()) -> list[tuple[int, str]]:
        """Which events of `batch` have an id stored already with other content, and what differs,
        without storing anything: a caller can refuse a reused id before doing costly work."""
        with self.reading() as conn:
            return stored_differences(conn, batch, stamped)

    def max_sequence(self) -> int:
        with self.reading() as conn:
            return log_reads.max_sequence(conn)

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
            after_sequence=after_sequence, until_sequence=until_sequence, until_time=until_time, user_id=user_id, page_size=page_size
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
        query = log_reads.events_query(until_sequence=until_sequence, until_time=until_time, user_id=user_id)
        loads = orjson.loads
        for rows in log_reads.event_rows(self.reading, self.is_postgres, query, after_sequence, page_size):
            yield [MemoryEvent(e, t, u, m, o, loads(p), s) for s, e, t, u, m, o, p in rows]

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
        Returns the last sequence read and the memories an event passing `follow` changed (an access
        counts in a followed memory's counters, not as a change); one query when nothing is new."""
        last = after_sequence
        changed: set[MemoryKey] = set()
        for page in self.read_event_pages(after_sequence=after_sequence):
            last = page[-1].sequence or last
            joining = {e.key for e in page if e.key not in state and follow(e)}
            if joining:
                state.update(self.load_memories(joining))
            touched = [e for e in page if e.key in joining or any(a.key in state for a in accesses_of(e))]
            apply_events(state, touched)
            changed.update(e.key for e in touched if e.key in state and follow(e))
        return last, changed

    def memory_events(self, user_id: str, memory_id: str) -> list[MemoryEvent]:
        """One memory's events in sequence order: its history, and its current state when folded."""
        with self.reading() as conn:
            return log_reads.memory_events(conn, user_id, memory_id)

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

    def memory_windows(self, user_id: str, *, after: str | None = None, limit: int = 50, **wanted: Any) -> Iterator[Any]:
        """A user's memories as of the end of the log after the id `after`, in `memory_id` order, a
        window of ids at a time for a page of `limit` (`memory_pages.py`): a listing reads its page, not
        every memory. `wanted` are `memory_pages.MemoryFilter`'s fields, checked again by the caller."""
        from hms_resources.store import memory_pages

        cursor = self.projection_cursor("memories")
        return memory_pages.memory_windows(self.reading, user_id, cursor, memory_pages.MemoryFilter(**wanted), after=after, limit=limit)

    def stats(self) -> dict[str, Any]:
        with self.reading() as conn:
            return log_reads.stats(conn)

    def event_time_range(self) -> tuple[str | None, str | None]:
        """The earliest and latest `occurred_at` in the log."""
        with self.reading() as conn:
            return log_reads.event_time_range(conn)

    def counts_at(self, sequence: int) -> dict[str, int]:
        """Memory counts by status as of `sequence`, computed from the raw log (not from any fold)."""
        with self.reading() as conn:
            return log_reads.counts_at(conn, sequence)

    # The memories projection ----------------------------------------------------------------

    def projection_cursor(self, name: str) -> int:
        with self.reading() as conn:
            return memory_table.projection_cursor(conn, name)

    def load_memories(self, keys: Iterable[MemoryKey]) -> MemoryState:
        with self.reading() as conn:
            return memory_table.load_memories(conn, keys)

    def memory_statuses(self, keys: Iterable[MemoryKey]) -> dict[MemoryKey, str]:
        """Which of `keys` exist in the log, and whether each is live, archived or forgotten."""
        with self.reading() as conn:
            return memory_table.memory_statuses(conn, keys)

    def users_under(self, prefix: str, *, after: str | None = None, limit: int = 100, include_forgotten: bool = False) -> list[tuple[str, int]]:
        """Stored user ids under `prefix` with their count of memories (not forgotten), in id order."""
        with self.reading() as conn:
            return memory_table.users_under(conn, prefix, after=after, limit=limit, include_forgotten=include_forgotten)

    def user_memory_ids(self, user_id: str, *, include_forgotten: bool = False) -> list[str]:
        """The ids of the stored user's memories in the log (not the forgotten ones unless asked)."""
        with self.reading() as conn:
            return memory_table.user_memory_ids(conn, user_id, include_forgotten=include_forgotten)

    def read_memories(self, *, user_id: str | None = None, include_forgotten: bool = False) -> list[Memory]:
        with self.reading() as conn:
            return memory_table.read_memories(conn, user_id=user_id, include_forgotten=include_forgotten)

    def save_memories(self, changed: Iterable[Memory], *, cursor_name: str, cursor: int) -> int:
        """Upsert changed memories and move the projection's cursor, in one transaction."""
        rows = memory_table.memory_rows(changed)
        with self.writing() as conn:
            return memory_table.save_memories(conn, rows, cursor_name=cursor_name, cursor=cursor)

    def clear_memories(self, *, cursor_name: str) -> None:
        with self.writing() as conn:
            memory_table.clear_memories(conn, cursor_name=cursor_name)

    def memory_summary(self) -> dict[str, Any]:
        """What an operator wants to see of the memories projection."""
        with self.reading() as conn:
            return memory_table.memory_summary(conn)

"""Reads of the event log over a connection the store opens: the query behind every page of events,
one memory's history, stored times, and the counts an operator or a check compares against."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Row, Select, and_, distinct, func, or_, select

from hms_resources.store.events import (
    MEMORY_ACCESSED,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    READ_MEMORY_IDS,
    MemoryEvent,
    accesses_of,
    normalize_timestamp,
)
from hms_resources.store.rows import chunks
from hms_resources.store.schema import concepts, events, memory_keys


def events_query(
    *, until_sequence: int | None = None, until_time: str | datetime | None = None, user_id: str | None = None
) -> Select:
    """Stored events as (sequence, event_id, type, user_id, memory_id, occurred_at, payload), in sequence order."""
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
    return query


def event_rows(
    reading: Callable[[], AbstractContextManager[Connection]], streaming: bool, query: Select, after_sequence: int, page_size: int
) -> Iterator[Sequence[Row]]:
    """The rows of an events query ordered by sequence, a page at a time. With `streaming` (PostgreSQL)
    they come from one server-side cursor (one snapshot, memory bounded by the page); otherwise (SQLite)
    each page is read by its own keyset query, so no read transaction stays open between pages."""
    if streaming:
        with reading() as conn:
            result = conn.execution_options(yield_per=page_size).execute(query.where(events.c.sequence > after_sequence))
            yield from result.partitions()
        return
    last = after_sequence
    while True:
        with reading() as conn:
            rows = conn.execute(query.where(events.c.sequence > last).limit(page_size)).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]
        if len(rows) < page_size:
            return


def max_sequence(conn: Connection) -> int:
    return conn.execute(select(func.max(events.c.sequence))).scalar() or 0


def memory_events(conn: Connection, user_id: str, memory_id: str) -> list[MemoryEvent]:
    """One memory's events, its accesses in reads of several memories (anchored on another) included,
    each as this memory's own access."""
    named_in_read = and_(
        events.c.type == MEMORY_ACCESSED,
        events.c.payload.contains(f'"{READ_MEMORY_IDS}"', autoescape=True),
        events.c.payload.contains(orjson.dumps(memory_id).decode(), autoescape=True),
    )
    query = (
        select(events.c.event_id, events.c.type, events.c.user_id, events.c.memory_id, events.c.occurred_at, events.c.payload, events.c.sequence)
        .where(events.c.user_id == user_id, or_(events.c.memory_id == memory_id, named_in_read))
        .order_by(events.c.sequence)
    )
    found = []
    for e, t, u, m, o, p, s in conn.execute(query):
        found += [a for a in accesses_of(MemoryEvent(e, t, u, m, o, orjson.loads(p), s)) if a.memory_id == memory_id]
    return found


def stored_times(conn: Connection, event_ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in chunks(list(event_ids)):
        query = select(events.c.event_id, events.c.occurred_at).where(events.c.event_id.in_(part))
        found.update(dict(conn.execute(query).all()))
    return found


def stats(conn: Connection) -> dict[str, Any]:
    event_count = conn.execute(select(func.count()).select_from(events)).scalar() or 0
    users = conn.execute(select(func.count(distinct(memory_keys.c.user_id)))).scalar() or 0
    by_status = dict(conn.execute(select(memory_keys.c.status, func.count()).group_by(memory_keys.c.status)).all())
    last_sequence = max_sequence(conn)
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


def event_time_range(conn: Connection) -> tuple[str | None, str | None]:
    # Two queries: SQLite answers a lone min() or max() from the index, not the two together.
    first = conn.execute(select(func.min(events.c.occurred_at))).scalar()
    last = conn.execute(select(func.max(events.c.occurred_at))).scalar()
    return first, last


def counts_at(conn: Connection, sequence: int) -> dict[str, int]:
    """Memory counts by status as of `sequence`, computed from the raw log (not from any fold)."""
    upto = events.c.sequence <= sequence
    created = conn.execute(select(func.count()).select_from(events).where(upto, events.c.type == MEMORY_CREATED)).scalar()
    forgotten = conn.execute(select(func.count()).select_from(events).where(upto, events.c.type == MEMORY_FORGOTTEN)).scalar()
    forgotten_keys = select(events.c.user_id, events.c.memory_id).where(upto, events.c.type == MEMORY_FORGOTTEN).subquery()
    archived_keys = (
        select(events.c.user_id, events.c.memory_id)
        .where(upto, events.c.type == MEMORY_ARCHIVED)
        .except_(select(forgotten_keys.c.user_id, forgotten_keys.c.memory_id))
        .subquery()
    )
    archived = conn.execute(select(func.count()).select_from(archived_keys)).scalar()
    return {"live": created - archived - forgotten, "archived": archived, "forgotten": forgotten}

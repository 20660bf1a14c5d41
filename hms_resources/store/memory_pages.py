"""A page of one user's memories as of the end of the log, read a window of ids at a time: a listing
with `limit=1` reads a row or two, never all of a user's memories (issue 28).

The ids come in `memory_id` order from two keyset queries with a SQL LIMIT: the memories table's
rows that pass the filters it can answer, and the ids with events stored since that table's cursor
(their row may be stale or missing: no filter narrows them). Each id of the window is then built as
`EventStore.current_memories` builds it: its row, with its events since the cursor folded in. The
caller checks every filter again on that current state."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import orjson
from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from hms_resources.store.events import MEMORY_ACCESSED, READ_MEMORY_IDS, MemoryEvent, is_read_of_many
from hms_resources.store.memory_state import Memory, MemoryState, apply_events
from hms_resources.store.rows import memory_from_row
from hms_resources.store.schema import events, memories, memory_tiers


WINDOW = 200
"""Ids a listing narrowed by the memories table's filters reads per window (an exact one: its page)."""

MOST_SCANNED = 5_000
"""Ids one listing examines at most: past them it answers a short page whose cursor continues the scan."""


@dataclass(frozen=True)
class MemoryFilter:
    """What a listing asks for; None: anything. `status` "any" includes forgotten memories."""

    status: str = "live"
    memory_type: str | None = None
    category: str | None = None
    tag: str | None = None
    tier: str | None = None
    created_after: str | None = None
    created_before: str | None = None

    @property
    def exact(self) -> bool:
        """Whether the memories table answers every filter (status and tier) on its rows' state: a
        row it gives passes unless changed since."""
        return all(v is None for v in (self.memory_type, self.category, self.tag, self.created_after, self.created_before))


@dataclass
class MemoryWindow:
    """The next ids of a listing, in `memory_id` order, built at their current state with their
    tiers; `last` is where the next window starts (None: no more ids), `rows_read` what it cost."""

    memories: list[Memory] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=dict)
    last: str | None = None
    rows_read: int = 0


def _ordered(conn: Connection, column: ColumnElement) -> ColumnElement:
    """Ids compared and ordered by code point, as Python orders them: on PostgreSQL whatever the
    database's collation (SQLite's BINARY already is)."""
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def _latest_tiers(user_id: str) -> ColumnElement:
    """Rows of the user's latest tier partition (user shards migrate a day one after another)."""
    day = memory_tiers.alias("latest_day")
    latest = select(func.max(day.c.partition_date)).where(day.c.user_id == user_id).scalar_subquery()
    return and_(memory_tiers.c.user_id == user_id, memory_tiers.c.partition_date == latest)


_STATUS_FLAGS = {
    "live": (False, False),
    "archived": (True, False),
    "forgotten": (None, True),
}
"""A status as the memories table's (is_archived, is_forgotten); None: either."""


def _row_filters(user_id: str, wanted: MemoryFilter) -> list[ColumnElement]:
    """The filters the memories table's row can answer: a superset of the matches (the tag as a
    substring of the row's JSON list) among rows with no event since the table's cursor, the others
    being read from the log. The tier is the latest partition's, exact."""
    found: list[ColumnElement] = []
    if wanted.status in _STATUS_FLAGS:
        archived, forgotten = _STATUS_FLAGS[wanted.status]
        found.append(memories.c.is_forgotten.is_(forgotten))
        if archived is not None:
            found.append(memories.c.is_archived.is_(archived))
    if wanted.tier is not None:
        found.append(memories.c.memory_id.in_(select(memory_tiers.c.memory_id).where(_latest_tiers(user_id), memory_tiers.c.tier == wanted.tier)))
    if wanted.memory_type is not None:
        found.append(memories.c.memory_type == wanted.memory_type)
    if wanted.category is not None:
        found.append(memories.c.category == wanted.category)
    if wanted.tag is not None:
        found.append(memories.c.tags.contains(orjson.dumps(wanted.tag).decode(), autoescape=True))
    if wanted.created_after is not None:
        found.append(memories.c.created_at > wanted.created_after)
    if wanted.created_before is not None:
        found.append(memories.c.created_at < wanted.created_before)
    return found


def window_ids(
    conn: Connection, user_id: str, cursor: int, after: str | None, size: int, wanted: MemoryFilter
) -> tuple[list[str], str | None]:
    """The next ids after `after` that may pass `wanted`, at most `size` from each source, and the
    last id the window covers (None: both sources are exhausted)."""
    by_row = _ordered(conn, memories.c.memory_id)
    from_rows = select(by_row).where(memories.c.user_id == user_id, *_row_filters(user_id, wanted))
    by_event = _ordered(conn, events.c.memory_id)
    from_log = select(by_event).distinct().where(events.c.user_id == user_id, events.c.sequence > cursor)
    if after is not None:
        from_rows = from_rows.where(by_row > after)
        from_log = from_log.where(by_event > after)
    rows = list(conn.execute(from_rows.order_by(by_row).limit(size)).scalars())
    logged = list(conn.execute(from_log.order_by(by_event).limit(size)).scalars())
    ends = [ids[-1] for ids in (rows, logged) if len(ids) == size]
    last = min(ends) if ends else None
    ids = sorted({m for m in rows + logged if last is None or m <= last})
    return ids, last


def current_state(conn: Connection, user_id: str, cursor: int, memory_ids: Sequence[str]) -> tuple[MemoryState, int]:
    """`memory_ids` as of the end of the log: their rows, with their events since `cursor` folded in
    (each only onto a row it is newer than), reads of several memories that name them included.
    Returns the state and the rows read."""
    state: MemoryState = {}
    if not memory_ids:
        return state, 0
    read = 0
    for row in conn.execute(select(memories).where(memories.c.user_id == user_id, memories.c.memory_id.in_(memory_ids))).mappings():
        memory = memory_from_row(row)
        state[memory.key] = memory
        read += 1
    named = or_(
        events.c.memory_id.in_(memory_ids),
        and_(
            events.c.type == MEMORY_ACCESSED,
            events.c.payload.contains(f'"{READ_MEMORY_IDS}"', autoescape=True),
            or_(*(events.c.payload.contains(orjson.dumps(m).decode(), autoescape=True) for m in memory_ids)),
        ),
    )
    query = (
        select(events.c.event_id, events.c.type, events.c.user_id, events.c.memory_id, events.c.occurred_at, events.c.payload, events.c.sequence)
        .where(events.c.user_id == user_id, events.c.sequence > cursor, named)
        .order_by(events.c.sequence)
    )
    wanted = set(memory_ids)
    for e, t, u, m, o, p, s in conn.execute(query):
        read += 1
        event = MemoryEvent(e, t, u, m, o, orjson.loads(p), s)
        memory = state.get((u, m))
        if is_read_of_many(event) or memory is None or memory.last_sequence is None or s > memory.last_sequence:
            apply_events(state, [event])
    return {key: memory for key, memory in state.items() if key[1] in wanted}, read


def page_tiers(conn: Connection, user_id: str, memory_ids: Sequence[str]) -> dict[str, str]:
    """The tiers of `memory_ids` in the user's latest tier partition."""
    if not memory_ids:
        return {}
    query = select(memory_tiers.c.memory_id, memory_tiers.c.tier).where(_latest_tiers(user_id), memory_tiers.c.memory_id.in_(memory_ids))
    return dict(conn.execute(query).all())


def memory_windows(
    reading: Callable[[], AbstractContextManager[Connection]], user_id: str, cursor: int, wanted: MemoryFilter, *,
    after: str | None = None, limit: int = 50,
) -> Iterator[MemoryWindow]:
    """Windows of the user's memories after `after` that may pass `wanted`, in `memory_id` order, each
    read in its own transaction, for a page of `limit`: consume as many as the page needs. Stops after
    `MOST_SCANNED` ids with the last window's `last` set (the page is cut there, to be continued)."""
    size = limit + 1 if wanted.exact else max(limit + 1, WINDOW)
    scanned = 0
    while True:
        with reading() as conn:
            ids, last = window_ids(conn, user_id, cursor, after, size, wanted)
            state, read = current_state(conn, user_id, cursor, ids)
            tiers = page_tiers(conn, user_id, ids)
        found = [state[(user_id, m)] for m in ids if (user_id, m) in state]
        yield MemoryWindow(found, tiers, last, read + len(ids) + len(tiers))
        scanned += len(ids)
        if last is None or scanned >= MOST_SCANNED:
            return
        after = last

"""The memories table (the replayed state of every memory) and its projection cursors, read and written
over a connection the store opens: the table's rows, the statuses of memory keys, the operator's summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, distinct, func, select

from hms_resources.common.clock import utc_now
from hms_resources.store.memory_state import Memory, MemoryKey, MemoryState
from hms_resources.store.rows import by_user, insert_many, memory_from_row, memory_to_row
from hms_resources.store.schema import memories, memory_keys, projection_cursors


def projection_cursor(conn: Connection, name: str) -> int:
    value = conn.execute(select(projection_cursors.c.sequence).where(projection_cursors.c.name == name)).scalar()
    return value or 0


def load_memories(conn: Connection, keys: Iterable[MemoryKey]) -> MemoryState:
    state: MemoryState = {}
    for user_id, memory_ids in by_user(keys):
        query = select(memories).where(memories.c.user_id == user_id, memories.c.memory_id.in_(memory_ids))
        for row in conn.execute(query).mappings():
            memory = memory_from_row(row)
            state[memory.key] = memory
    return state


def memory_statuses(conn: Connection, keys: Iterable[MemoryKey]) -> dict[MemoryKey, str]:
    found: dict[MemoryKey, str] = {}
    for user_id, memory_ids in by_user(keys):
        query = select(memory_keys.c.memory_id, memory_keys.c.status).where(
            memory_keys.c.user_id == user_id, memory_keys.c.memory_id.in_(memory_ids)
        )
        found.update({(user_id, memory_id): status for memory_id, status in conn.execute(query)})
    return found


def _by_code_point(conn: Connection, column: ColumnElement) -> ColumnElement:
    """Ids compared by code point, as Python compares them, so a tenant's range `<tenant>/`..`<tenant>0`
    holds exactly its users on PostgreSQL whatever the database's collation (SQLite's BINARY already does)."""
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def users_under(conn: Connection, prefix: str, *, after: str | None = None, limit: int = 100, include_forgotten: bool = False) -> list[tuple[str, int]]:
    """Stored user ids starting with `prefix` (a tenant's `<tenant>/`), with their count of memories,
    in id order after `after`: a range over the key table's primary key. A user whose every memory
    is forgotten is listed only with `include_forgotten` (counted with them)."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None
    user = _by_code_point(conn, memory_keys.c.user_id)
    query = select(memory_keys.c.user_id, func.count()).where(user >= prefix)
    if not include_forgotten:
        query = query.where(memory_keys.c.status != "forgotten")
    if after is not None:
        query = query.where(user > after)
    if upper is not None:
        query = query.where(user < upper)
    query = query.group_by(memory_keys.c.user_id).order_by(user).limit(limit)
    return [(user_id, count) for user_id, count in conn.execute(query)]


def memory_owners(conn: Connection, prefix: str, memory_id: str, *, limit: int = 2) -> list[str]:
    """The stored users under `prefix` (a tenant's `<tenant>/`) who have a memory `memory_id`, in id
    order, at most `limit`: a lookup by memory id (`ix_memory_keys_memory`) within the tenant's range."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    user = _by_code_point(conn, memory_keys.c.user_id)
    query = (
        select(memory_keys.c.user_id)
        .where(memory_keys.c.memory_id == memory_id, user >= prefix, user < upper)
        .order_by(user)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def user_memory_ids(conn: Connection, user_id: str, *, include_forgotten: bool = False) -> list[str]:
    """The ids of a user's memories in the log (not forgotten ones unless asked), in id order."""
    query = select(memory_keys.c.memory_id).where(memory_keys.c.user_id == user_id).order_by(memory_keys.c.memory_id)
    if not include_forgotten:
        query = query.where(memory_keys.c.status != "forgotten")
    return list(conn.execute(query).scalars())


def read_memories(conn: Connection, *, user_id: str | None = None, include_forgotten: bool = False) -> list[Memory]:
    query = select(memories).order_by(memories.c.user_id, memories.c.memory_id)
    if user_id is not None:
        query = query.where(memories.c.user_id == user_id)
    if not include_forgotten:
        query = query.where(memories.c.is_forgotten.is_(False))
    return [memory_from_row(row) for row in conn.execute(query).mappings()]


def memory_rows(changed: Iterable[Memory]) -> list[tuple[Any, ...]]:
    """Memories as rows of the table, built before the write transaction so it holds the lock briefly."""
    return [memory_to_row(m) for m in changed]


def save_memories(conn: Connection, rows: list[tuple[Any, ...]], *, cursor_name: str, cursor: int) -> int:
    """Upsert rows of changed memories (`memory_rows`) and move the projection's cursor, inside `conn`'s transaction."""
    insert_many(conn, memories, rows, upsert_on=("user_id", "memory_id"))
    insert_many(conn, projection_cursors, [(cursor_name, cursor, utc_now())], upsert_on=("name",))
    return len(rows)


def clear_memories(conn: Connection, *, cursor_name: str) -> None:
    conn.execute(memories.delete())
    conn.execute(projection_cursors.delete().where(projection_cursors.c.name == cursor_name))


def memory_summary(conn: Connection) -> dict[str, Any]:
    """What an operator wants to see of the memories projection."""
    live = and_(memories.c.is_forgotten.is_(False), memories.c.is_archived.is_(False))
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
        select(memories.c.is_archived, memories.c.is_forgotten, func.count()).group_by(memories.c.is_archived, memories.c.is_forgotten)
    ).all()
    empty_live = conn.execute(
        select(func.count()).select_from(memories).where(
            live, (memories.c.content.is_(None)) | (func.length(func.trim(memories.c.content)) == 0)
        )
    ).scalar()
    forgotten_with_content = conn.execute(
        select(func.count()).select_from(memories).where(memories.c.is_forgotten.is_(True), memories.c.content.is_not(None))
    ).scalar()
    return {
        "users": users,
        "live": sum(n for is_archived, is_forgotten, n in flags if not is_archived and not is_forgotten),
        "archived": sum(n for is_archived, is_forgotten, n in flags if is_archived and not is_forgotten),
        "forgotten": sum(n for _, is_forgotten, n in flags if is_forgotten),
        "by_type": [(str(k), int(v)) for k, v in by_type],
        "by_category": [(str(k), int(v)) for k, v in by_category],
        "live_without_content": int(empty_live or 0),
        "forgotten_with_content": int(forgotten_with_content or 0),
    }

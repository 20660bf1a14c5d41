"""Forgetting in the log, checked: a forgotten memory's stored events must have lost what the user said
(the append that forgets erases them, `append.erase_stored`), and the database files' free pages must
not keep it either. Each check takes the store it reads."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import and_, func, select
from sqlalchemy.engine import make_url

from hms_resources.store.append import unerased_of
from hms_resources.store.database import sqlite_pragma
from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import MemoryKey
from hms_resources.store.schema import concepts, events, memories, memory_keys


def unerased_events(store: EventStore, user_id: str, memory_id: str) -> int:
    """Events of one memory whose payload still holds what the user said."""
    with store.reading() as conn:
        return conn.execute(select(func.count()).select_from(events).where(unerased_of(user_id, memory_id))).scalar() or 0


def unerased_events_of_forgotten(store: EventStore) -> int:
    """Events of forgotten memories whose payload still holds what the user said (must be 0)."""
    joined = events.join(
        memory_keys,
        and_(events.c.user_id == memory_keys.c.user_id, events.c.memory_id == memory_keys.c.memory_id),
    )
    query = select(func.count()).select_from(joined).where(memory_keys.c.status == "forgotten", events.c.erased.is_(False))
    with store.reading() as conn:
        return conn.execute(query).scalar() or 0


def forgotten_memories(store: EventStore) -> set[MemoryKey]:
    query = select(memory_keys.c.user_id, memory_keys.c.memory_id).where(memory_keys.c.status == "forgotten")
    with store.reading() as conn:
        return {(u, m) for u, m in conn.execute(query)}


def drop_erased_pages(store: EventStore) -> None:
    """Make erased text unrecoverable from the database files (as far as the backend allows).

    SQLite (always `secure_delete`, which zeroes freed space) copies the WAL into the database and
    truncates it, so no old page image is left. PostgreSQL: VACUUM makes the dead row versions
    reclaimable; their bytes stay on disk (and in WAL archives and backups) until overwritten, which
    only VACUUM FULL and encrypted storage bound."""
    if store.is_postgres:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in (events, memories, concepts):
                conn.exec_driver_sql(f"VACUUM {table.name}")
        return
    sqlite_pragma(store.engine, "wal_checkpoint(TRUNCATE)")


def erased_pages_state(store: EventStore) -> tuple[bool, str]:
    """Whether old page images could still hold erased text, read back from the database."""
    if store.is_postgres:
        return True, "PostgreSQL: dead row versions are reclaimable after VACUUM, not zeroed"
    secure = sqlite_pragma(store.engine, "secure_delete")[0]
    # Frames written since the forget's own checkpoint are copies of pages already erased, but a reader
    # cannot tell them apart: checkpoint again (a running `hms serve` keeps writing accesses), then look.
    sqlite_pragma(store.engine, "wal_checkpoint(TRUNCATE)")
    wal = Path(make_url(store.url).database + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    return bool(secure) and size == 0, f"SQLite: secure_delete {'on' if secure else 'off'}, WAL holds {size} bytes"

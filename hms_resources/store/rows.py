"""Rows of the store's tables: the memories table's codec and the bulk statements the store's hot paths
send (executemany inserts and upserts, long IN lookups), written so SQLAlchemy's per-row work stays out
of them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection

from hms_resources.store.memory_state import JSON_COLUMNS, MEMORY_COLUMNS, Memory, MemoryKey

IN_CHUNK = 500
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


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def by_user(keys: Iterable[MemoryKey]) -> Iterator[tuple[str, Sequence[str]]]:
    """Keys grouped per user, in chunks, for lookups that use the (user_id, memory_id) index."""
    grouped: dict[str, list[str]] = {}
    for user_id, memory_id in set(keys):
        grouped.setdefault(user_id, []).append(memory_id)
    for user_id in sorted(grouped):
        for chunk in chunks(sorted(grouped[user_id])):
            yield user_id, chunk


def insert_many(conn: Connection, table: Any, rows: Sequence[tuple[Any, ...]], *, upsert_on: tuple[str, ...] = ()) -> None:
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


def driver_select(conn: Connection, sql: str, values: list[Any], in_values: Sequence[Any]) -> list[Any]:
    """A lookup with a long IN list, sent to the driver as it is: SQLAlchemy's rendering of expanding
    IN parameters costs more than the lookup. `sql` has one `{}` per scalar value, then one for the list;
    every value is a bound parameter."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    text_sql = sql.format(*([mark] * len(values)), ", ".join([mark] * len(in_values)))
    return conn.exec_driver_sql(text_sql, tuple(values) + tuple(in_values)).all()

"""The store's PostgreSQL fast paths: an append's lookups as one query each (the batch's keys in one
JSON parameter) and its rows sent with COPY, where SQLAlchemy's executemany costs several times the
insert itself. The append decides every row in Python under the append lock first, so these paths
only carry out its decision: the same checks, the same order, one transaction."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Boolean, Connection, Integer, String, Table
from sqlalchemy import exc as sa_exc

from hms_resources.store.memory_state import MemoryKey

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_BOOLEANS = {True: "t", False: "f"}


def _copy_data(table: Table, rows: Sequence[tuple[Any, ...]]) -> str:
    """The rows in COPY's text format, built a column at a time by C-level joins. A text value must be
    a `str` (the join refuses anything else), and backslashes are doubled, so no value can end the
    data or read as NULL (`\\N`). Values holding a tab or a line break are escaped one by one."""
    columns: list[Sequence[Any]] = list(zip(*rows))
    for index, column in enumerate(table.columns):
        if isinstance(column.type, Boolean):
            columns[index] = list(map(_BOOLEANS.__getitem__, columns[index]))
        elif isinstance(column.type, Integer):
            columns[index] = list(map(int.__str__, columns[index]))
        elif not isinstance(column.type, String):
            raise TypeError(f"COPY into {table.name}.{column.name} ({column.type}) is not supported")
    try:
        data = "\n".join(map("\t".join, zip(*columns))) + "\n"
    except TypeError:
        raise TypeError(_not_text(table, columns)) from None
    if data.count("\t") == len(rows) * (len(columns) - 1) and data.count("\n") == len(rows) and "\r" not in data:
        return data.replace("\\", "\\\\")
    escaped = [[value.translate(_COPY_ESCAPES) for value in column] for column in columns]
    return "\n".join(map("\t".join, zip(*escaped))) + "\n"


def _not_text(table: Table, columns: list[Sequence[Any]]) -> str:
    for column, values in zip(table.columns, columns):
        for value in values:
            if type(value) is not str:
                return f"{table.name}.{column.name} must be text, got {type(value).__name__} {value!r:.40}"
    return f"{table.name}: a row has a value that is not text"


def copy_rows(conn: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY rows given in the table's column order into `table`, inside the connection's transaction.
    A row the database refuses fails the whole COPY with SQLAlchemy's exception for it (a
    `DataError` for a value too long), as an INSERT would."""
    if not rows:
        return
    sql = f"COPY {table.name} ({', '.join(c.name for c in table.columns)}) FROM STDIN"
    data = _copy_data(table, rows)
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.cursor()
    try:
        cursor.copy_expert(sql, io.StringIO(data), size=1 << 20)
    except dbapi.Error as exc:
        raise sa_exc.DBAPIError.instance(sql, None, exc, dbapi.Error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


def _json(values: list[Any]) -> str:
    """A list as one JSON parameter: PostgreSQL reads it far faster than the `ARRAY[...]` expression
    psycopg2 writes for a Python list (one constant per item to parse)."""
    return orjson.dumps(values).decode()


def stored_events(conn: Connection, event_ids: Iterable[str]) -> list[tuple[Any, ...]]:
    """(event_id, type, user_id, memory_id, occurred_at, payload, erased) of those ids already stored."""
    return conn.exec_driver_sql(
        "SELECT event_id, type, user_id, memory_id, occurred_at, payload, erased FROM events"
        " WHERE event_id IN (SELECT json_array_elements_text(%s::json))",
        (_json(list(set(event_ids))),),
    ).all()


def memory_statuses(conn: Connection, keys: Iterable[MemoryKey]) -> list[tuple[str, str, str]]:
    """(user_id, memory_id, status) of those keys that exist."""
    return conn.exec_driver_sql(
        "SELECT k.user_id, k.memory_id, k.status FROM memory_keys AS k"
        " JOIN (SELECT w->>0 AS user_id, w->>1 AS memory_id FROM json_array_elements(%s::json) AS w) AS w"
        " ON k.user_id = w.user_id AND k.memory_id = w.memory_id",
        (_json(list(set(keys))),),
    ).all()


def set_statuses(conn: Connection, changes: dict[MemoryKey, str]) -> None:
    """Every changed status in one statement (psycopg2's executemany sends one per row)."""
    conn.exec_driver_sql(
        "UPDATE memory_keys AS k SET status = c->>2"
        " FROM json_array_elements(%s::json) AS c"
        " WHERE k.user_id = c->>0 AND k.memory_id = c->>1",
        (_json([(user_id, memory_id, status) for (user_id, memory_id), status in changes.items()]),),
    )

"""The store's database connection and its schema migrations: one engine setup for the embedded SQLite
file and for PostgreSQL, and the Alembic upgrade every store runs when it first connects."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url

from hms_resources.store.schema import VERSION_TABLE

MIGRATIONS = Path(__file__).parent / "migrations"
APPEND_LOCK_ID = 0x484D5331  # "HMS1": the PostgreSQL advisory lock that serialises appends
READ_ONLY = "hms_read_only"
"""Execution option of a read transaction: on SQLite it begins deferred instead of taking the write lock."""


class StoreError(RuntimeError):
    """The store cannot do what was asked (unreachable, wrong schema, ...)."""


PG_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
"""A PostgreSQL server that is gone or silent fails a connection within seconds instead of hanging it
(what the URL sets itself wins)."""


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query} if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, pool_timeout=30, connect_args=connect_args)
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
        deferred = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


def lock_appends(conn: Connection) -> None:
    """On PostgreSQL, hold the append lock until the transaction ends (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK_ID)))


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision, under the store's write lock so processes don't race."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    if current == head:
        return
    with engine.begin() as conn:
        lock_appends(conn)
        command.upgrade(_alembic_config(conn), "head")


def migrate(url: str, revision: str) -> None:
    """Move the schema to `revision` (`head`, `base` or an id): the operator's upgrade and downgrade."""
    engine = make_engine(url)
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
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    finally:
        engine.dispose()


def sqlite_pragma(engine: Engine, pragma: str) -> tuple:
    """A pragma outside any transaction (the engine's transactions take the write lock first)."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        row = cursor.execute(f"PRAGMA {pragma}").fetchone()
        cursor.close()
        return tuple(row or ())
    finally:
        connection.close()

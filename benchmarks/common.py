"""Shared set-up for the benchmarks: event files and throw-away PostgreSQL databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hms_resources.datasets.synthetic import generate_bulk_events

PG_SERVER_URL = os.environ.get("HMS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def write_events(path: Path, count: int, *, seed: int = 1) -> int:
    written = 0
    with path.open("wb") as out:
        for record in generate_bulk_events(count, users=50, seed=seed):
            out.write(orjson.dumps(record) + b"\n")
            written += 1
    return written


@contextmanager
def temporary_postgres_database() -> Iterator[str | None]:
    """A fresh database on the local server, dropped afterwards; None when no server answers."""
    server = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    name = f"hms_bench_{uuid.uuid4().hex[:10]}"
    try:
        with server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception:  # noqa: BLE001 - the benchmark reports PostgreSQL as unavailable
        server.dispose()
        yield None
        return
    try:
        yield make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

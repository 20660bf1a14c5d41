"""Fixtures: a temporary HMS home, the real PostgreSQL server (a fresh database per test), and a real
Bolt server (FalkorDB, one per session; tests may stop, kill and restart it) with a `graph_store` on
an emptied graph per test.

Tests that need PostgreSQL, the Bolt server or a browser skip with the reason when it is not
reachable, and fail instead when HMS_REQUIRE_SERVICES=1 (as in CI)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hms_resources.semantic.bolt_server import BoltServer, ServerUnavailable, start_bolt_server
from hms_resources.semantic.graph_store import GraphStore
from hms_resources.store.event_store import EventStore

PG_SERVER_URL = os.environ.get("HMS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    return os.environ.get("HMS_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (HMS_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture
def hms_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hms"
    monkeypatch.setenv("HMS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("HMS_DATABASE_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_server() -> sa.Engine:
    engine = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001
        unavailable(f"PostgreSQL is not reachable at {make_url(PG_SERVER_URL).render_as_string()}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server: sa.Engine) -> Iterator[str]:
    name = f"hms_test_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with postgres_server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[EventStore]:
    event_store = EventStore(database_url=store_url, hms_home=str(tmp_path / "home"))
    yield event_store
    event_store.close()


@pytest.fixture(scope="session")
def bolt_server() -> Iterator[BoltServer]:
    with tempfile.TemporaryDirectory(prefix="hms-falkordb-") as tmp:
        try:
            server = start_bolt_server(Path(tmp))
        except ServerUnavailable as exc:
            unavailable(f"no Bolt server for the graph tests: {exc}")
        try:
            yield server
        finally:
            server.kill()


@pytest.fixture
def graph_store(bolt_server: BoltServer) -> Iterator[GraphStore]:
    store = GraphStore(
        uri=bolt_server.uri,
        user="falkordb",
        password="",
        database=f"hms_test_{uuid.uuid4().hex[:12]}",
        dialect="falkordb",
        retry_delay_s=0.1,
    )
    # FalkorDB's Bolt listener ignores the database a transaction names and always uses the graph
    # "falkordb", so the unique name above does not separate tests: the graph is emptied instead.
    store.driver.execute_query("MATCH (n) DETACH DELETE n", database_=store.database)
    yield store
    store.close()
    if not bolt_server.running:
        bolt_server.start()
    bolt_server.settle()

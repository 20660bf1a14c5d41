"""Fixtures: a temporary HMS home, the real PostgreSQL server (a fresh database per test), and a real
Bolt server (FalkorDB, one per session; tests may stop, kill and restart it) with a `graph_store` on
an emptied graph per test.

`seed_base_replies` gives the LoRA tests the base model's replies (generated once per session);
under pytest-xdist each worker's torch uses its share of the cores (`torch_threads_per_worker`).

Tests that need PostgreSQL, the Bolt server or a browser skip with the reason when it is not
reachable, and fail instead when HMS_REQUIRE_SERVICES=1 (as in CI)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hms_resources.semantic.bolt_server import (
    BoltServer,
    ServerUnavailable,
    start_bolt_server,
)
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


@pytest.fixture(scope="session")
def seed_base_replies(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, int], None]:
    """`seed(home, control_tokens)` puts into an HMS home the base model's replies that LoRA training
    and evaluation cache under `lora/rehearsal/`: to the rehearsal prompts, and to the control prompts
    at the `max_new_tokens` the test evaluates with. Greedy, so the same in every home, yet minutes of
    CPU each time: each is generated once per session, by the first pytest-xdist worker that asks,
    under a file lock the others wait on."""
    from filelock import FileLock

    from hms_resources.lora.adapters import REHEARSAL_TOKENS
    from hms_resources.lora.rehearsal import (
        CONTROL_PROMPTS,
        REHEARSAL_PROMPTS,
        base_replies,
        replies_cache_path,
    )
    from hms_resources.lora.training import load_base

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each worker's own
    cache = shared / "lora-base-replies"

    def seed(home: Path, control_tokens: int) -> None:
        for prompts, tokens in ((REHEARSAL_PROMPTS, REHEARSAL_TOKENS), (CONTROL_PROMPTS, control_tokens)):
            cached = replies_cache_path(cache, "", prompts, tokens)
            cached.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{cached}.lock"):
                if not cached.exists():
                    base_replies(cache, load_base(), "", prompts, tokens)
            target = replies_cache_path(home, "", prompts, tokens)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, target)

    return seed


@pytest.fixture(scope="session", autouse=True)
def torch_threads_per_worker() -> None:
    """Under pytest-xdist, each worker's torch gets its share of the cores (one on CI's two), not all of
    them: two workers each running a thread per core oversubscribe the machine, and torch's threads then
    wait on each other (20 greedy replies took 65 s at two threads, 5 s at one, on a busy two-core box).
    An explicit OMP_NUM_THREADS wins; servers the tests start inherit it."""
    import sys

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)

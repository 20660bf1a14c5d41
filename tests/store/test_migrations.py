"""The store's schema is under Alembic: upgrade and downgrade both work, on both databases."""

import sqlalchemy as sa

from hms_resources.store.database import migrate, schema_revision
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import parse_event
from tests.helpers import created

TABLES = {"events", "memory_keys", "memories", "projection_cursors", "concepts", "graph_edges", "memory_tiers", "tier_migrations", "api_keys"}


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"hms_alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_and_upgrade_again(store_url):
    migrate(store_url, "head")
    assert schema_revision(store_url) == "0007"
    assert tables(store_url) == TABLES
    migrate(store_url, "base")
    assert schema_revision(store_url) is None
    assert tables(store_url) == set()
    migrate(store_url, "head")
    assert tables(store_url) == TABLES


def test_opening_a_store_brings_its_schema_to_head_and_keeps_data(store_url):
    store = EventStore(database_url=store_url)
    store.append([parse_event(created("u1", "m1"))])
    store.close()
    assert schema_revision(store_url) == "0007"
    reopened = EventStore(database_url=store_url)
    assert reopened.stats()["events"] == 1
    reopened.close()

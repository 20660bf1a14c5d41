"""Tier partitions start where the data does: the store's first event's day when the definitions load,
an explicit `HMS_TIERS_START_DATE` winning, and the default when the store is empty or unreachable."""

import dagster as dg

from hms_jobs.definitions import defs
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created

DAY = 1440  # minutes; T0 is 2026-03-01 09:00 UTC


def first_tier_day() -> str:
    job = defs().resolve_job_def("tier_migration_job")
    days = job.partitions_def.get_partitions_def_for_dimension("day")
    return days.get_first_partition_key()


def test_partitions_start_on_the_day_of_the_first_event(hms_home, monkeypatch):
    monkeypatch.delenv("HMS_TIERS_START_DATE", raising=False)
    store = EventStore.from_env()
    ingest_records(store, [created("u1", "m1", minutes=12 * DAY), created("u1", "m2", minutes=40 * DAY)])
    store.close()
    assert first_tier_day() == "2026-03-13"


def test_an_explicit_start_date_wins_over_the_store(hms_home, monkeypatch):
    store = EventStore.from_env()
    ingest_records(store, [created("u1", "m1", minutes=12 * DAY)])
    store.close()
    monkeypatch.setenv("HMS_TIERS_START_DATE", "2026-02-01")
    assert first_tier_day() == "2026-02-01"


def test_a_fresh_home_loads_with_the_default_start_and_creates_no_store(hms_home, monkeypatch):
    monkeypatch.delenv("HMS_TIERS_START_DATE", raising=False)
    assert first_tier_day() == "2026-01-01"
    assert not (hms_home / "hms.db").exists()


def test_an_unreachable_store_leaves_the_default_start(hms_home, monkeypatch):
    monkeypatch.delenv("HMS_TIERS_START_DATE", raising=False)
    monkeypatch.setenv("HMS_DATABASE_URL", "postgresql://hms@127.0.0.1:1/none")
    assert first_tier_day() == "2026-01-01"
    assert isinstance(defs(), dg.Definitions)

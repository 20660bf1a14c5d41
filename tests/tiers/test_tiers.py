"""Tier migration through Dagster: deterministic backfills, capacities, promotion, archiving with a
reason, forgetting, the cold archive, the daily schedule and the overflow sensor."""

from datetime import datetime, timezone

import dagster as dg
import pytest
import sqlalchemy as sa

from hms_assets import domain_assets
from hms_assets.tiers.partitions import all_shards_of_days, shard_of, tier_partition_key, user_shard_count
from hms_jobs.definitions import defs
from hms_jobs.schedules import daily_tier_migration
from hms_jobs.sensors import hot_tier_overflow_sensor
from hms_resources.common.limits import file_name
from hms_resources.store.ingest import ingest_records
from hms_resources.tiers.archive import cold_archive_version, read_cold_archive
from hms_resources.tiers.assignment import tier_sizes
from tests.helpers import created, event

ASSETS = domain_assets(["memory_store", "tiers"])
DAY = 1440  # minutes; T0 is 2026-03-01 09:00 UTC


def migrate(store, instance, day, **config):
    run_config = {"ops": {"memory_tier_migration": {"config": config}}} if config else None
    result = dg.materialize(
        [a for a in ASSETS if "cold_archive" not in str(a.keys)],
        selection=dg.AssetSelection.assets("memory_tiers", "tier_migrations"),
        resources={"event_store": store},
        instance=instance,
        tags=all_shards_of_days(day),
        run_config=run_config,
    )
    assert result.success
    return result


def rows(store, table, day):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT * FROM {table} WHERE partition_date = :d ORDER BY user_id, memory_id"), {"d": day}).all()


@pytest.fixture
def history(store):
    records = [created("u1", f"m{i}", f"memory {i}", minutes=i, importance=i / 10) for i in range(10)]
    records += [created("u2", "m0", "other user's memory", minutes=5, importance=0.9)]
    records += [event("accessed", "u1", "m9", 2 * DAY + 5), event("accessed", "u1", "m0", 20 * DAY)]
    records += [event("archived", "u1", "m8", 3 * DAY, reason="superseded"), event("forgotten", "u1", "m7", 21 * DAY)]
    assert ingest_records(store, records).rejected == 0
    return store


def test_backfilling_days_in_any_order_twice_gives_identical_rows(history):
    with dg.instance_for_test() as instance:
        migrate(history, instance, "2026-03-22")
        migrate(history, instance, "2026-03-05")
        first = (rows(history, "memory_tiers", "2026-03-05"), rows(history, "tier_migrations", "2026-03-22"))
        migrate(history, instance, "2026-03-22")
        migrate(history, instance, "2026-03-05")
        assert (rows(history, "memory_tiers", "2026-03-05"), rows(history, "tier_migrations", "2026-03-22")) == first
    assert len(first[0]) == 11


def test_capacities_hold_and_the_overflow_is_archived_with_a_reason(history):
    with dg.instance_for_test() as instance:
        migrate(history, instance, "2026-03-02", hot_capacity=1, warm_capacity=2, cold_capacity=3, hot_threshold=0.5, warm_threshold=0.45)
    sizes = tier_sizes(history, "2026-03-02")
    assert sizes["u1"]["hot"] <= 1 and sizes["u1"]["warm"] <= 2 and sizes["u1"]["cold"] <= 3
    reasons = {r.memory_id: r.reason for r in rows(history, "memory_tiers", "2026-03-02") if r.user_id == "u1"}
    assert any(reason == "beyond cold capacity (3 per user)" for reason in reasons.values())
    assert sizes["u2"]["hot"] == 1


def test_a_cold_memory_accessed_again_is_promoted_and_forgotten_ones_leave_every_tier(history):
    with dg.instance_for_test() as instance:
        migrate(history, instance, "2026-03-21", warm_threshold=0.9, hot_threshold=0.95)
        migrate(history, instance, "2026-03-22", warm_threshold=0.9, hot_threshold=0.95)
    on_21 = {r.memory_id: (r.tier, r.reason) for r in rows(history, "memory_tiers", "2026-03-21") if r.user_id == "u1"}
    assert on_21["m0"] == ("warm", "accessed while cold: promoted")
    assert on_21["m8"] == ("archived", "archived by the user"), "the user's own reason stays with the memory, out of tier rows"
    moves = {r.memory_id: r for r in rows(history, "tier_migrations", "2026-03-22") if r.user_id == "u1"}
    assert (moves["m0"].from_tier, moves["m0"].to_tier) == ("warm", "cold")
    assert (moves["m7"].from_tier, moves["m7"].to_tier, moves["m7"].reason) == ("cold", None, "forgotten: leaves every tier")
    assert "m7" not in {r.memory_id for r in rows(history, "memory_tiers", "2026-03-22")}


def test_cold_archive_holds_the_latest_cold_memories_as_parquet(history):
    with dg.instance_for_test() as instance:
        migrate(history, instance, "2026-03-22", warm_threshold=0.9, hot_threshold=0.95)
        result = dg.materialize(
            ASSETS, selection=dg.AssetSelection.assets("memories", "cold_archive"), resources={"event_store": history}, instance=instance
        )
        assert result.success
    archived = read_cold_archive(history.home / "archive", "u1")
    cold = {r.memory_id for r in rows(history, "memory_tiers", "2026-03-22") if r.user_id == "u1" and r.tier == "cold"}
    assert {r["memory_id"] for r in archived} == cold
    assert all(r["content"].startswith("memory ") for r in archived)
    assert (cold_archive_version(history.home / "archive") / f"user={file_name('u1')}" / "2026-03.parquet").exists()


def test_the_daily_schedule_migrates_the_day_that_just_ended():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 24, 0, 30, tzinfo=timezone.utc))
    requests = daily_tier_migration(context)
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (tier_partition_key("2026-11-23", shard), f"tiers-2026-11-23-shard-{shard}") for shard in range(user_shard_count())
    ]


def test_the_overflow_sensor_asks_for_an_early_migration_when_a_hot_tier_would_overflow(history):
    with dg.instance_for_test() as instance:
        tick = hot_tier_overflow_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={"event_store": history}))
        assert "no tier migration has run yet" in tick.skip_message
        migrate(history, instance, "2026-03-02")
        tick = hot_tier_overflow_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={"event_store": history}))
        assert tick.run_requests == []
        ingest_records(history, [created("u3", f"n{i}", f"new memory {i}", minutes=3 * DAY + i) for i in range(1001)])
        dg.materialize(ASSETS, selection=dg.AssetSelection.assets("memories"), resources={"event_store": history}, instance=instance)
        context = dg.build_sensor_context(
            instance=instance, resources={"event_store": history}, repository_def=defs().get_repository_def()
        )
        tick = hot_tier_overflow_sensor.evaluate_tick(context)
        [request] = tick.run_requests
        assert request.partition_key == tier_partition_key(datetime.now(timezone.utc).date().isoformat(), shard_of("u3"))
        assert request.tags["hms/overflowing_users"] == "u3"
        again = hot_tier_overflow_sensor.evaluate_tick(
            dg.build_sensor_context(
                instance=instance, cursor=tick.cursor, resources={"event_store": history}, repository_def=defs().get_repository_def()
            )
        )
        assert again.run_requests == []

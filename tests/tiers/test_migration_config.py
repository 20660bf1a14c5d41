"""The overflow sensor and the access predictor judge by the config the last tier migration ran with."""

from datetime import datetime, timezone

import dagster as dg

from hms_assets import domain_assets
from hms_assets.tiers.assets import last_migration_config
from hms_assets.tiers.partitions import all_shards_of_days, shard_of, tier_partition_key
from hms_jobs.definitions import defs
from hms_jobs.sensors import hot_tier_overflow_sensor
from hms_resources.store.ingest import ingest_records
from tests.helpers import created

ASSETS = domain_assets(["memory_store", "tiers"])
DAY = 1440


def migrate(store, instance, day, **config):
    result = dg.materialize(
        [a for a in ASSETS if "cold_archive" not in str(a.keys)],
        selection=dg.AssetSelection.assets("memory_tiers", "tier_migrations"),
        resources={"event_store": store}, instance=instance, tags=all_shards_of_days(day),
        run_config={"ops": {"memory_tier_migration": {"config": config}}},
    )
    assert result.success


def test_the_overflow_sensor_uses_the_hot_capacity_the_migration_ran_with(store):
    ingest_records(store, [created("u1", f"m{i}", f"memory {i}", minutes=i) for i in range(4)])
    with dg.instance_for_test() as instance:
        assert last_migration_config(instance).hot_capacity == 1000
        migrate(store, instance, "2026-03-01", hot_capacity=5, use_predictor="off")
        assert last_migration_config(instance).hot_capacity == 5
        ingest_records(store, [created("u1", f"n{i}", f"new memory {i}", minutes=2 * DAY + i) for i in range(6)])
        dg.materialize(ASSETS, selection=dg.AssetSelection.assets("memories"), resources={"event_store": store}, instance=instance)
        context = dg.build_sensor_context(
            instance=instance, resources={"event_store": store}, repository_def=defs().get_repository_def()
        )
        tick = hot_tier_overflow_sensor.evaluate_tick(context)
    [request] = tick.run_requests
    assert request.tags["hms/overflowing_users"] == "u1"
    assert request.partition_key == tier_partition_key(datetime.now(timezone.utc).date().isoformat(), shard_of("u1"))


def test_the_access_predictor_ranks_at_the_hot_capacity_the_migration_ran_with(store):
    ingest_records(store, [created(f"u{u}", f"m{i}", f"memory {i}", minutes=i * DAY // 3) for u in range(2) for i in range(60)])
    with dg.instance_for_test() as instance:
        migrate(store, instance, "2026-03-01", hot_capacity=7, use_predictor="off")
        result = dg.materialize(
            ASSETS, selection=dg.AssetSelection.assets("access_predictor"), resources={"event_store": store}, instance=instance
        )
    metadata = result.asset_materializations_for_node("access_predictor")[0].metadata
    assert metadata["k_per_user"].value.startswith("min(7,")

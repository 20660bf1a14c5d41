"""Sensors: react to what arrives in the event store."""

import hashlib
from datetime import datetime, timezone

import dagster as dg

from hms_assets.tiers.assets import last_migration_config
from hms_assets.tiers.partitions import tier_partition_key, user_shard_count
from hms_jobs.jobs import lora_job, memories_job, tier_migration_job
from hms_resources.common.sharding import user_shard
from hms_resources.lora.adapters import RETRAIN_CHANGED_SHARE, sets_due_for_training
from hms_resources.store.event_store import EventStore
from hms_resources.store.projection import MEMORIES_CURSOR
from hms_resources.tiers.assignment import latest_tier_date, new_live_memories_since, tier_sizes
from hms_resources.tiers.replay import day_window


@dg.sensor(
    job=memories_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a memories run when events beyond the last replayed sequence arrive.",
)
def new_events_sensor(context: dg.SensorEvaluationContext, event_store: EventStore):
    seen = max(int(context.cursor or 0), event_store.projection_cursor(MEMORIES_CURSOR))
    latest = event_store.max_sequence()
    if latest <= seen:
        return dg.SkipReason(f"no new events after sequence {seen}")
    context.update_cursor(str(latest))
    return dg.RunRequest(run_key=f"memories-through-{latest}", tags={"hms/through_sequence": str(latest)})


@dg.sensor(
    job=tier_migration_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Migrates today's tiers early, for the user shards where a user's hot tier would overflow with new memories.",
)
def hot_tier_overflow_sensor(context: dg.SensorEvaluationContext, event_store: EventStore):
    latest = latest_tier_date(event_store)
    if latest is None:
        return dg.SkipReason("no tier migration has run yet")
    capacity = last_migration_config(context.instance).hot_capacity
    hot = {user: sizes["hot"] for user, sizes in tier_sizes(event_store, latest).items()}
    arrived = new_live_memories_since(event_store, day_window(datetime.fromisoformat(latest).date())[1])
    overflowing = sorted(user for user, count in arrived.items() if hot.get(user, 0) + count > capacity)
    if not overflowing:
        return dg.SkipReason(f"every hot tier fits its capacity of {capacity}")
    sequence = event_store.max_sequence()
    if context.cursor == str(sequence):
        return dg.SkipReason(f"already requested a migration for sequence {sequence}")
    context.update_cursor(str(sequence))
    today = datetime.now(timezone.utc).date().isoformat()
    by_shard: dict[int, list[str]] = {}
    shards = user_shard_count()
    for user in overflowing:
        by_shard.setdefault(user_shard(user, shards), []).append(user)
    return [
        dg.RunRequest(
            run_key=f"hot-overflow-{today}-{sequence}-shard-{shard}",
            partition_key=tier_partition_key(today, shard),
            tags={"hms/overflowing_users": ",".join(users[:20])},
        )
        for shard, users in sorted(by_shard.items())
    ]


@dg.sensor(
    job=lora_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains when an approved LoRA candidate set is new, or has changed enough since its adapter was trained.",
)
def lora_training_sensor(context: dg.SensorEvaluationContext, event_store: EventStore):
    due = sets_due_for_training(event_store.home)
    if not due:
        return dg.SkipReason(f"no approved candidate set is new or changed by {RETRAIN_CHANGED_SHARE:.0%} since its adapter was trained")
    key = hashlib.sha256("\n".join(f"{d['set_id']}:{d['fingerprint']}" for d in due).encode()).hexdigest()[:16]
    for d in due:
        context.log.info(f"{d['set_id']}: {d['reason']}")
    return dg.RunRequest(run_key=f"lora-{key}", tags={"hms/lora_sets": ",".join(d["set_id"] for d in due)[:1000]})


hms_automation_sensor = dg.AutomationConditionSensorDefinition(
    "hms_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the assets whose automation conditions ask for it (the semantic layer after memories).",
)

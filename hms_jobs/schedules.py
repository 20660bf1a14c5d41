"""Schedules: the daily tier migration and the weekly re-evaluation of the LoRA registry."""

from datetime import timedelta

import dagster as dg

from hms_assets.tiers.partitions import tier_partition_key, user_shard_count
from hms_jobs.jobs import lora_evaluation_job, tier_migration_job


@dg.schedule(
    job=tier_migration_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Migrates tiers for the day that just ended: one run per user shard, so the day fans out over workers.",
)
def daily_tier_migration(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return [
        dg.RunRequest(run_key=f"tiers-{day}-shard-{shard}", partition_key=tier_partition_key(day, shard))
        for shard in range(user_shard_count())
    ]


@dg.schedule(
    job=lora_evaluation_job,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-evaluates the LoRA registry every Monday: promotion rules and the adapter comparison on current probes.",
)
def weekly_registry_evaluation(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"lora-evaluation-{context.scheduled_execution_time.date().isoformat()}")

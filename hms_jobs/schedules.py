"""Schedules: the daily tier migration."""

from datetime import timedelta

import dagster as dg

from hms_jobs.jobs import tier_migration_job


@dg.schedule(
    job=tier_migration_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Migrates tiers for the day that just ended.",
)
def daily_tier_migration(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"tiers-{day}", partition_key=day)

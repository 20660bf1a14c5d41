"""The Dagster entry point that `workspace.yaml` loads."""

import dagster as dg

from hms_assets import domain_assets
from hms_jobs.executors import job_executor
from hms_jobs.jobs import cold_archive_job, lora_evaluation_job, lora_job, main_job, memories_job, tier_migration_job
from hms_jobs.resources import resources
from hms_jobs.schedules import daily_tier_migration, weekly_registry_evaluation
from hms_jobs.sensors import hms_automation_sensor, hot_tier_overflow_sensor, lora_training_sensor, new_events_sensor
from hms_resources.common.environment import graph_store_configured


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=domain_assets(graph_sync=graph_store_configured()),
        jobs=[memories_job, main_job, tier_migration_job, cold_archive_job, lora_job, lora_evaluation_job],
        schedules=[daily_tier_migration, weekly_registry_evaluation],
        sensors=[new_events_sensor, hot_tier_overflow_sensor, lora_training_sensor, hms_automation_sensor],
        resources=resources(),
        executor=job_executor(),
    )

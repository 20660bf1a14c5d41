"""The Dagster entry point that `workspace.yaml` loads."""

import dagster as dg

from hms_assets import concepts, embeddings, graph, lora, tiers
from hms_assets import memories as memories_domain
from hms_jobs.jobs import cold_archive_job, lora_evaluation_job, lora_job, main_job, memories_job, tier_migration_job
from hms_jobs.resources import graph_store_configured, resources
from hms_jobs.schedules import daily_tier_migration, weekly_registry_evaluation
from hms_jobs.sensors import hms_automation_sensor, hot_tier_overflow_sensor, lora_training_sensor, new_events_sensor


@dg.definitions
def defs() -> dg.Definitions:
    domains = [memories_domain, embeddings, concepts, graph, tiers, lora]
    if graph_store_configured():
        from hms_assets import neo4j_graph

        domains.append(neo4j_graph)
    return dg.Definitions.merge(
        dg.Definitions(
            assets=dg.load_assets_from_modules(domains),
            asset_checks=dg.load_asset_checks_from_modules(domains),
        ),
        dg.Definitions(
            jobs=[memories_job, main_job, tier_migration_job, cold_archive_job, lora_job, lora_evaluation_job],
            schedules=[daily_tier_migration, weekly_registry_evaluation],
            sensors=[new_events_sensor, hot_tier_overflow_sensor, lora_training_sensor, hms_automation_sensor],
            resources=resources(),
        ),
    )

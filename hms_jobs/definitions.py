"""The Dagster entry point that `workspace.yaml` loads."""

import dagster as dg

from hms_assets import concepts, embeddings, graph
from hms_assets import memories as memories_domain
from hms_jobs.jobs import main_job, memories_job
from hms_jobs.resources import graph_store_configured, resources
from hms_jobs.sensors import new_events_sensor


@dg.definitions
def defs() -> dg.Definitions:
    domains = [memories_domain, embeddings, concepts, graph]
    if graph_store_configured():
        from hms_assets import neo4j_graph

        domains.append(neo4j_graph)
    return dg.Definitions.merge(
        dg.Definitions(
            assets=dg.load_assets_from_modules(domains),
            asset_checks=dg.load_asset_checks_from_modules(domains),
        ),
        dg.Definitions(jobs=[memories_job, main_job], sensors=[new_events_sensor], resources=resources()),
    )

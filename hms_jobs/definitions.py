"""The Dagster entry point that `workspace.yaml` loads."""

import dagster as dg

from hms_assets import memories as memories_domain
from hms_jobs.jobs import main_job, memories_job
from hms_jobs.resources import resources
from hms_jobs.sensors import new_events_sensor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.Definitions(
            assets=dg.load_assets_from_modules([memories_domain]),
            asset_checks=dg.load_asset_checks_from_modules([memories_domain]),
        ),
        dg.Definitions(jobs=[memories_job, main_job], sensors=[new_events_sensor], resources=resources()),
    )

"""Sensors: react to what arrives in the event store."""

import dagster as dg

from hms_jobs.jobs import memories_job
from hms_resources.event_store import EventStore
from hms_resources.projection import MEMORIES_CURSOR


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

"""The run queue of both instance configs: backfills take at most half the run slots and one backfill
at most a quarter, so a tenant's long backfill never starves the schedules or another backfill.

Runs are queued on a real instance and Dagster's own queue daemon picks the ones it would launch."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from hms_jobs.instance import EMBEDDED_INSTANCE, POSTGRES_INSTANCE

BACKFILL_TAG = "dagster/backfill"
ORIGIN = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("hms"), "__repository__").get_job_origin("tier_migration_job")


def queue(instance: dg.DagsterInstance, tags: dict[str, str], status=dg.DagsterRunStatus.QUEUED) -> str:
    run = dg.DagsterRun(job_name="tier_migration_job", run_id=str(uuid.uuid4()), status=status, tags=tags, remote_job_origin=ORIGIN)
    return instance.add_run(run).run_id


def dequeued(instance: dg.DagsterInstance) -> list[dict[str, str]]:
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    return [run.tags for run in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), fixed_iteration_time=time.time())]


@pytest.fixture(params=["embedded", "postgres"])
def instance(request, tmp_path: Path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    if request.param == "postgres":
        monkeypatch.setenv("HMS_DAGSTER_PG_URL", request.getfixturevalue("postgres_url"))
    shutil.copyfile(POSTGRES_INSTANCE if request.param == "postgres" else EMBEDDED_INSTANCE, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as found:
        yield found


def test_a_backfill_takes_at_most_its_share_of_run_slots_and_the_schedule_still_starts(instance):
    slots = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
    for tenant in ("tenant-a", "tenant-b", "tenant-c"):
        for _ in range(slots):
            queue(instance, {BACKFILL_TAG: tenant})
    scheduled = [queue(instance, {"dagster/schedule_name": "daily_tier_migration"}) for _ in range(2)]
    assert len(scheduled) <= slots // 2

    picked = dequeued(instance)
    backfills = [tags[BACKFILL_TAG] for tags in picked if BACKFILL_TAG in tags]
    assert len(backfills) == slots // 2, "backfills take half the slots"
    assert max(backfills.count(tenant) for tenant in set(backfills)) == slots // 4, "one backfill takes a quarter"
    assert sum(1 for tags in picked if "dagster/schedule_name" in tags) == len(scheduled), "queued behind every backfill run, the schedule starts"


def test_running_backfills_leave_their_share_free(instance):
    slots = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
    for _ in range(slots // 2):
        queue(instance, {BACKFILL_TAG: "tenant-a"}, status=dg.DagsterRunStatus.STARTED)
    queue(instance, {BACKFILL_TAG: "tenant-b"})
    queue(instance, {"dagster/sensor_name": "new_events_sensor"})
    assert dequeued(instance) == [{"dagster/sensor_name": "new_events_sensor"}]

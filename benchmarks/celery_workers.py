"""One day of tier migrations, one run per user shard (as the daily schedule requests them), on Celery
workers against the in-process executor, on the same PostgreSQL store, in one run.

In process: the shard runs one after another in this process (no dispatch at all). Celery: every
shard's run launched at once in a process of its own (what the daemon's run launcher does), their
steps executed by `--workers` `hms worker` processes of one slot each over RabbitMQ. Where the time
goes comes from the event log: run process start, queue wait, the worker's set-up of a step, the
step's compute, and the hand-back to the run. Both executions must leave identical tiers.

Prints one JSON object; the per-step overhead (warm dispatch, set-up, hand-back) and compute size a
larger deployment: wall ≈ run start + cold dispatch + ceil(shards / workers) x (overhead + compute)."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from benchmarks.common import REPO_ROOT, print_json, temporary_postgres_database
from hms_assets.tiers.partitions import tier_partition_key, user_shard_count
from hms_jobs.executors import BROKER_VARIABLE, DEFAULT_BROKER, EXECUTOR_VARIABLE, QUEUE_VARIABLE
from hms_jobs.instance import POSTGRES_INSTANCE
from hms_resources.datasets.synthetic import generate_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from hms_resources.store.projection import refresh_memories

JOB = "tier_migration_job"
PHASES = ("run_start_s", "wait_for_worker_s", "dispatch_s", "dispatch_cold_s", "dispatch_warm_s", "worker_setup_s", "compute_s", "hand_back_s")
"""A shard's run on Celery, from the event log: its process started (launch to RUN_START), its step
waited for a busy worker, reached an idle worker and was planned there ("Executing steps ... in celery
worker"; a worker's first step also loads the definitions there: cold, the others warm), had its
resources set up, computed, and its result reached the run (STEP_SUCCESS to RUN_SUCCESS)."""
RUN = """
import sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

root, job_name, partition = sys.argv[1:4]
job = ReconstructableRepository.for_module("hms_jobs.definitions", "defs", root).get_reconstructable_job(job_name)
with dg.DagsterInstance.get() as instance:
    result = dg.execute_job(job, instance, tags={"dagster/partition": partition, "hms/bench": "celery"})
sys.exit(0 if result.success else 1)
"""
"""A shard's run worker, as the run launcher starts it."""


def build_store(url: str, home: Path, events: int, users: int) -> tuple[EventStore, str]:
    """About `events` events over a year ending yesterday, the memories table up to date, and the last day of events."""
    store = EventStore(database_url=url, hms_home=str(home))
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=366)
    history = generate_events(users=users, sessions_per_user=max(3, int(events / (users * 5.5)) + 1), seed=5, start=start, days=365)
    batch: list[dict] = []
    for record in history:
        batch.append(record)
        if len(batch) == 20_000:
            ingest_records(store, batch)
            batch = []
    ingest_records(store, batch)
    refresh_memories(store)
    _, last = store.event_time_range()
    return store, last[:10]


def records(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    return [e for e in instance.all_logs(run_id) if e.dagster_event is not None]


def first(entries: list[dg.EventLogEntry], event_type: dg.DagsterEventType, text: str = "") -> float:
    return next(e.timestamp for e in entries if e.dagster_event.event_type == event_type and text in (e.dagster_event.message or ""))


def tiers_outcome(instance: dg.DagsterInstance, run_id: str) -> dict:
    """The figures a shard's run materialized, to compare both executions."""
    found = {}
    for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        metadata = e.asset_materialization.metadata
        found[e.asset_materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in metadata.items() if isinstance(v.value, (int, float, str)) and k != "transitions"
        }
    return found


def in_process(instance: dg.DagsterInstance, partitions: list[str]) -> dict:
    from hms_jobs.definitions import defs

    job = defs().resolve_job_def(JOB)
    start = time.perf_counter()
    runs = [job.execute_in_process(instance=instance, partition_key=key, tags={"hms/bench": "in_process"}) for key in partitions]
    wall = time.perf_counter() - start
    assert all(r.success for r in runs)
    compute = []
    for run in runs:
        entries = records(instance, run.run_id)
        compute.append(first(entries, dg.DagsterEventType.STEP_SUCCESS) - first(entries, dg.DagsterEventType.STEP_START))
    return {"wall_s": wall, "compute_s": compute, "outcome": {key: tiers_outcome(instance, r.run_id) for key, r in zip(partitions, runs)}}


def worker_ready(names: list[str], timeout: float = 60) -> None:
    from hms_jobs.executors import celery_app

    app = celery_app()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {name for reply in app.control.ping(destination=names, timeout=1) for name in reply}
        if answered >= set(names):
            return
    raise RuntimeError(f"workers {names} did not answer a ping within {timeout}s")


def on_celery(instance: dg.DagsterInstance, partitions: list[str], workers: int, env: dict[str, str], logs: Path) -> dict:
    import socket

    names = [f"hms-bench-{n}@{socket.gethostname()}" for n in range(workers)]
    started = []
    try:
        for name in names:
            with open(logs / f"{name}.log", "w") as log:
                started.append(subprocess.Popen([sys.executable, "-m", "hms_jobs.cli", "worker", "-c", "1", "-n", name, "-l", "WARNING"],
                                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        worker_ready(names)
        launched = time.time()
        start = time.perf_counter()
        runs = []
        for key in partitions:
            with open(logs / f"run-{len(runs)}.log", "w") as log:
                runs.append(subprocess.Popen([sys.executable, "-c", RUN, str(REPO_ROOT), JOB, key], cwd=REPO_ROOT, env=env, stdout=log,
                                             stderr=subprocess.STDOUT))
        codes = [run.wait() for run in runs]
        wall = time.perf_counter() - start
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait()
    if any(codes):
        raise RuntimeError(f"celery runs failed: exit codes {codes}; logs in {logs}")
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    outcome = {}
    steps = []
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"hms/bench": "celery"})):
        entries = records(instance, run.run_id)
        picked = next(e for e in entries if "in celery worker" in (e.dagster_event.message or ""))
        steps.append({
            "worker": picked.dagster_event.engine_event_data.metadata["Celery worker"].value,
            "run_start": first(entries, dg.DagsterEventType.RUN_START),
            "submitted": first(entries, dg.DagsterEventType.ENGINE_EVENT, "Submitting celery task"),
            "picked": picked.timestamp,
            "step_start": first(entries, dg.DagsterEventType.STEP_START),
            "step_end": first(entries, dg.DagsterEventType.STEP_SUCCESS),
            "run_end": first(entries, dg.DagsterEventType.RUN_SUCCESS),
        })
        outcome[run.tags["dagster/partition"]] = tiers_outcome(instance, run.run_id)
    free_at: dict[str, float] = {}
    for step in sorted(steps, key=lambda s: s["picked"]):
        ready = max(step["submitted"], free_at.get(step["worker"], 0.0))
        phases["run_start_s"].append(step["run_start"] - launched)
        phases["wait_for_worker_s"].append(ready - step["submitted"])
        phases["dispatch_s"].append(step["picked"] - ready)
        phases["dispatch_warm_s" if step["worker"] in free_at else "dispatch_cold_s"].append(step["picked"] - ready)
        phases["worker_setup_s"].append(step["step_start"] - step["picked"])
        phases["compute_s"].append(step["step_end"] - step["step_start"])
        phases["hand_back_s"].append(step["run_end"] - step["step_end"])
        free_at[step["worker"]] = step["step_end"]
    return {"wall_s": wall, "phases": phases, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    broker = os.environ.get(BROKER_VARIABLE) or DEFAULT_BROKER
    queue = f"hms-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="hms-bench-celery-"))
    with temporary_postgres_database() as store_url, temporary_postgres_database() as dagster_url:
        if store_url is None or dagster_url is None:
            print_json({"error": "PostgreSQL is not reachable (HMS_BENCH_DATABASE_URL)"})
            sys.exit(1)
        dagster_home = work / "dagster"
        dagster_home.mkdir()
        shutil.copyfile(POSTGRES_INSTANCE, dagster_home / "dagster.yaml")
        env_vars = {"HMS_HOME": str(work / "home"), "HMS_DATABASE_URL": store_url, "DAGSTER_HOME": str(dagster_home),
                    "HMS_DAGSTER_PG_URL": dagster_url}
        os.environ.update(env_vars)
        os.environ.pop(EXECUTOR_VARIABLE, None)
        built = time.perf_counter()
        store, day = build_store(store_url, work / "home", args.events, args.users)
        memories, stored = store.memory_summary(), store.max_sequence()
        store.close()
        built = time.perf_counter() - built
        partitions = [str(tier_partition_key(day, shard)) for shard in range(user_shard_count())]
        env = {**os.environ, EXECUTOR_VARIABLE: "celery", QUEUE_VARIABLE: queue, BROKER_VARIABLE: broker}
        try:
            with dg.DagsterInstance.get() as instance:
                local = in_process(instance, partitions)
                os.environ.update({QUEUE_VARIABLE: queue, BROKER_VARIABLE: broker})
                celery = on_celery(instance, partitions, args.workers, env, work)
        finally:
            import kombu

            with kombu.Connection(broker) as connection:
                connection.default_channel.queue_delete(queue)
    shutil.rmtree(work, ignore_errors=True)

    phases = {name: round(statistics.mean(values), 3) for name, values in celery["phases"].items() if values}
    overhead = phases.get("dispatch_warm_s", phases["dispatch_s"]) + phases["worker_setup_s"] + phases["hand_back_s"]
    compute = statistics.mean(celery["phases"]["compute_s"])
    rounds = math.ceil(len(partitions) / args.workers)
    print_json({
        "job": JOB,
        "day": day,
        "events": stored,
        "users": args.users,
        "live_memories": memories["live"],
        "user_shards": len(partitions),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "store_build_s": round(built, 2),
        "in_process": {"wall_s": round(local["wall_s"], 2), "step_compute_mean_s": round(statistics.mean(local["compute_s"]), 3),
                       "step_compute_total_s": round(sum(local["compute_s"]), 2)},
        "celery": {"wall_s": round(celery["wall_s"], 2), "per_step_mean": phases,
                   "step_compute_total_s": round(sum(celery["phases"]["compute_s"]), 2)},
        "celery_over_in_process_wall": round(celery["wall_s"] / local["wall_s"], 2),
        "step_compute_celery_over_in_process": round(compute / statistics.mean(local["compute_s"]), 2),
        "per_step_overhead_s": round(overhead, 3),
        "per_step_compute_s": round(compute, 3),
        "model_wall_s": round(phases["run_start_s"] + phases["dispatch_cold_s"] + rounds * (overhead + compute), 2),
        "identical_tiers": local["outcome"] == celery["outcome"],
    })


if __name__ == "__main__":
    main()

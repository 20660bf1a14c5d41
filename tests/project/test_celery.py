"""Steps on Celery workers (`HMS_EXECUTOR=celery`, `hms worker`): they run in a worker's process and
give what an in-process run gives; a worker killed mid-step neither loses the step nor hangs the run,
and a step whose process is killed fails its run, which re-executes from the failure exactly.

Real RabbitMQ, real worker processes, the Dagster instance in a fresh PostgreSQL database; each test
has a queue of its own, deleted before and after, so a killed run's task never reaches another test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from hms_assets.lora.assets import TRAINING_QUEUE
from hms_jobs.executors import BROKER_VARIABLE, DEFAULT_BROKER, EXECUTOR_VARIABLE, QUEUE_VARIABLE
from hms_jobs.instance import POSTGRES_INSTANCE
from hms_jobs.run_recovery import process_alive
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_path
from tests.conftest import unavailable
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
BROKER = os.environ.get(BROKER_VARIABLE) or DEFAULT_BROKER
JOB = "memories_job"
HELD_STEP = "memories"
POOL = "hms_memory_store"
RUN_TIMEOUT = 60
SECRET = "Br0kerSecretPw"

pytestmark = pytest.mark.timeout(180)

HOLD_WORKER = """
import os, sys, time
from pathlib import Path
import hms_assets.memory_store.assets

def hold(*_args, **_kwargs):
    Path(sys.argv[1]).write_text(str(os.getpid()))
    time.sleep(3600)

hms_assets.memory_store.assets.refresh_memories = hold
from hms_jobs.cli import main
main(["worker", *sys.argv[2:]])
"""
"""`hms worker` whose `memories` step stops inside the step, saying its pid, until it is killed."""

RUN = """
import sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

root, job_name, tag, parent = sys.argv[1:5]
job = ReconstructableRepository.for_module("hms_jobs.definitions", "defs", root).get_reconstructable_job(job_name)
with dg.DagsterInstance.get() as instance:
    options = dg.ReexecutionOptions.from_failure(parent, instance) if parent else None
    result = dg.execute_job(job, instance, tags={"hms/test": tag}, reexecution_options=options, raise_on_error=False)
sys.exit(0 if result.success else 1)
"""
"""The run worker: what a run launcher starts for a run, orchestrating its steps through the broker."""


class Services:
    """The processes a test starts (each in a session of its own, killed whole at the end), in the
    environment of a Celery deployment whose steps go to the test's own queue."""

    def __init__(self, tmp_path: Path, env: dict[str, str], queue: str):
        self.tmp_path, self.env, self.queue = tmp_path, env, queue
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}-{len(self.started)}.log", "w")
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        process.log = Path(log.name)
        log.close()
        self.started.append(process)
        return process

    def worker(self, name: str) -> subprocess.Popen:
        return self.start(name, ["-m", "hms_jobs.cli", "worker", "--concurrency", "1", "--name", f"{name}@%h"])

    def holding_worker(self, name: str, marker: Path) -> subprocess.Popen:
        return self.start(name, ["-c", HOLD_WORKER, str(marker), "--concurrency", "1", "--name", f"{name}@%h"])

    def run(self, tag: str, reexecute: str = "") -> subprocess.Popen:
        return self.start("run", ["-c", RUN, str(ROOT), JOB, tag, reexecute])

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def tail(process: subprocess.Popen) -> str:
    return process.log.read_text()[-4000:]


def queue_depth(queue: str) -> int:
    """Messages ready in `queue` (0 if it does not exist)."""
    import kombu

    with kombu.Connection(BROKER) as connection:
        try:
            return connection.default_channel.queue_declare(queue, passive=True).message_count
        except connection.channel_errors:
            return 0


def delete_queue(queue: str) -> None:
    import kombu

    with kombu.Connection(BROKER) as connection:
        connection.default_channel.queue_delete(queue)


@pytest.fixture(scope="session")
def broker() -> str:
    import kombu

    try:
        with kombu.Connection(BROKER, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        unavailable(f"RabbitMQ is not reachable at {kombu.Connection(BROKER).as_uri()}: {exc}")
    return BROKER


@pytest.fixture
def deployment(broker, postgres_url, tmp_path, monkeypatch):
    """A Dagster instance in PostgreSQL, two stores holding the same events (one for the in-process
    run, one for the workers), and the test's queue."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(POSTGRES_INSTANCE, dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("HMS_DAGSTER_PG_URL", postgres_url)
    monkeypatch.delenv("HMS_DATABASE_URL", raising=False)
    monkeypatch.delenv(EXECUTOR_VARIABLE, raising=False)
    homes = {}
    for name in ("in_process", "celery"):
        homes[name] = tmp_path / name
        store = EventStore(hms_home=str(homes[name]))
        ingest_path(store, SAMPLE_EVENTS)
        store.close()
    queue = f"hms-test-{uuid.uuid4().hex[:8]}"
    delete_queue(queue)
    env = {**os.environ, "HMS_HOME": str(homes["celery"]), EXECUTOR_VARIABLE: "celery", QUEUE_VARIABLE: queue, BROKER_VARIABLE: broker}
    services = Services(tmp_path, env, queue)
    with dg.DagsterInstance.get() as instance:
        yield services, instance, homes
    services.stop_all()
    delete_queue(queue)


def test_jobs_keep_dagsters_default_executor_unless_celery_is_configured(monkeypatch):
    from hms_jobs.definitions import defs

    monkeypatch.delenv(EXECUTOR_VARIABLE, raising=False)
    assert defs().resolve_job_def(JOB).executor_def.name == "multi_or_in_process_executor"
    monkeypatch.setenv(EXECUTOR_VARIABLE, "celery")
    definitions = defs()
    assert {job.executor_def.name for job in definitions.resolve_all_job_defs() if not job.name.startswith("__")} == {"hms_celery"}
    monkeypatch.setenv(EXECUTOR_VARIABLE, "kubernetes")
    with pytest.raises(ValueError, match="HMS_EXECUTOR='kubernetes': expected one of multiprocess, celery"):
        defs()


def test_the_broker_password_never_reaches_the_job_snapshot(monkeypatch):
    from hms_jobs.definitions import defs

    monkeypatch.setenv(EXECUTOR_VARIABLE, "celery")
    monkeypatch.setenv(BROKER_VARIABLE, f"amqp://hms:{SECRET}@broker.internal:5672//")
    job = defs().resolve_job_def("lora_job")
    assert SECRET not in serialize_value(job.get_job_snapshot())
    assert SECRET not in repr(job.executor_def)


def test_only_the_steps_that_load_the_base_model_go_to_the_training_queue():
    from hms_jobs.definitions import defs

    graph = defs().resolve_asset_graph()
    queues = {key.to_user_string(): a.op.tags.get("dagster-celery/queue") for a in graph.assets_defs if a.is_executable for key in a.keys}
    assert {key for key, queue in queues.items() if queue} == {"trained_adapters", "lora_registry", "adapter_comparison"}
    assert set(queues.values()) == {None, TRAINING_QUEUE}


def events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[dg.EventLogEntry]:
    return list(instance.all_logs(run_id, of_type=event_type))


def outcome(instance: dg.DagsterInstance, run_id: str, home: Path) -> dict:
    """What a run left: each materialization's metadata (less the store's own name), each check's
    verdict and figures, and the memories table itself."""
    materialized = {
        e.asset_materialization.asset_key.to_user_string(): {k: v.value for k, v in e.asset_materialization.metadata.items() if k != "store"}
        for e in events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    }
    checks = {
        e.dagster_event.event_specific_data.check_name: (e.dagster_event.event_specific_data.passed,
                                                         {k: v.value for k, v in e.dagster_event.event_specific_data.metadata.items()})
        for e in events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    }
    store = EventStore(hms_home=str(home))
    memories = sorted((asdict(m) for m in store.read_memories(include_forgotten=True)), key=lambda m: (m["user_id"], m["memory_id"]))
    store.close()
    return {"materialized": materialized, "checks": checks, "memories": memories}


@pytest.fixture
def in_process(deployment, monkeypatch) -> dict:
    """The same job on the same events, executed in the test's process."""
    from hms_jobs.definitions import defs

    _, instance, homes = deployment
    monkeypatch.setenv("HMS_HOME", str(homes["in_process"]))
    result = defs().resolve_job_def(JOB).execute_in_process(instance=instance)
    assert result.success
    found = outcome(instance, result.run_id, homes["in_process"])
    assert found["materialized"]["memories"]["live"] > 0 and len(found["checks"]) == 3
    return found


def finished_run(instance: dg.DagsterInstance, run: subprocess.Popen, tag: str) -> dg.DagsterRun:
    try:
        run.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not finish in {RUN_TIMEOUT}s:\n{tail(run)}") from None
    [found] = instance.get_runs(filters=dg.RunsFilter(tags={"hms/test": tag}))
    return found


def started_run(instance: dg.DagsterInstance, tag: str) -> dg.DagsterRun:
    return wait_for(lambda: next(iter(instance.get_runs(filters=dg.RunsFilter(tags={"hms/test": tag}))), None), 60, "the run")


def step_pids(instance: dg.DagsterInstance, run_id: str, event_type=dg.DagsterEventType.STEP_START) -> list[tuple[str, int]]:
    return [(e.step_key, e.dagster_event.pid) for e in events(instance, run_id, event_type)]


def pool_processes(worker: subprocess.Popen) -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()}


def test_steps_run_in_the_worker_and_give_what_an_in_process_run_gives(deployment, in_process):
    services, instance, homes = deployment
    worker = services.worker("hms-test-worker")
    run = services.run("plain")
    finished = finished_run(instance, run, "plain")
    assert finished.status == dg.DagsterRunStatus.SUCCESS, tail(run) + tail(worker)

    started = step_pids(instance, finished.run_id)
    assert {key for key, _ in started} == {"memories", "memories_live_memories_have_content", "forget_purge",
                                            "memories_forgotten_memories_keep_no_content", "memories_memory_counts_match_store"}
    [pool] = pool_processes(worker)
    assert {pid for _, pid in started} == {pool}, "every step ran in the worker's pool process"
    assert pool not in (os.getpid(), run.pid)
    handed = [e for e in events(instance, finished.run_id, dg.DagsterEventType.ENGINE_EVENT) if "in celery worker" in e.dagster_event.message]
    assert {e.dagster_event.engine_event_data.metadata["Celery worker"].value.split("@")[0] for e in handed} == {"hms-test-worker"}
    submitted = [e.dagster_event.message for e in events(instance, finished.run_id, dg.DagsterEventType.ENGINE_EVENT)
                 if e.dagster_event.message.startswith("Submitting celery task")]
    assert len(submitted) == 5 and all(f'to queue "{services.queue}"' in line for line in submitted)

    assert outcome(instance, finished.run_id, homes["celery"]) == in_process


def hold_a_step(services, tmp_path, run_name: str):
    """Start a worker whose held step waits, and a run that reaches it: (worker, run, the step's pid)."""
    marker = tmp_path / "holding"
    held = services.holding_worker("hms-test-held", marker)
    run = services.run(run_name)
    wait_for(lambda: marker.exists() or held.poll() is not None or run.poll() is not None, 60, "the step to start")
    assert held.poll() is None and run.poll() is None, tail(held) + tail(run)
    return held, run, int(marker.read_text())


def test_a_worker_killed_mid_step_hands_the_step_to_the_next_worker_and_the_run_completes(deployment, in_process, tmp_path):
    services, instance, homes = deployment
    held, run, step_pid = hold_a_step(services, tmp_path, "killed-worker")

    held.send_signal(signal.SIGKILL)
    held.wait()
    wait_for(lambda: not process_alive(step_pid), 10, "the step's process to die with its worker")
    assert wait_for(lambda: queue_depth(services.queue) == 1, 10, "the broker to take the unacknowledged step back")
    current = instance.get_run_by_id(started_run(instance, "killed-worker").run_id)
    assert current.status == dg.DagsterRunStatus.STARTED and run.poll() is None, "the run waits for a worker, it does not fail"

    services.worker("hms-test-next")
    finished = finished_run(instance, run, "killed-worker")
    assert finished.status == dg.DagsterRunStatus.SUCCESS, tail(run)
    starts = [pid for key, pid in step_pids(instance, finished.run_id) if key == HELD_STEP]
    assert starts[0] == step_pid and len(starts) == 2 and starts[1] != step_pid
    assert [key for key, _ in step_pids(instance, finished.run_id, dg.DagsterEventType.STEP_SUCCESS)].count(HELD_STEP) == 1
    assert outcome(instance, finished.run_id, homes["celery"]) == in_process
    assert queue_depth(services.queue) == 0


def test_a_step_killed_in_its_worker_fails_the_run_and_reexecution_from_failure_completes_exactly(deployment, in_process, tmp_path):
    """The lost step leaves no failure event, so Dagster keeps its pool slot claimed: an operator frees
    the failed run's slots (the run's "Free concurrency slots" in the UI; the daemon does it
    `free_slots_after_run_end_seconds` after the run) before re-executing it."""
    services, instance, homes = deployment
    held, run, step_pid = hold_a_step(services, tmp_path, "killed-step")

    os.kill(step_pid, signal.SIGKILL)
    failed = finished_run(instance, run, "killed-step")
    assert failed.status == dg.DagsterRunStatus.FAILURE
    [failure] = events(instance, failed.run_id, dg.DagsterEventType.RUN_FAILURE)
    assert "WorkerLostError" in failure.dagster_event.event_specific_data.error.to_string()
    assert queue_depth(services.queue) == 0, "the failed step is not handed to another worker"
    assert outcome(instance, failed.run_id, homes["celery"])["materialized"] == {}

    claimed = instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
    assert {slot.run_id for slot in claimed} == {failed.run_id}, "Dagster frees no slot of a step lost without a failure event"
    instance.event_log_storage.free_concurrency_slots_for_run(failed.run_id)

    held.send_signal(signal.SIGKILL)
    held.wait()
    services.worker("hms-test-next")
    rerun = services.run("reexecuted", reexecute=failed.run_id)
    finished = finished_run(instance, rerun, "reexecuted")
    assert finished.status == dg.DagsterRunStatus.SUCCESS, tail(rerun)
    assert finished.parent_run_id == failed.run_id
    assert outcome(instance, finished.run_id, homes["celery"]) == in_process

"""A killed `hms` leaves nothing that blocks the next: its runs are failed and their pool slots freed,
a run waiting for a slot says which run holds it, and a live run is never touched."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.instance.config import dagster_instance_config

from hms_jobs.cli import main
from hms_jobs.instance import EMBEDDED_INSTANCE, POSTGRES_INSTANCE, prepare_dagster_home
from hms_jobs.run_recovery import HOST_TAG, PID_TAG, PROCESS_START_TAG, process_tags, recover_dead_runs
from hms_resources.datasets import SAMPLE_EVENTS
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
POOL = "hms_memory_store"

HOLD_MEMORIES = """
import sys, time
from pathlib import Path
import hms_assets.memory_store.assets

def hold(*_args, **_kwargs):
    Path(sys.argv[1]).write_text("holding")
    time.sleep(3600)

hms_assets.memory_store.assets.refresh_memories = hold
from hms_jobs.cli.run import run_jobs
run_jobs([("memories_job", None)])
"""

RUN_MEMORIES = "import sys; from hms_jobs.cli.run import run_jobs; sys.exit(0 if run_jobs([('memories_job', None)]) else 1)"


@pytest.fixture
def python():
    """Start `python -c SCRIPT ARGS...`; whatever still runs when the test ends is killed."""
    started: list[subprocess.Popen] = []

    def start(script: str, *args: str) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env={**os.environ}, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            kill(process)


def holders(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


@pytest.fixture
def sample_home(hms_home: Path, tmp_path: Path) -> Path:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(SAMPLE_EVENTS.read_text().splitlines(keepends=True)[:20]))
    result = CliRunner().invoke(main, ["ingest", str(events), "--json"])
    assert result.exit_code == 0, result.output
    prepare_dagster_home()
    return hms_home


def start_holder(python, tmp_path: Path, instance: dg.DagsterInstance) -> tuple[subprocess.Popen, dg.DagsterRun]:
    """A `run_jobs` of `memories_job` stuck inside the step, so that its run holds the pool's slot."""
    marker = tmp_path / "holding"
    holder = python(HOLD_MEMORIES, str(marker))
    wait_for(lambda: marker.exists() or holder.poll() is not None, 120, "the holder to claim the slot")
    assert holder.poll() is None, holder.communicate()[1][-3000:]
    [run] = instance.get_runs(filters=dg.RunsFilter(job_name="memories_job", statuses=[dg.DagsterRunStatus.STARTED]))
    assert run.tags[PID_TAG] == str(holder.pid)
    assert holders(instance) == {run.run_id}
    return holder, run


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()


def assert_recovered(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert run.run_id not in holders(instance)
    info = instance.event_log_storage.get_concurrency_info(POOL)
    assert run.run_id not in {step.run_id for step in info.pending_steps}
    [failure] = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE]
    assert f"pid {run.tags[PID_TAG]}" in failure.dagster_event.message


def cleanup_line(run: dg.DagsterRun) -> str:
    return (f"hms: run {run.run_id} of memories_job was left STARTED by a process that is gone (pid {run.tags[PID_TAG]}); "
            f"marked FAILED, freed its slots in pool(s) {POOL}")


def test_the_next_run_fails_a_killed_run_frees_its_slot_and_completes(sample_home, python, tmp_path):
    with dg.DagsterInstance.get() as instance:
        holder, dead = start_holder(python, tmp_path, instance)
        kill(holder)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.STARTED
        assert holders(instance) == {dead.run_id}, "nothing frees a killed in-process run's slot by itself"

        next_run = python(RUN_MEMORIES)
        out, err = next_run.communicate(timeout=300)
        assert next_run.returncode == 0, err[-3000:]
        assert cleanup_line(dead) in err.splitlines()
        assert "waits for a slot" not in err, "the dead run is failed before the next one starts"
        assert "memories_job run " in out and "succeeded" in out
        assert_recovered(instance, dead)
        assert holders(instance) == set()


def test_a_waiting_run_names_the_holder_and_goes_on_once_the_holder_is_killed(sample_home, python, tmp_path):
    with dg.DagsterInstance.get() as instance:
        holder, held = start_holder(python, tmp_path, instance)
        waiting = python(RUN_MEMORIES)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: [lines.append(line) for line in waiting.stderr], daemon=True)
        reader.start()
        said = f"waits for a slot in pool {POOL} (held by run {held.run_id} of memories_job (STARTED, pid {holder.pid} on {socket.gethostname()}))"
        wait_for(lambda: any(said in line for line in lines) or waiting.poll() is not None, 120, "the waiting line")
        assert waiting.poll() is None, "".join(lines)[-3000:]
        assert instance.get_run_by_id(held.run_id).status == dg.DagsterRunStatus.STARTED, "a live holder is left alone"

        kill(holder)
        assert waiting.wait(timeout=300) == 0, "".join(lines)[-3000:]
        out = waiting.stdout.read()
        reader.join()
        assert cleanup_line(held) + "\n" in lines
        assert "memories_job run " in out and "succeeded" in out
        assert_recovered(instance, held)


def add_started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    """A run as `run_jobs` leaves it while its step holds a slot of the pool."""
    run = instance.add_run(dg.DagsterRun(job_name="memories_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED, tags=tags))
    assert instance.event_log_storage.claim_concurrency_slot(POOL, run.run_id, "memories").is_claimed
    return run


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_only_runs_of_a_dead_hms_process_on_this_host_are_recovered(hms_home):
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 5)
        alive = add_started_run(instance, process_tags())
        assert recover_dead_runs(instance) == []
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
        assert holders(instance) == {alive.run_id}

        others = [
            add_started_run(instance, {**process_tags(), PID_TAG: str(dead_pid()), HOST_TAG: "another-host"}),
            add_started_run(instance, {}),
        ]
        reused_pid = add_started_run(instance, {**process_tags(), PROCESS_START_TAG: "1"})
        gone = add_started_run(instance, {**process_tags(), PID_TAG: str(dead_pid())})
        recovered = recover_dead_runs(instance)
        assert {(r.run_id, r.status, r.pools) for r in recovered} == {(reused_pid.run_id, "STARTED", (POOL,)), (gone.run_id, "STARTED", (POOL,))}
        for run in (alive, *others):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        for run in (reused_pid, gone):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert holders(instance) == {alive.run_id} | {run.run_id for run in others}
        assert recover_dead_runs(instance) == []


def copy_instance(config: Path, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, home / "dagster.yaml")
    return home


@pytest.mark.parametrize("config", [EMBEDDED_INSTANCE, POSTGRES_INSTANCE], ids=["embedded", "postgres"])
def test_instance_configs_are_valid_and_turn_run_monitoring_on(config, tmp_path, monkeypatch):
    monkeypatch.setenv("HMS_DAGSTER_PG_URL", "postgresql://nobody@127.0.0.1:1/none")
    settings, _ = dagster_instance_config(str(copy_instance(config, tmp_path / "dagster")))
    monitoring = settings["run_monitoring"]
    assert monitoring["enabled"] is True
    assert "max_runtime_seconds" not in monitoring, "LoRA training runs long"
    assert monitoring["free_slots_after_run_end_seconds"] > 0
    assert settings["concurrency"]["pools"]["default_limit"] == 1


def test_the_embedded_instance_loads_with_run_monitoring_on(tmp_path):
    with dg.DagsterInstance.from_config(str(copy_instance(EMBEDDED_INSTANCE, tmp_path / "dagster"))) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 0
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300


def test_the_postgres_instance_loads_with_run_monitoring_on(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HMS_DAGSTER_PG_URL", postgres_url)
    with dg.DagsterInstance.from_config(str(copy_instance(POSTGRES_INSTANCE, tmp_path / "dagster"))) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_cancel_timeout_seconds == 180
        assert instance.event_log_storage.supports_global_concurrency_limits

"""Runs whose `hms` process died, and the pool slots they hold.

`hms` runs jobs with `execute_in_process`, where nothing frees the pool slots of a run whose process
was killed: with `default_limit: 1` the next run of a job in that pool would wait forever. Each run
`hms` starts carries the pid, host and start time of its process, so that a later `hms` can tell a
dead run from a live one, mark it failed and free its slots."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster import DagsterRunStatus, RunsFilter

PID_TAG = "hms/pid"
HOST_TAG = "hms/host"
PROCESS_START_TAG = "hms/process_start"

UNFINISHED = (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), which tells a reused pid apart;
    None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def process_tags() -> dict[str, str]:
    """Tags naming this process, for a run it executes in process."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    started = _process_start(os.getpid())
    if started is not None:
        tags[PROCESS_START_TAG] = started
    return tags


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` of this host still runs; with `started`, whether it is still the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):
        return False
    return started is None or _process_start(pid) in (None, started)


def run_process(run: dg.DagsterRun) -> tuple[int, str] | None:
    """The pid and host of the process executing `run`, when `hms` recorded them."""
    try:
        return int(run.tags[PID_TAG]), run.tags[HOST_TAG]
    except (KeyError, ValueError):
        return None


def run_is_orphaned(run: dg.DagsterRun, host: str | None = None) -> bool:
    """Whether `run` is unfinished while the process of this host that executed it is gone. A run
    `hms` did not start, or started on another host, is never orphaned here."""
    process = run_process(run)
    if run.status not in UNFINISHED or process is None:
        return False
    pid, run_host = process
    return run_host == (host or socket.gethostname()) and not process_alive(pid, run.tags.get(PROCESS_START_TAG))


@dataclass(frozen=True)
class RecoveredRun:
    run_id: str
    job_name: str
    status: str
    pid: int
    pools: tuple[str, ...]

    def describe(self) -> str:
        freed = f"freed its slots in pool(s) {', '.join(self.pools)}" if self.pools else "it held no pool slot"
        return (
            f"hms: run {self.run_id} of {self.job_name} was left {self.status} by a process that is gone "
            f"(pid {self.pid}); marked FAILED, {freed}"
        )


def _pools_of_run(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return ()
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    return tuple(
        pool
        for pool, info in infos.items()
        if any(slot.run_id == run_id for slot in info.claimed_slots)
        or any(step.run_id == run_id for step in info.pending_steps)
    )


def recover_dead_runs(instance: dg.DagsterInstance, run_ids: Iterable[str] | None = None) -> list[RecoveredRun]:
    """Mark failed the unfinished runs of this host whose `hms` process is gone (of `run_ids`, when
    given), and free their pool slots so that waiting steps can claim them."""
    host = socket.gethostname()
    run_ids = None if run_ids is None else list(run_ids)
    if run_ids == []:
        return []
    recovered = []
    for run in instance.get_runs(filters=RunsFilter(run_ids=run_ids, statuses=list(UNFINISHED), tags={HOST_TAG: host})):
        current = instance.get_run_by_id(run.run_id)
        if current is None or not run_is_orphaned(current, host):
            continue
        pid, _ = run_process(current)
        pools = _pools_of_run(instance, run.run_id)
        instance.report_run_failed(
            current,
            f"The process that executed this run (pid {pid} on {host}) is gone; `hms` marked the run "
            f"failed and freed its pool slots ({', '.join(pools) or 'none held'}).",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(RecoveredRun(run.run_id, run.job_name, current.status.value, pid, pools))
    return recovered


@dataclass(frozen=True)
class PoolWait:
    """A step of a run waiting for a slot of `pool`, whose slots `holders` (run ids) hold."""

    pool: str
    step_key: str
    limit: int
    holders: tuple[str, ...]


def pool_waits(instance: dg.DagsterInstance, run_id: str, pools: Collection[str]) -> list[PoolWait]:
    """The steps of `run_id` queued for a slot of one of `pools` and not yet given one."""
    storage = instance.event_log_storage
    if not pools or not storage.supports_global_concurrency_limits:
        return []
    waits = []
    for pool, info in storage.get_concurrency_infos(sorted(pools)).items():
        holders = tuple(dict.fromkeys(slot.run_id for slot in info.claimed_slots if slot.run_id != run_id))
        waits.extend(
            PoolWait(pool, step.step_key, info.limit, holders)
            for step in info.pending_steps
            if step.run_id == run_id and step.assigned_timestamp is None
        )
    return waits


def describe_holder(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (no longer on this instance)"
    process = run_process(run)
    where = f", pid {process[0]} on {process[1]}" if process else ""
    return f"run {run_id} of {run.job_name} ({run.status.value}{where})"


def describe_wait(instance: dg.DagsterInstance, job_name: str, run_id: str, wait: PoolWait) -> str:
    if wait.holders:
        held = "held by " + ", ".join(describe_holder(instance, holder) for holder in wait.holders)
    else:
        held = f"pool limit {wait.limit}"
    return f"hms: {job_name} run {run_id}: step {wait.step_key} waits for a slot in pool {wait.pool} ({held})"


class PoolWaitWatcher:
    """While a run executes in this process, says which runs hold the pool slots its steps wait
    for (Dagster logs the wait only at DEBUG, without the holder), and recovers a holder whose
    process died meanwhile: without it the wait would never end."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        job_name: str,
        run_id: str,
        pools: Collection[str],
        say: Callable[[str], None],
        *,
        patience: float = 3.0,
        poll: float = 1.0,
        repeat: float = 60.0,
    ):
        self.instance, self.job_name, self.run_id, self.pools, self.say = instance, job_name, run_id, pools, say
        self.patience, self.poll, self.repeat = patience, poll, repeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"hms-pool-wait-{run_id[:8]}", daemon=True)

    def __enter__(self) -> PoolWaitWatcher:
        if self.pools:
            self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        waiting_since: float | None = None
        said: tuple | None = None
        said_at = 0.0
        failed = False
        while not self._stop.wait(self.poll):
            try:
                waits = pool_waits(self.instance, self.run_id, self.pools)
                if not waits:
                    waiting_since, said = None, None
                    continue
                now = time.monotonic()
                waiting_since = waiting_since or now
                if now - waiting_since < self.patience:
                    continue
                holders = {holder for wait in waits for holder in wait.holders}
                for run in recover_dead_runs(self.instance, holders):
                    self.say(run.describe())
                waits = [w for w in pool_waits(self.instance, self.run_id, self.pools) if w.holders or w.limit == 0]
                state = tuple((w.pool, w.step_key, w.holders) for w in waits)
                if waits and (state != said or now - said_at >= self.repeat):
                    for wait in waits:
                        self.say(describe_wait(self.instance, self.job_name, self.run_id, wait))
                    said, said_at = state, now
            except Exception as exc:  # noqa: BLE001 - the watcher only informs; the run goes on without it
                if not failed:
                    self.say(f"hms: could not check the pool slots of run {self.run_id}: {exc}")
                failed = True

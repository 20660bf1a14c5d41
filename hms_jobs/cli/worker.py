"""`hms worker`: a Celery worker that executes the steps of HMS runs when `HMS_EXECUTOR=celery`."""

from __future__ import annotations

import os
import signal
import sys
import uuid

import click

from hms_jobs.cli import main
from hms_jobs.executors import DEFAULT_QUEUE, EXECUTOR_VARIABLE, QUEUE_VARIABLE, default_queue

PR_SET_PDEATHSIG = 1


def die_with_worker(**_kwargs) -> None:
    """A pool process dies with its worker: the broker hands a killed worker's unfinished step to the
    next worker, and the step must not run on here meanwhile."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@main.command()
@click.option("--queue", "-q", "queues", multiple=True,
              help=f"A queue to take steps from (repeatable); default ${QUEUE_VARIABLE} or `{DEFAULT_QUEUE}`. "
                   "LoRA training steps go to `hms-training`.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None,
              help="Steps executed at once, one process each; default: the CPUs.")
@click.option("--name", "-n", default=None, help="The worker's node name; default hms-<random>@<host>.")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def worker(queues: tuple[str, ...], concurrency: int | None, name: str | None, loglevel: str) -> None:
    """Execute the steps of HMS runs from the broker in $HMS_CELERY_BROKER (default RabbitMQ on
    127.0.0.1 as guest). Start it with the environment of the runs: the store, $HMS_HOME, and the
    Dagster instance's $HMS_DAGSTER_PG_URL."""
    from celery.signals import worker_process_init

    from hms_jobs.executors import celery_app

    os.environ.setdefault(EXECUTOR_VARIABLE, "celery")
    worker_process_init.connect(die_with_worker, weak=False)
    argv = ["worker", "--loglevel", loglevel, "--queues", ",".join(queues or (default_queue(),)),
            "--hostname", name or f"hms-{uuid.uuid4().hex[:6]}@%h"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    celery_app().worker_main(argv)

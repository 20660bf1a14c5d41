"""Where a run's steps execute, chosen by the environment in this one place: in the run's own processes
by default, or on Celery workers when `HMS_EXECUTOR=celery` (`hms worker` starts one).

The broker URL may hold a password: it is read from `HMS_CELERY_BROKER` by the process that needs it,
never written to run config, a file or a log."""

from __future__ import annotations

import dagster as dg

from hms_resources.common.environment import SETTINGS, is_set, setting

EXECUTOR_VARIABLE = "HMS_EXECUTOR"
BROKER_VARIABLE = "HMS_CELERY_BROKER"
BACKEND_VARIABLE = "HMS_CELERY_BACKEND"
QUEUE_VARIABLE = "HMS_CELERY_QUEUE"

DEFAULT_BROKER = SETTINGS[BROKER_VARIABLE].default
DEFAULT_BACKEND = SETTINGS[BACKEND_VARIABLE].default
DEFAULT_QUEUE = SETTINGS[QUEUE_VARIABLE].default

CELERY_SETTINGS = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": False,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}
"""A step's message is acknowledged when the step ends, so that a worker killed whole hands it back to
the broker for the next worker instead of losing it (the run would wait forever). A step whose own
process dies while its worker lives fails instead of being retried: it may be what kills it. One
message at a time per process, so a long step never holds a queued one back."""


def executor_kind() -> str:
    return setting(EXECUTOR_VARIABLE)


def default_queue() -> str:
    return setting(QUEUE_VARIABLE)


def _source(variable: str, default: str) -> str | dict[str, str]:
    """The environment variable by name, so that its value is resolved where the step runs and never
    stored with the run; the default where it is unset."""
    return {"env": variable} if is_set(variable) else default


def celery_settings() -> dict:
    return {**CELERY_SETTINGS, "task_default_queue": default_queue()}


def job_executor() -> dg.ExecutorDefinition | None:
    """The executor of every HMS job: None keeps Dagster's default (multiprocess, in process for
    `execute_in_process`)."""
    if executor_kind() != "celery":
        return None
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": _source(BROKER_VARIABLE, DEFAULT_BROKER),
            "backend": _source(BACKEND_VARIABLE, DEFAULT_BACKEND),
            "config_source": celery_settings(),
        },
        name="hms_celery",
    )


def celery_app():
    """The Celery app a worker serves: the one `celery_executor` submits to, with its step task, built
    from the environment (`dagster-celery worker start -y` would write the broker URL to a file)."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    executor = CeleryExecutor.for_cli(
        broker=setting(BROKER_VARIABLE),
        backend=setting(BACKEND_VARIABLE),
        config_source=celery_settings(),
    )
    app = make_app(executor.app_args())
    create_task(app)
    return app

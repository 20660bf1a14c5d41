"""The resources every HMS run connects to, configured from the environment."""

from __future__ import annotations

import os

import dagster as dg

from hms_resources.event_store import EventStore


def event_store_resource() -> EventStore:
    """The embedded SQLite store under `HMS_HOME`, or PostgreSQL when `HMS_DATABASE_URL` is set.

    The URL goes through `EnvVar`, so the UI shows the variable's name, never its value."""
    if os.environ.get("HMS_DATABASE_URL"):
        return EventStore(database_url=dg.EnvVar("HMS_DATABASE_URL"), hms_home=os.environ.get("HMS_HOME", ""))
    return EventStore(hms_home=os.environ.get("HMS_HOME", ""))


def resources() -> dict[str, object]:
    return {"event_store": event_store_resource()}

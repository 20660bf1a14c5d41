"""The one clock: every time HMS stamps (an event's `occurred_at` or `recorded_at`, a cursor's time)
is read here, as ISO 8601 UTC with microseconds and a `Z`, so stamps from any writer sort as text."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""Appending a batch whose one bad event must not cost the others: the store refuses a whole batch
for what one event holds, so the batch is bisected until that event is alone."""

from __future__ import annotations

import orjson
from sqlalchemy import exc as sa_exc

from hms_resources.store.event_store import AppendResult, EventStore
from hms_resources.store.events import MemoryEvent

# What a store raises for what an event holds, as opposed to being unreachable or locked.
_UNSTORABLE = (sa_exc.DataError, sa_exc.IntegrityError, sa_exc.ProgrammingError, orjson.JSONEncodeError, ValueError, TypeError, OverflowError)


def append_salvaging(store: EventStore, batch: list[MemoryEvent], stamped: list[bool] | None = None) -> AppendResult:
    """`store.append`, and if the store refuses the batch for what one of its events holds, the batch
    bisected until that event is alone and rejected with the store's reason: the rest is stored.
    `stamped`: which events' times the server stamped (see `EventStore.append`)."""
    stamped = stamped or []
    try:
        return store.append(batch, stamped=stamped)
    except _UNSTORABLE as exc:
        if len(batch) == 1:
            return AppendResult(rejected=[(0, f"the store cannot hold this event: {_short_reason(exc)}")])
    middle = len(batch) // 2
    first = append_salvaging(store, batch[:middle], stamped[:middle])
    second = append_salvaging(store, batch[middle:], stamped[middle:])
    return AppendResult(
        accepted=first.accepted + second.accepted,
        duplicates=first.duplicates + second.duplicates,
        rejected=first.rejected + [(i + middle, r) for i, r in second.rejected],
        conflicts=first.conflicts + [(i + middle, r) for i, r in second.conflicts],
        last_sequence=second.last_sequence or first.last_sequence,
        duplicated=first.duplicated + [(i + middle, at) for i, at in second.duplicated],
    )


def _short_reason(exc: Exception) -> str:
    """The driver's own words, first line only: SQLAlchemy's text would repeat the parameters."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]

"""Keeping the `memories` table (the replayed state of every memory) up to date with the log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hms_resources.common.bulk import gc_paused
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_FORGOTTEN, accesses_of
from hms_resources.store.memory_state import apply_events

MEMORIES_CURSOR = "memories"


@dataclass(frozen=True)
class RefreshReport:
    from_sequence: int
    to_sequence: int
    events_applied: int
    memories_changed: int
    memories_forgotten: int = 0


def refresh_memories(
    store: EventStore,
    *,
    full_replay: bool = False,
    page_size: int = 50_000,
    on_page: Callable[[int, int], None] | None = None,
) -> RefreshReport:
    """Apply the events after the table's cursor, a page at a time; each page commits with its cursor,
    so an interrupted refresh resumes where it stopped. `full_replay` rebuilds the table from the log."""
    if full_replay:
        store.clear_memories(cursor_name=MEMORIES_CURSOR)
    start = store.projection_cursor(MEMORIES_CURSOR)
    target = store.max_sequence()
    applied = changed = forgotten = 0
    cursor = start
    with gc_paused():
        for page in store.read_event_pages(after_sequence=start, until_sequence=target, page_size=page_size):
            touched = {a.key for e in page for a in accesses_of(e)}
            state = store.load_memories(touched)
            apply_events(state, page)
            cursor = page[-1].sequence or cursor
            changed += store.save_memories(
                (state[k] for k in touched if k in state), cursor_name=MEMORIES_CURSOR, cursor=cursor
            )
            applied += len(page)
            forgotten += sum(1 for e in page if e.type == MEMORY_FORGOTTEN)
            if on_page is not None:
                on_page(applied, target - start)
    return RefreshReport(
        from_sequence=start, to_sequence=max(cursor, start), events_applied=applied, memories_changed=changed, memories_forgotten=forgotten
    )

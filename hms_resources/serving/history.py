"""A memory's history as the API answers it: its events in replay order, each update carrying the
fields it changed with their values before and after. The values come from folding the memory's own
events, so a forgotten memory's erased values stay erased: its stored events hold none."""

from __future__ import annotations

import copy
from typing import Any

from hms_resources.serving.tenants import Principal
from hms_resources.store.events import MEMORY_TAGGED, MEMORY_UPDATED, MemoryEvent
from hms_resources.store.memory_state import MEMORY_COLUMNS, MemoryState, apply_event


def event_json(n: int, event: MemoryEvent, principal: Principal) -> dict[str, Any]:
    """An event of a memory's history: `n` is its place in the memory's own history (1, 2, ...), never
    the store-wide sequence, whose gaps would show the other tenants' write volume."""
    return {"n": n, "event_id": principal.own_name(event.event_id), "type": event.type, "occurred_at": event.occurred_at, "payload": event.payload}


def history_json(events: list[MemoryEvent], principal: Principal) -> list[dict[str, Any]]:
    """`events` (one memory's, in sequence order) as history items; an update or a tagging also has
    `changes`: `{field: {"before", "after"}}` for each field it names."""
    state: MemoryState = {}
    items = []
    for n, event in enumerate(events, start=1):
        changing = event.type in (MEMORY_UPDATED, MEMORY_TAGGED) and event.key in state
        # The fold replaces a changed field's value rather than mutating it, so a shallow copy keeps the old values.
        before = copy.copy(state[event.key]) if changing else None
        apply_event(state, event)
        item = event_json(n, event, principal)
        if before is not None:
            after = state[event.key]
            names = ["tags"] if event.type == MEMORY_TAGGED else [name for name in event.payload if name in MEMORY_COLUMNS]
            item["changes"] = {name: {"before": getattr(before, name), "after": getattr(after, name)} for name in names}
        items.append(item)
    return items

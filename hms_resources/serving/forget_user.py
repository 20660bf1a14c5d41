"""Forget every memory of a user at once (`DELETE /v1/memories?user_id=U`), as totally as one forget:
one `memory.forgotten` per memory not yet forgotten, appended through the door (which erases their
payloads and derived rows) in transactions of FORGET_CHUNK memories, so the store's write lock is never
held long enough to stall other tenants' writes, then the files purged before the call answers
(`privacy.forget.forget_at_acknowledgement`). Nothing is acknowledged before every chunk is stored; a
retry after a failure forgets the rest (a forgotten memory is skipped). A memory added while it runs
is not among them."""

from __future__ import annotations

from hms_resources.common.clock import utc_now
from hms_resources.memory.writes import MemoryWriter, new_event_id
from hms_resources.serving.errors import bad_request
from hms_resources.serving.tenants import Principal
from hms_resources.store import memory_table
from hms_resources.store.events import MEMORY_FORGOTTEN, EventError

FORGET_CHUNK = 100
"""Memories forgotten per transaction: about 0.3-0.5 s of the write lock each (3-5 ms a memory)."""


def forget_user(writer: MemoryWriter, principal: Principal, user: str, reason: str | None = None) -> int:
    """Forget the stored user's memories; returns how many this call forgot."""
    from hms_resources.privacy.forget import forget_at_acknowledgement

    store = writer.store
    with store.reading() as conn:
        memory_ids = memory_table.user_memory_ids(conn, user)
    if not memory_ids:
        return 0
    at, payload = utc_now(), ({"reason": reason} if reason else {})
    try:
        events = [
            writer.read_event({"event_id": principal.stored_id(new_event_id("forgotten")), "type": MEMORY_FORGOTTEN, "user_id": user,
                               "memory_id": memory_id, "occurred_at": at, "payload": payload})
            for memory_id in memory_ids
        ]
    except EventError as exc:
        raise bad_request(str(exc).replace("payload.", "", 1), "reason") from None
    forgotten = set()
    for start in range(0, len(events), FORGET_CHUNK):
        outcomes = writer.append_events(events[start : start + FORGET_CHUNK])
        forgotten |= {outcome.event.key for outcome in outcomes if outcome.status == "created"}
    if forgotten:
        forget_at_acknowledgement(store, forgotten)
    return len(forgotten)

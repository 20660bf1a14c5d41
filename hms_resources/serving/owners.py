"""Whose memory an id names when the caller does not say (`GET /v1/memories/{id}` without `user_id`,
as Mem0's and OpenAI's clients call it): the key's default user if it has that memory, else the one
user of the tenant who has it. Several is a 409 asking for `user_id`; none is a 404."""

from __future__ import annotations

from hms_resources.serving.errors import ApiError, not_found
from hms_resources.serving.tenants import Principal
from hms_resources.store import memory_table
from hms_resources.store.event_store import EventStore


def owner_of(store: EventStore, principal: Principal, memory_id: str) -> str:
    """The stored id of the tenant's user whose memory `memory_id` is (any status: a forgotten one is
    answered as its tombstone, as with `user_id`)."""
    if principal.default_user:
        user = principal.stored_user(principal.default_user)
        if store.memory_statuses([(user, memory_id)]):
            return user
    with store.reading() as conn:
        owners = memory_table.memory_owners(conn, principal.prefix, memory_id, limit=2)
    if len(owners) > 1:
        raise ApiError(409, "conflict", f"several users of this tenant have a memory {memory_id!r}: pass user_id to say whose", "user_id")
    if not owners:
        raise not_found(f"no user of this tenant has a memory {memory_id!r}", "memory_id")
    return owners[0]

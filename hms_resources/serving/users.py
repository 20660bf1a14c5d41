"""A tenant's users and a user's sessions as resources (`GET /v1/users`, `/v1/sessions/{id}`): read
from the store in the tenant's own names, never another tenant's, paged as `GET /v1/memories` is."""

from __future__ import annotations

from typing import Any

from hms_resources.common.limits import MAX_NAME_LENGTH
from hms_resources.serving.cursors import continue_after, page_cursor
from hms_resources.serving.errors import bad_request, not_found
from hms_resources.serving.service import (
    MAX_PAGE,
    MemoryService,
    checked_name,
    memory_json,
    positive_at_most,
)
from hms_resources.serving.tenants import Principal
from hms_resources.store import memory_pages
from hms_resources.store.memory_state import Memory


def list_users(service: MemoryService, principal: Principal, *, cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
    """A page of the tenant's users in id order, each with its count of memories (not forgotten);
    `next_cursor` continues it (null on the last page)."""
    principal.require("read")
    limit = positive_at_most(limit, "limit", MAX_PAGE)
    after = continue_after(cursor)
    prefix = principal.prefix
    rows = service.guard(lambda: service.store.users_under(prefix, after=None if after is None else prefix + after, limit=limit + 1))
    rows = [(user, count) for user, count in rows if user.startswith(prefix)]
    page = rows[:limit]
    next_cursor = page_cursor(principal.own_name(page[-1][0])) if len(rows) > limit else None
    return {"users": [{"user_id": principal.own_user(user), "memories": count} for user, count in page], "next_cursor": next_cursor}


def get_user(service: MemoryService, principal: Principal, user_id: str) -> dict[str, Any]:
    """One user of the tenant with its count of memories; 404 for a user with none (or none left)."""
    principal.require("read")
    user = principal.stored_user(user_id)
    rows = service.guard(lambda: service.store.users_under(user, limit=1))
    if not rows or rows[0][0] != user:
        raise not_found(f"no user {user_id!r} of this tenant", "user_id")
    return {"user_id": principal.own_user(user), "memories": rows[0][1]}


def _tiers(service: MemoryService, user: str, memory_ids: list[str]) -> dict[str, str]:
    with service.store.reading() as conn:
        return memory_pages.page_tiers(conn, user, memory_ids)


def _session_name(session_id: Any) -> str:
    return checked_name(session_id, "session_id", MAX_NAME_LENGTH)


def _in_order(memory: Memory) -> tuple[str, int, str]:
    """A session's order: by time; a user's turn before the reply stored at the same instant."""
    return (memory.created_at or "", 0 if memory.created_by == "user" else 1, memory.memory_id)


def session_turns(
    service: MemoryService, principal: Principal, session_id: str, user_id: str, *, cursor: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """The user's memories of one session (what chat capture stored with its `session_id`, and any
    memory written with one), not forgotten, in time order; 404 for a session with none."""
    principal.require("read")
    user = principal.stored_user(user_id)
    session_id = _session_name(session_id)
    limit = positive_at_most(limit, "limit", MAX_PAGE)
    after = continue_after(cursor)
    memories = service.guard(lambda: service.store.current_memories(user))
    turns = sorted((m for m in memories if m.session_id == session_id and not m.is_forgotten), key=_in_order)
    if not turns:
        raise not_found(f"no session {session_id!r} of user {user_id!r}", "session_id")
    if after is not None:
        mark = next((m for m in memories if m.memory_id == after and m.session_id == session_id), None)
        if mark is None:
            raise bad_request("cursor is not one this service returned for this session: pass a next_cursor back unchanged", "cursor")
        turns = [m for m in turns if _in_order(m) > _in_order(mark)]
    page = turns[:limit]
    next_cursor = page_cursor(page[-1].memory_id) if len(turns) > limit else None
    tiers = service.guard(lambda: _tiers(service, user, [m.memory_id for m in page]))
    return {
        "session_id": session_id,
        "user_id": principal.own_user(user),
        "turns": [memory_json(m, principal, tiers.get(m.memory_id)) for m in page],
        "next_cursor": next_cursor,
    }

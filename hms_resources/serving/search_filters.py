"""`POST /v1/search` with `filters`: the ranked pool of the context resource, narrowed to the memories
that pass `GET /v1/memories`' own filters (`service.passes_listing_filters`, on each memory's state as of the end of
the log, read as a listing reads it). The whole pool is asked for, not `limit`, so memories that rank
above the matching ones cannot starve the answer."""

from __future__ import annotations

from typing import Any

from hms_resources.serving.errors import bad_request
from hms_resources.serving.service import (
    MAX_SEARCH,
    MemoryService,
    checked_query,
    passes_listing_filters,
    positive_at_most,
)
from hms_resources.serving.tenants import Principal
from hms_resources.store import memory_pages
from hms_resources.store.events import EventError, normalize_timestamp

POOL = 1_000
"""Ranked memories asked of the context resource for a filtered search: more than its candidate pool
(a few hundred), so the filter sees every memory the resource ranked."""

FILTERS = ("memory_type", "category", "tag", "tags", "tier", "created_after", "created_before")


def time_bounds(filters: dict[str, Any]) -> dict[str, str]:
    """`created_after` and `created_before` as the store writes times, or a 422 naming the filter."""
    bounds = {}
    for name in ("created_after", "created_before"):
        value = filters.get(name)
        if value is not None:
            try:
                bounds[name] = normalize_timestamp(value, name)
            except EventError as exc:
                raise bad_request(str(exc), f"filters.{name}") from None
    return bounds


def filtered_search(
    service: MemoryService, principal: Principal, user_id: str, query: Any, limit: int = 10, now: str | None = None,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The best `limit` memories for `query` among those that pass every filter given; without one,
    `MemoryService.search` itself."""
    wanted = {name: value for name, value in (filters or {}).items() if name in FILTERS and value not in (None, [])}
    if not wanted:
        return service.search(principal, user_id, query, limit, now)
    principal.require("read")
    user = principal.stored_user(user_id)
    query = checked_query(query)
    limit = positive_at_most(limit, "limit", MAX_SEARCH)
    bounds = time_bounds(wanted)
    tags = list(dict.fromkeys(([wanted["tag"]] if "tag" in wanted else []) + list(wanted.get("tags", []))))
    ranked = service.guard(lambda: service._with_time(lambda at: service.assembler.search(user, query, POOL, now=at), now))
    ids = [item.memory_id for item in ranked]

    def passing() -> set[str]:
        store = service.store
        cursor = store.projection_cursor("memories")
        with store.reading() as conn:
            state, _ = memory_pages.current_state(conn, user, cursor, ids)
            tiers = memory_pages.page_tiers(conn, user, ids)
        found = set()
        for (_, memory_id), memory in state.items():
            tier = tiers.get(memory_id)
            if all(passes_listing_filters(memory, tier, None, "any", wanted.get("memory_type"), wanted.get("category"), tag, wanted.get("tier"), bounds)
                   for tag in tags or [None]):
                found.add(memory_id)
        return found

    kept = service.guard(passing) if ids else set()
    items = [item for item in ranked if item.memory_id in kept][:limit]
    return [{k: v for k, v in item.to_json().items() if k != "source_ids"} for item in items]

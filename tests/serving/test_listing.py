"""Listing a user's memories (issue 28): a page is read from the store a window of ids at a time, so
`limit=1` reads a few rows, not every memory of the user; pages stay exact as of the end of the log
(memories the `memories` table has not caught up with, updates, archives, forgets, batched reads)
whatever the filters; a cursor the service did not write is a 422 naming `cursor`. Real HTTP
(uvicorn in a thread), SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import normalize_timestamp, read_records
from hms_resources.store.ingest import ingest_records
from hms_resources.store.memory_state import Memory
from hms_resources.store.projection import refresh_memories
from hms_resources.tiers.assignment import TierSnapshot, save_tier_partition
from hms_resources.tiers.importance import TIER_NAMES
from tests.helpers import at, created, event
from tests.serving.conftest import new_key
from tests.serving.conftest import Running
from tests.serving.test_api import error_of

USER = "acme/big"
MEMORIES = 240
READER = Principal("acme", "read", "key-1")


@pytest.fixture
def service(written_service: MemoryService) -> MemoryService:
    return written_service


def memory_id(i: int) -> str:
    return f"m{i:03d}" if i % 7 else f"M-{i:03d}"


def fill(store: EventStore) -> None:
    """Half the user's memories in the `memories` table (with tiers), half written after it; then
    updates, archives, a forget and a read of several memories, on both halves, after it too."""
    half = MEMORIES // 2
    kinds = ("fact", "preference", "event")
    first = [created(USER, memory_id(i), f"memory number {i}", minutes=i, memory_type=kinds[i % 3],
                     category=f"c{i % 4}", tags=[f"t{i % 5}"]) for i in range(half)]
    ingest_records(store, first + [created("acme/other", "m001", "another user's memory")])
    refresh_memories(store)
    ids = [memory_id(i) for i in range(half)]
    tiers = np.array([i % 3 for i in range(half)], dtype=np.int64)
    save_tier_partition(store, date(2026, 3, 2), TierSnapshot("2026-03-02T23:59:59.999999Z", [USER] * half, ids,
                                                              np.full(half, 0.5), tiers, ["test"] * half), [])
    later = [created(USER, memory_id(i), f"memory number {i}", minutes=i, memory_type=kinds[i % 3],
                     category=f"c{i % 4}", tags=[f"t{i % 5}"]) for i in range(half, MEMORIES)]
    changes = [
        event("updated", USER, memory_id(3), minutes=900, category="moved", tags=["t9"]),
        event("updated", USER, memory_id(half + 3), minutes=900, category="moved"),
        event("archived", USER, memory_id(5), minutes=901, reason="done"),
        event("archived", USER, memory_id(half + 5), minutes=901, reason="done"),
        event("forgotten", USER, memory_id(8), minutes=902),
        *read_records("read-1", USER, [memory_id(1), memory_id(2), memory_id(half + 1)], at(903), {}),
    ]
    ingest_records(store, later + changes)


def expected(store: EventStore, status: str = "live", **wanted) -> list[str]:
    """The listing as the fold of the whole log answers it: every memory read, then filtered."""

    def listed(m: Memory) -> bool:
        return (status == "any" or m.status == status) and all(
            (value in m.tags) if name == "tag" else getattr(m, name) == value for name, value in wanted.items()
        )

    return [m.memory_id for m in store.current_memories(USER) if listed(m)]


def every_page(service: MemoryService, limit: int, **params) -> list[str]:
    """Every page of a listing, through the service the routes call (one HTTP call checks the route)."""
    found, cursor = [], None
    while True:
        page = service.list_memories(READER, "big", limit=limit, cursor=cursor, **params)
        assert len(page["memories"]) <= limit
        found += [m["memory_id"] for m in page["memories"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_page_of_one_reads_a_few_rows_and_every_page_is_exact_as_of_the_end_of_the_log(service: MemoryService):
    store = service.store
    fill(store)
    first = next(store.memory_windows(USER, limit=1))
    assert [m.memory_id for m in first.memories] == expected(store)[:2]
    assert first.rows_read <= 12, f"a page of one read {first.rows_read} rows"
    with Running(service, warm=False) as running, running.client(new_key(store, "acme", "read")) as api:
        one = api.get("/v1/memories", params={"user_id": "big", "limit": 1}).json()
        assert [m["memory_id"] for m in one["memories"]] == expected(store)[:1] and one["next_cursor"]
        assert one["memories"][0]["user_id"] == "big"
        rest = api.get("/v1/memories", params={"user_id": "big", "limit": 500, "cursor": one["next_cursor"]}).json()
        assert [m["memory_id"] for m in rest["memories"]] == expected(store)[1:] and rest["next_cursor"] is None
    assert every_page(service, 7) == expected(store)
    assert every_page(service, 50, status="any") == expected(store, "any")
    assert every_page(service, 3, status="archived") == expected(store, "archived") == [memory_id(5), memory_id(MEMORIES // 2 + 5)]
    assert every_page(service, 4, category="moved") == expected(store, category="moved")
    assert every_page(service, 9, tag="t9") == expected(store, tag="t9") == [memory_id(3)]
    assert every_page(service, 11, tag="t2", memory_type="fact") == expected(store, tag="t2", memory_type="fact")
    assert every_page(service, 5, tier="cold") == sorted(memory_id(i) for i in range(MEMORIES // 2) if TIER_NAMES[i % 3] == "cold" and i not in (5, 8))
    after, before = normalize_timestamp(at(100), "after"), normalize_timestamp(at(130), "before")
    between = every_page(service, 6, created_after=at(100), created_before=at(130))
    assert between == [m.memory_id for m in store.current_memories(USER) if m.status == "live" and after < m.created_at < before]
    counted = next(m for m in service.list_memories(READER, "big", limit=500)["memories"] if m["memory_id"] == memory_id(2))
    assert counted["access_count"] == 1, "a read of several memories since the table's cursor counts"


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_memory_just_written_is_listed_at_once(service: MemoryService):
    store = service.store
    with Running(service, warm=False) as running, running.client(new_key(store, "acme", "write")) as api:
        assert api.post("/v1/memories", json={"user_id": "big", "memory_id": "m1", "content": "first"}).status_code == 201
        refresh_memories(store)
        assert api.post("/v1/memories", json={"user_id": "big", "memory_id": "m0", "content": "just written"}).status_code == 201
        assert [m["memory_id"] for m in api.get("/v1/memories", params={"user_id": "big", "limit": 1}).json()["memories"]] == ["m0"]
    assert every_page(service, 1) == ["m0", "m1"]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_cursor_the_service_did_not_write_is_refused_naming_cursor(service: MemoryService):
    store = service.store
    ingest_records(store, [created(USER, memory_id(i), f"memory {i}") for i in range(3)])
    with Running(service, warm=False) as running, running.client(new_key(store, "acme", "read")) as api:
        cursor = api.get("/v1/memories", params={"user_id": "big", "limit": 1}).json()["next_cursor"]
        assert api.get("/v1/memories", params={"user_id": "big", "cursor": cursor}).status_code == 200
        for garbage in ("!!!", "AAAA", "%00", "\x00", "=", "bTAwMQ", cursor + "=", cursor + "!", cursor[:3] + "!!", "m1.", "m2." + cursor[3:], "m1.c2FtAA"):
            response = api.get("/v1/memories", params={"user_id": "big", "cursor": garbage})
            assert response.status_code == 422, (garbage, response.text)
            assert error_of(response)["field"] == "cursor", garbage

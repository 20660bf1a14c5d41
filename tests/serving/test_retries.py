"""Retries are duplicates, over real HTTP on SQLite and PostgreSQL: concurrent identical POSTs with one
`Idempotency-Key` store one memory and answer the others as duplicates (never a conflict), and a
batch's own repeats are duplicates, while the same id with other content stays a conflict."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hms_resources.serving.service import MemoryService
from tests.serving.conftest import Running, new_key

ROUNDS = 60
"""Rounds of four concurrent identical POSTs per store here; `benchmarks/retries.py` runs 1,000 tries."""
TRIES = 4


@pytest.fixture
def service(written_service: MemoryService) -> MemoryService:
    return written_service


def concurrent_tries(url: str, key: str, rounds: int, tries: int) -> list[list[httpx.Response]]:
    """`rounds` of `tries` identical POSTs sent at once (a barrier), one Idempotency-Key per round."""
    barrier = threading.Barrier(tries)
    clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) for _ in range(tries)]

    def post(client: httpx.Client, round_: int) -> httpx.Response:
        barrier.wait()
        return client.post("/v1/memories", json={"user_id": "ana", "content": f"Ana's fact number {round_}."},
                           headers={"Idempotency-Key": f"retry-{round_}"})

    answers = []
    try:
        with ThreadPoolExecutor(tries) as pool:
            for round_ in range(rounds):
                answers.append(list(pool.map(post, clients, [round_] * tries)))
    finally:
        for client in clients:
            client.close()
    return answers


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_concurrent_identical_posts_with_one_idempotency_key_store_one_memory_and_no_conflict(service: MemoryService):
    key = new_key(service.store, "acme", "write")
    with Running(service, warm=False) as running:
        answers = concurrent_tries(f"http://127.0.0.1:{running.port}", key, ROUNDS, TRIES)
    statuses = Counter(response.status_code for round_ in answers for response in round_)
    assert statuses[409] == 0, [r.json() for round_ in answers for r in round_ if r.status_code == 409][:3]
    assert all(sorted(r.status_code for r in round_) == [200] * (TRIES - 1) + [201] for round_ in answers), statuses
    for round_ in answers:
        bodies = [r.json() for r in round_]
        assert {b["status"] for b in bodies} == {"created", "duplicate"} and len({b["memory_id"] for b in bodies}) == 1
    stored = Counter(e.event_id for e in service.store.read_events(user_id="acme/ana"))
    assert len(stored) == ROUNDS and set(stored.values()) == {1}


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_batchs_own_repeats_are_duplicates_and_the_same_id_with_other_content_a_conflict(service: MemoryService):
    key = new_key(service.store, "acme", "write")
    tea = {"user_id": "ana", "event_id": "e-tea", "content": "Ana drinks green tea."}
    with Running(service, warm=False) as running, running.client(key) as api:
        batch = api.post("/v1/memories", json={"memories": [tea, dict(tea), {**tea, "content": "Ana drinks coffee."}, dict(tea)]})
        assert batch.status_code == 200
        results = batch.json()["results"]
        assert [r["status"] for r in results] == ["created", "duplicate", "rejected", "duplicate"]
        assert results[2]["error"]["code"] == "conflict" and "e-tea" in results[2]["error"]["message"]
        assert "payload" in results[2]["error"]["message"] and (batch.json()["created"], batch.json()["duplicates"]) == (1, 2)

        # The whole batch again later: every item a duplicate of the stored event, its time included.
        again = api.post("/v1/memories", json={"memories": [tea, tea]}).json()
        assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]

        # Raw events repeat within a batch too; there the client names the time, which must match.
        event = {"event_id": "e-raw", "type": "memory.created", "user_id": "ana", "memory_id": "raw",
                 "occurred_at": "2026-01-01T00:00:00Z", "payload": {"content": "Ana walks to work."}}
        raw = api.post("/v1/events", json={"events": [event, event, {**event, "occurred_at": "2026-01-02T00:00:00Z"}]}).json()
        assert [r["status"] for r in raw["results"]] == ["created", "duplicate", "rejected"]
        assert "occurred_at" in raw["results"][2]["error"]["message"]
    assert Counter(e.event_id for e in service.store.read_events(user_id="acme/ana")) == {"acme/e-tea": 1, "acme/e-raw": 1}

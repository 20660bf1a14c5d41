"""The context resource serving many users: loaded on first use, held within a memory budget, only the
changed users reloaded, one shard of the users per process. On real assets, without mocks."""

from __future__ import annotations

import gc
import hashlib
import weakref
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from hms_jobs.homes import materialize_for_context
from hms_resources.common.sharding import user_shard
from hms_resources.context.assembler import ContextAssembler, UserNotServed
from hms_resources.context.index import index_bytes
from hms_resources.datasets.conversations import generate_conversations
from hms_resources.datasets.retrieval_eval import memory_events
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingIndex, EmbeddingRows
from hms_resources.serving.errors import ApiError
from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal
from hms_resources.store.derived import derived_state
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from hms_resources.store.projection import MEMORIES_CURSOR, refresh_memories
from hms_resources.tiers.assignment import TierSnapshot, save_tier_partition
from tests.helpers import created, event

QUERIES = ("What does my partner do for work?", "What did I say about the weekend?", "", "Which trip am I planning?")


def conversations(users: int, seed: int) -> tuple[list[dict], list[str]]:
    records = [r for r in generate_conversations(users=users, sessions_per_user=1, seed=seed) if r["kind"] == "memory"]
    return records, sorted({r["user_id"] for r in records})


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def many(tmp_path_factory, embedder) -> tuple[EventStore, list[str]]:
    """Twenty users of the conversation generator, each with the same memory ids, through the assets."""
    store = EventStore(hms_home=str(tmp_path_factory.mktemp("many-users")))
    records, users = conversations(20, seed=3)
    ingest_records(store, memory_events(records))
    materialize_for_context(store, embedder, log=lambda _m: None)
    yield store, users
    store.close()


def answers(assembler: ContextAssembler, user_id: str) -> list[tuple]:
    """What a user is told for every query: each item as packed, and the prompt."""
    found = []
    for query in QUERIES:
        context = assembler.assemble(user_id, query, 300, now="2026-06-01T00:00:00Z")
        found.append(([(i.kind, i.memory_id, i.text, i.tokens, i.score, tuple(i.source_ids)) for i in context.items], context.to_prompt()))
    return found


def test_user_shard_is_a_stable_hash_that_spreads_users():
    for user_id in ("ana", "acme/ben", "user-ñandú"):
        digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
        assert user_shard(user_id, 7) == int.from_bytes(digest, "big") % 7
        assert user_shard(user_id, 1) == 0
    spread = Counter(user_shard(f"user-{i}", 4) for i in range(4000))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 900
    with pytest.raises(ValueError, match="shards must be at least 1"):
        user_shard("ana", 0)


def test_resident_index_bytes_stay_within_the_budget_as_users_are_evicted_and_reloaded(many, embedder):
    store, users = many
    one_user = ContextAssembler(event_store=store, embedder=embedder)
    sizes = [index_bytes(one_user.user_index(u)) for u in users]
    budget = 4 * max(sizes)
    assembler = ContextAssembler(event_store=store, embedder=embedder, memory_budget_mb=budget / 2**20)
    residents = assembler.residents
    for user_id in users + users[::-1] + users[::3]:
        assembler.assemble(user_id, "What does my partner do for work?", 200)
        assert residents.nbytes <= budget
        assert 1 <= len(residents) <= budget // min(sizes)
        assert sum(loaded.nbytes for _, loaded in residents.users()) == residents.nbytes
    assert residents.evictions > len(users) and residents.loads > len(users)
    assert [u for u, _ in residents.users()][-1] == users[::3][-1], "the user just served is the most recent"
    one_user.close()
    assembler.close()


def test_an_evicted_users_index_is_freed_at_once_without_the_garbage_collector(many, embedder):
    store, users = many
    assembler = ContextAssembler(event_store=store, embedder=embedder, memory_budget_mb=1e-6)
    assembler.assemble(users[0], "work", 200)
    gone = [weakref.ref(assembler.user_index(users[0])), weakref.ref(assembler.user_index(users[0]).bm25)]
    gc.disable()
    try:
        assembler.assemble(users[1], "work", 200)
        assert [u for u, _ in assembler.residents.users()] == [users[1]]
        assert all(ref() is None for ref in gone), "an index in a reference cycle stays in memory after its eviction"
    finally:
        gc.enable()
        assembler.close()


def test_answers_after_eviction_and_reload_are_identical_to_before(many, embedder):
    store, users = many
    roomy = ContextAssembler(event_store=store, embedder=embedder)
    before = {u: answers(roomy, u) for u in users}
    assert roomy.residents.evictions == 0 and len(roomy.residents) == len(users)
    tight = ContextAssembler(event_store=store, embedder=embedder, memory_budget_mb=0.3)
    for round_ in range(2):
        for user_id in users:
            assert answers(tight, user_id) == before[user_id], (round_, user_id)
    assert tight.residents.evictions >= len(users)
    for user_id in users:
        assert {i[1] for items, _ in before[user_id] for i in items} <= {m for m in tight.user_index(user_id).memory_ids}
        assert tight.user_index(user_id).user_id == user_id
    roomy.close()
    tight.close()


def test_a_user_whose_data_changed_is_reloaded_and_the_others_are_not(tmp_path: Path, embedder):
    store = EventStore(hms_home=str(tmp_path))
    records, users = conversations(6, seed=11)
    ingest_records(store, memory_events(records))
    materialize_for_context(store, embedder, log=lambda _m: None)
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    try:
        for user_id in users:
            assembler.assemble(user_id, "weekend plans", 200)
        before = dict(assembler.residents.users())
        loads = assembler.residents.loads
        writer, reader, *_ = users
        ingest_records(store, [
            created(writer, "new-1", "I adopted a grey cat called Pixel.", minutes=10**6, memory_type="conversation_turn",
                    created_by="user"),
            event("accessed", reader, before[reader].index.memory_ids[0], minutes=10**6),
        ])
        refresh_memories(store)
        assert assembler.refresh() is True
        after = dict(assembler.residents.users())
        assert writer not in after
        assert all(after[u] is before[u] for u in users if u != writer), "a user without new rows is kept as loaded"
        for user_id in users:
            assembler.assemble(user_id, "Do I have a cat?", 200)
        assert assembler.residents.loads == loads + 1
        assert "new-1" in assembler.user_index(writer).row_of

        index = EmbeddingIndex.load(store.home / EMBEDDINGS_DIR)
        rows = np.flatnonzero(index.user_ids == reader)
        index.vectors[rows] = index.vectors[rows][::-1]
        index.hashes[rows] = index.hashes[rows][::-1]
        index.save(store.home / EMBEDDINGS_DIR)
        kept = dict(assembler.residents.users())
        assert assembler.refresh() is True
        after = dict(assembler.residents.users())
        assert reader not in after and all(after[u] is kept[u] for u in users if u != reader)
        reloaded = assembler.user_index(reader)
        saved = dict(zip(index.memory_ids[rows].tolist(), index.vectors[rows].astype(np.float16)))
        assert all(np.array_equal(reloaded.vectors[row], saved[m]) for m, row in reloaded.row_of.items())
        assert assembler.refresh() is False

        tiered, other = users[2], users[3]
        day = derived_state(store, MEMORIES_CURSOR).tier_partition
        memory_ids = list(assembler.user_index(tiered).memory_ids)
        rescored = TierSnapshot(f"{day}T23:59:59.999999Z", [tiered] * len(memory_ids), memory_ids, np.full(len(memory_ids), 0.125),
                                np.ones(len(memory_ids), dtype=np.int64), ["test"] * len(memory_ids))
        save_tier_partition(store, date.fromisoformat(day), rescored, [], users=lambda u: u == tiered)
        ingest_records(store, [created(other, "new-2", "We booked the ferry to the islands.", minutes=10**6)])
        refresh_memories(store)
        assert derived_state(store, MEMORIES_CURSOR).tier_partition == day, "the same day, rewritten for one user"
        kept = dict(assembler.residents.users())
        assert assembler.refresh() is True
        after = dict(assembler.residents.users())
        assert tiered not in after and other not in after
        assert all(after[u] is kept[u] for u in users if u not in (tiered, other))
        assert set(assembler.user_index(tiered).prior.tolist()) == {0.125}
    finally:
        assembler.close()
        store.close()


def test_a_shard_serves_its_users_and_refuses_the_others(many, embedder):
    store, users = many
    whole = ContextAssembler(event_store=store, embedder=embedder)
    shards = [ContextAssembler(event_store=store, embedder=embedder, shard=s, shards=3) for s in range(3)]
    served = {s: [u for u in users if user_shard(u, 3) == s] for s in range(3)}
    assert all(served.values()), "twenty users reach every one of three shards"
    for s, assembler in enumerate(shards):
        assert sorted(assembler.snapshot.users) == served[s]
        for user_id in users:
            if user_id in served[s]:
                assert answers(assembler, user_id) == answers(whole, user_id)
                continue
            for call in (
                lambda: assembler.assemble(user_id, "work", 100),
                lambda: assembler.search(user_id, "work"),
                lambda: assembler.user_index(user_id),
            ):
                refusal = f"user '{user_id}' belongs to shard {user_shard(user_id, 3)} of 3; .* serves shard {s}"
                with pytest.raises(UserNotServed, match=refusal):
                    call()
        assert {u for u, _ in assembler.residents.users()} == set(served[s])
    ingest_records(store, [created(u, "fresh-1", "I started learning the accordion.", minutes=10**6) for u in users])
    for s, assembler in enumerate(shards):
        for user_id in served[s]:
            assert "fresh-1" in assembler.assemble(user_id, "accordion", 200).source_ids
        assert {u for u, _ in assembler.overlay.followed} == set(served[s]), "a shard follows the log of its own users only"
    service = MemoryService(store, shards[0], record_access=False)
    name = next(f"u{i}" for i in range(100) if user_shard(f"acme/u{i}", 3) != 0)
    with pytest.raises(ApiError) as refused:
        service.context(Principal("acme", "read", "key-1"), name, "work")
    assert (refused.value.status, refused.value.code, refused.value.field) == (421, "wrong_shard", "user_id")
    assert f"'acme/{name}' belongs to shard" in refused.value.message
    for assembler in [whole, *shards]:
        assembler.close()


def test_the_budget_and_the_shard_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HMS_HOME", str(tmp_path))
    monkeypatch.setenv("HMS_CONTEXT_MEMORY_BUDGET_MB", "2048")
    monkeypatch.setenv("HMS_CONTEXT_SHARD", "0")
    monkeypatch.setenv("HMS_CONTEXT_SHARDS", "4")
    assembler = ContextAssembler.from_env()
    assert (assembler.memory_budget_mb, assembler.shard, assembler.shards) == (2048.0, 0, 4)
    assert assembler.residents.budget_bytes == 2048 * 2**20
    monkeypatch.setenv("HMS_CONTEXT_SHARD", "4")
    with pytest.raises(ValueError, match="shard .*HMS_CONTEXT_SHARD.* must be from 0 to 3, got 4"):
        ContextAssembler.from_env()
    for name, value in (("HMS_CONTEXT_SHARD", "-1"), ("HMS_CONTEXT_SHARDS", "none"), ("HMS_CONTEXT_MEMORY_BUDGET_MB", "0")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=f"{name} must be"):
            ContextAssembler.from_env()
        monkeypatch.delenv(name)


def test_a_users_rows_are_read_alone_from_the_saved_index_even_out_of_order(tmp_path):
    rng = np.random.default_rng(5)
    users = np.array(["b", "a", "b", "c", "a", "a"])
    index = EmbeddingIndex("model@1", users, np.array([f"m{i}" for i in range(6)]), np.array([f"h{i}" for i in range(6)]),
                           rng.standard_normal((6, 4)).astype(np.float32))
    index.save(tmp_path)
    EmbeddingRows.CHUNK_ROWS = 2
    try:
        rows = EmbeddingRows.open(tmp_path)
    finally:
        EmbeddingRows.CHUNK_ROWS = 1 << 20
    assert (rows.model, rows.dimension, rows.rows) == ("model@1", 4, 6)
    for user_id in ("a", "b", "c", "nobody"):
        expected_ids, expected_vectors = index.for_user(user_id)
        ids, vectors = rows.for_user(user_id)
        assert ids == expected_ids and np.array_equal(vectors, expected_vectors)
    assert rows.fingerprint("a") != rows.fingerprint("b")
    rows.close()

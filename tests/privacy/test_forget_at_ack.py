"""A forget is total when it is acknowledged: right after `DELETE /v1/memories/{id}` answers (real HTTP,
no job run), a marker planted in the memory's content, its update, metadata, context, tags and
category is in no file under the HMS home (the store and its WAL, the embedding index, the cold
archive's Parquet, the Dagster instance) and in no table, SQLite and PostgreSQL; `verify_forgotten`
is clean; the history shows no client text; and access records keep a digest of the query only."""

from __future__ import annotations

import dagster as dg
import pytest

from hms_assets import domain_assets
from hms_assets.tiers.partitions import all_shards_of_days
from hms_resources.context.assembler import ContextAssembler
from hms_resources.privacy.forget import verify_forgotten
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED, MEMORY_CREATED, erase_payload
from tests.helpers import marker_counts
from tests.privacy.test_forget import dagster_instance, tables_holding
from tests.serving.conftest import new_key
from tests.serving.test_api import Running

MARKER = "Zyqvexmarker"
QUERY_MARKER = "Plorvintquery"
CELLO = ["I practise the cello every morning before work.", "My cello teacher wants more scales from me.",
         "The cello recital is at the community hall.", "I bought new strings for my cello."]
OTHER = ["My sister lives in Porto.", "I am allergic to peanuts."]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.from_env()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, hms_home) -> EventStore:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    event_store = EventStore(database_url=url, hms_home=str(hms_home))
    yield event_store
    event_store.close()


def materialize(store: EventStore, embedder: Embedder, instance: dg.DagsterInstance) -> None:
    """Memories, embeddings, concepts, graph edges, one day of tiers (every memory cold), the cold archive."""
    assets = domain_assets(["memory_store", "semantic", "tiers"])
    resources = {"event_store": store, "embedder": embedder}
    partitioned = dg.AssetSelection.assets("memory_tiers", "tier_migrations")
    steps = [
        (dg.AssetSelection.assets("memories", "embeddings", "concept_clusters", "graph_edges"), None, {}),
        (partitioned, "2026-04-01", {"memory_tier_migration": {"config": {"hot_threshold": 0.99, "warm_threshold": 0.98}}}),
        (dg.AssetSelection.assets("cold_archive"), None, {}),
    ]
    for selection, partition, ops in steps:
        result = dg.materialize(assets, selection=selection, tags=all_shards_of_days(partition) if partition else None, resources=resources,
                                instance=instance, run_config={"ops": ops})
        assert result.success


@pytest.mark.timeout(600)
def test_a_delete_leaves_nothing_of_the_memory_under_the_home_or_in_the_database_when_it_answers(store, embedder, hms_home):
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    service = MemoryService(store, assembler)
    key = new_key(store, "acme", "write")
    marked = {"user_id": "ana", "memory_id": "c0", "content": f"I practise the cello at the {MARKER} hall every morning.",
              "metadata": {"venue": MARKER}, "context": {"custom": f"near {MARKER}"}, "tags": [f"{MARKER}-tag", "music"],
              "category": f"{MARKER}-category", "occurred_at": "2026-03-01T09:00:00Z"}
    others = [{"user_id": "ana", "memory_id": f"c{i}", "content": text, "occurred_at": f"2026-03-0{i + 1}T09:00:00Z"} for i, text in enumerate(CELLO) if i]
    others += [{"user_id": "ana", "memory_id": f"o{i}", "content": text, "occurred_at": f"2026-03-1{i}T09:00:00Z"} for i, text in enumerate(OTHER)]
    try:
        with Running(service) as running, running.client(key) as api:
            assert api.post("/v1/memories", json={"memories": [marked, *others]}).json()["created"] == 1 + len(others)
            changed = {"content": f"I practise the cello at the {MARKER} studio now.", "metadata": {"venue": f"{MARKER} studio"}}
            assert api.patch("/v1/memories/c0", params={"user_id": "ana"}, json=changed).status_code == 200
            asked = api.post("/v1/context", json={"user_id": "ana", "query": f"When do I practise the cello at {QUERY_MARKER}?", "max_tokens": 512})
            assert asked.status_code == 200 and "c0" in asked.text
            service.writer.flush()
            with dagster_instance(hms_home) as instance:
                materialize(store, embedder, instance)
            before = marker_counts(hms_home, MARKER)
            assert tables_holding(store, MARKER), "the marker is planted in the projection"
            assert any(name.startswith("archive/") for name in before), before
            if not store.is_postgres:
                assert any(name.startswith("hms.db") for name in before), before

            assert api.delete("/v1/memories/c0", params={"user_id": "ana"}).status_code == 200
            found = marker_counts(hms_home, MARKER)
            assert found == {}, f"{sum(found.values())} occurrence(s) of the marker after the DELETE answered: {found}"
            assert tables_holding(store, MARKER) == []
            assert tables_holding(store, QUERY_MARKER) == [], "an access record kept the query's text"
            checks = verify_forgotten(store, "acme/ana", "c0")
            assert [c for c in checks if not c.clean] == []

            history = api.get("/v1/memories/c0/history", params={"user_id": "ana"}).json()["events"]
            assert [e["type"] for e in history][:2] == [MEMORY_CREATED, "memory.updated"]
            assert all(set(e["payload"]) <= {"importance", "confidence"} for e in history), history

            second = f"Where does my sister live, {QUERY_MARKER}?"
            assert api.post("/v1/context", json={"user_id": "ana", "query": second, "max_tokens": 256}).status_code == 200
            service.writer.flush()
            reads = [e for e in store.read_events(user_id="acme/ana") if e.type == MEMORY_ACCESSED]
            assert len(reads) == 2 and all(e.payload["query"].startswith("sha256:") for e in reads)
            assert tables_holding(store, QUERY_MARKER) == []
    finally:
        assembler.close()


def test_an_erased_payload_keeps_only_ids_numbers_and_flags():
    payload = {"content": "x", "tags": ["t"], "category": "c", "session_id": "s", "memory_type": "fact", "source_id": "src",
               "created_by": "me", "metadata": {"a": 1}, "importance": 0.5, "confidence": 0.9}
    assert erase_payload(payload) == {"importance": 0.5, "confidence": 0.9}
    assert erase_payload({"memory_ids": ["a", "b"], "query": "q", "access_method": "context", "was_relevant": True}) == {
        "memory_ids": ["a", "b"], "was_relevant": True}
    assert erase_payload({"tags": ["t"], "remove": ["u"]}) == {}

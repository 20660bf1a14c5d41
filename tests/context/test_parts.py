"""The parts the context resource composes, each alone: the prompt, the context's JSON, the fresh
overlay over a real event store, the choice of a champion adapter by its route."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hms_resources.context.assembly import Assembly
from hms_resources.context.cache import SnapshotCache
from hms_resources.context.contexts import Context, ContextItem
from hms_resources.context.fresh import NOTHING_FRESH, FreshOverlay
from hms_resources.context.index import SelectedAdapter, champion_index
from hms_resources.context.prompt import (
    day_header,
    day_header_tokens,
    render_memory,
    render_prompt,
    render_summary,
)
from hms_resources.context.snapshot import LoadedUser
from hms_resources.semantic.concepts import Concept
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created, event


def item(memory_id: str, text: str, created_at: str, kind: str = "memory", tokens: int = 3) -> ContextItem:
    return ContextItem(memory_id, text, tokens, 0.5, "hot", kind, [memory_id], created_at)


def test_a_prompt_puts_summaries_first_then_each_day_once_above_its_memories_in_time_order():
    items = [
        item("m2", "user: the recital is on the 14th", "2023-05-08T10:00:00Z"),
        item("c1", render_summary(["cello", "music", "practice", "extra"], "Ana  plays the cello."), "2023-05-09T00:00:00Z", "concept_summary"),
        item("m3", "assistant: good luck", "2023-05-09T08:00:00Z", "recent"),
        item("m1", render_memory("user", "I practise\n scales"), "2023-05-08T09:00:00Z"),
    ]
    assert render_prompt(items) == "\n".join([
        "[summary: cello, music, practice] Ana plays the cello.",
        "[8 May 2023]",
        "user: I practise scales",
        "user: the recital is on the 14th",
        "[9 May 2023]",
        "assistant: good luck",
    ])
    assert Context("ana", "q", 100, items).to_prompt() == render_prompt(items)
    assert day_header("") == "" and day_header(None) == "" and day_header("2024-12-31T23:59:59Z") == "[31 Dec 2024]"
    assert day_header_tokens(lambda texts: [len(t.split()) for t in texts]) == 4, "three words of a date and a line break"


def test_a_context_becomes_json_in_one_shape():
    adapter = SelectedAdapter("hms-ana", "3", "models:/hms-ana@champion", "/adapters/3", "base", "set-1", "c1", 0.81, 0.45)
    context = Context("acme/ana", "cello?", 64, [item("m1", "user: cello", "2023-05-08T09:00:00Z")],
                      {"fresh": 0.12345, "total": 1.0}, adapter)
    assert context.to_json("ana") == {
        "user_id": "ana",
        "query": "cello?",
        "token_budget": 64,
        "items": [{"memory_id": "m1", "text": "user: cello", "tokens": 3, "score": 0.5, "tier": "hot", "kind": "memory",
                   "source_ids": ["m1"], "created_at": "2023-05-08T09:00:00Z"}],
        "prompt": "[8 May 2023]\nuser: cello",
        "token_count": 3,
        "timings_ms": {"fresh": 0.123, "total": 1.0},
        "adapter": {"name": "hms-ana", "version": "3", "uri": "models:/hms-ana@champion", "path": "/adapters/3",
                    "base_model": "base", "set_id": "set-1", "concept_id": "c1", "similarity": 0.81, "threshold": 0.45},
    }
    assert context.to_json()["user_id"] == "acme/ana"


def test_the_fresh_overlay_follows_the_log_of_its_users_from_the_snapshot_and_never_changes_a_held_overlay(store):
    ingest_records(store, [created("ana", "old", "before the snapshot")])
    overlay = FreshOverlay(store, serves=lambda user_id: user_id == "ana")
    snapshot = SimpleNamespace(cursor=store.max_sequence())
    overlay.restart(snapshot)
    assert overlay.read("ana") == (snapshot, NOTHING_FRESH)
    ingest_records(store, [
        created("ana", "m1", "I adopted a grey cat.", minutes=5, memory_type="conversation_turn", created_by="user"),
        created("ben", "m1", "Ben's own memory.", minutes=5),
    ])
    held_snapshot, held = overlay.read("ana")
    assert held_snapshot is snapshot and set(held.changed) == {"m1"} and held.through > snapshot.cursor
    assert (held.live["m1"].content, held.live["m1"].created_by) == ("I adopted a grey cat.", "user")
    assert overlay.read("ben")[1] is NOTHING_FRESH and {u for u, _ in overlay.followed} == {"ana"}, "ben is another shard's"
    ingest_records(store, [event("forgotten", "ana", "m1", minutes=6), created("ana", "m2", "A second memory.", minutes=7)])
    _, now = overlay.read("ana")
    assert set(now.changed) == {"m1", "m2"} and set(now.live) == {"m2"}
    assert set(held.changed) == {"m1"} and set(held.live) == {"m1"}, "a reader's overlay never changes under it"
    assert held.live["m1"].status == "live", "a held memory is a copy the next fold does not change"
    assert now.stale_since(held.through) == ["m2"] or set(now.stale_since(held.through)) == {"m1", "m2"}


def test_the_fresh_overlay_reads_the_log_at_most_every_fresh_seconds_unless_a_write_was_noted(store):
    overlay = FreshOverlay(store, fresh_seconds=3600.0)
    overlay.restart(SimpleNamespace(cursor=store.max_sequence()))
    overlay.read("ana")
    report = ingest_records(store, [created("ana", "m1", "Noted later.")])
    assert overlay.read("ana")[1] is NOTHING_FRESH, "read within fresh_seconds of the last fold"
    overlay.note_written(report.last_sequence)
    assert set(overlay.read("ana")[1].live) == {"m1"}


CELLO = {"m4": "I have been learning to play the cello for two years now.",
         "m5": "My cello teacher says I should practise scales every morning.",
         "m6": "The cello recital is on the 14th at the community hall."}
TRAVEL = {"m1": "My sister Ana flies in from Porto on Friday evening.",
          "m2": "I booked a table at the Thai place on Rua Augusta for Saturday.",
          "m8": "Our dog Biscuit needs his vaccination next week."}
NOT_INDEXED = {"m8"}
"""A fact the embedding index no longer holds anchors nothing."""


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def fact_vectors(embedder):
    return dict(zip([*CELLO, *TRAVEL], embedder.encode([*CELLO.values(), *TRAVEL.values()])))


def a_concept(concept_id: str, facts: dict[str, str], vectors: dict[str, np.ndarray]) -> Concept:
    centroid = np.mean([vectors[m] for m in facts], axis=0)
    return Concept(concept_id, "ana", [], "", [], list(facts), centroid / np.linalg.norm(centroid), len(facts), 0.5, None, None, 30, 10)


def a_champion(concept_id: str, facts: dict[str, str], threshold: float | None) -> dict:
    return {"model_name": f"hms-lora-ana-{concept_id}", "version": "1", "uri": "", "path": f"/adapters/{concept_id}", "base_model": "",
            "set_id": f"ana/{concept_id}", "user_id": "ana", "concept_id": concept_id, "memory_ids": list(facts),
            "route_threshold": threshold}


def adapters_of(embedder, vectors, cello: float | None, travel: float | None):
    """Ana's champions, anchored as a snapshot anchors them: on the centroid and on the indexed facts."""
    def lookup(user_id: str, memory_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        assert user_id == "ana"
        found = np.array([m in vectors and m not in NOT_INDEXED for m in memory_ids])
        return np.array([vectors[m] for m in memory_ids], dtype=np.float16), found

    concepts = [a_concept("cello", CELLO, vectors), a_concept("travel", TRAVEL, vectors)]
    champions = [a_champion("cello", CELLO, cello), a_champion("travel", TRAVEL, travel)]
    return champion_index(champions, {"ana": concepts}, embedder.dimension, fact_vectors=lookup)["ana"]


def test_a_champion_is_anchored_on_its_concepts_centroid_and_its_indexed_facts(embedder, fact_vectors):
    found = adapters_of(embedder, fact_vectors, 0.45, None)
    assert [(a.concept_id, a.threshold) for a in found.adapters] == [("cello", 0.45), ("travel", 0.0)]
    assert found.owners.tolist() == [0, 0, 0, 0, 1, 1, 1], "a centroid and three facts; a centroid and the two facts still indexed"
    assert found.anchors.shape == (7, embedder.dimension) and found.anchors.dtype == np.float32
    assert np.allclose(found.anchors[1], fact_vectors["m4"], atol=1e-3)
    without_facts = champion_index([a_champion("cello", CELLO, 0.45)], {"ana": [a_concept("cello", CELLO, fact_vectors)]}, embedder.dimension)
    assert without_facts["ana"].owners.tolist() == [0], "no fact lookup: the centroid alone"
    assert champion_index([a_champion("gone", CELLO, 0.45)], {"ana": []}, embedder.dimension) == {}


@pytest.fixture
def choose(tmp_path, embedder):
    """`choose(adapters, query, adapter_min_similarity)`: the adapter an assembly picks for Ana's query."""
    store = EventStore(hms_home=str(tmp_path))
    cache = SnapshotCache(store, embedder, lambda: None, budget_bytes=2**20)

    def chosen(adapters, query: str, adapter_min_similarity: float = 0.3) -> SelectedAdapter | None:
        assembly = Assembly(cache, FreshOverlay(store), reranker=lambda: None, tokens=lambda: None, header_tokens=lambda: 0,
                            adapter_min_similarity=adapter_min_similarity)
        return assembly.choose_adapter(LoadedUser("ana", None, adapters, {}, 0), embedder.encode_query(query))

    yield chosen
    store.close()


def test_a_query_near_one_of_its_facts_routes_to_the_adapter_above_its_threshold_and_to_none_below(choose, embedder, fact_vectors):
    """"community hall on the 14th" is far from the cello concept's centroid (about 0.27) and close to the
    recital fact (about 0.6): the fact routes it, at the adapter's own fitted threshold."""
    query = "community hall on the 14th"
    centroid = adapters_of(embedder, fact_vectors, 0.45, 0.45).anchors[0]
    assert float(centroid @ embedder.encode_query(query)) < 0.45, "the centroid alone would not route it"
    on = choose(adapters_of(embedder, fact_vectors, 0.45, 0.45), query)
    assert on is not None and on.concept_id == "cello" and on.threshold == 0.45 and on.similarity >= 0.45, on
    assert on.similarity == pytest.approx(float(fact_vectors["m6"] @ embedder.encode_query(query)), abs=2e-3)
    assert choose(adapters_of(embedder, fact_vectors, 0.7, 0.45), query) is None, \
        "below its threshold the base model answers, and no other adapter takes the query"
    flight = choose(adapters_of(embedder, fact_vectors, 0.45, 0.45), "What time does my sister's flight from Porto land?")
    assert flight is not None and flight.concept_id == "travel"
    assert choose(adapters_of(embedder, fact_vectors, 0.45, 0.45), "What is the capital of France?") is None
    dog = "Which vet appointment does the dog have?"
    assert float(fact_vectors["m8"] @ embedder.encode_query(dog)) >= 0.42
    assert choose(adapters_of(embedder, fact_vectors, 0.45, 0.42), dog) is None, \
        "close to the dog's fact, but that fact left the index: only the centroid and the other facts anchor"


def test_an_adapter_without_a_fitted_threshold_routes_at_the_assemblers_minimum(choose, embedder, fact_vectors):
    adapters = adapters_of(embedder, fact_vectors, None, None)
    query = "Where is the recital going to be held?"
    assert choose(adapters, query, adapter_min_similarity=0.3).concept_id == "cello"
    assert choose(adapters, query, adapter_min_similarity=0.7) is None
    assert choose(adapters_of(embedder, fact_vectors, 0.5, None), query, adapter_min_similarity=0.7).concept_id == "cello", \
        "a fitted threshold overrides the minimum"

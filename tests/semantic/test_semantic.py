"""Embeddings, concepts and graph edges with the real all-MiniLM-L6-v2 model."""

import numpy as np
import pytest

from hms_resources.semantic.concepts import ConceptConfig, build_concepts, cluster_vectors, label_clusters, summarize
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import EmbeddingIndex, embedding_text, refresh_embeddings
from hms_resources.semantic.graph import build_edges, build_nodes, similar_pairs
from hms_resources.semantic.graph_model import EDGE_TYPES, memory_node_key
from hms_resources.store.memory_state import Memory


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def memory(user, memory_id, content, **fields):
    return Memory(user_id=user, memory_id=memory_id, content=content, created_at=f"2026-01-01T00:00:{len(memory_id):02d}.000000Z", **fields)


def refresh(embedder, memories, previous=None, model=None):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return embedder.encode(texts)

    index, report = refresh_embeddings(
        memories, previous, model=model or embedder.identity, encode=encode,
        count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens, dimension=embedder.dimension,
    )
    return index, report, calls


def test_an_unchanged_memory_is_never_encoded_twice_and_changes_are_re_encoded(embedder, tmp_path):
    memories = [memory("u1", "m1", "Prefers green tea"), memory("u1", "m2", "Lives in Lisbon"),
                memory("u2", "m1", "Plays the cello")]
    first, report, calls = refresh(embedder, memories)
    assert (report.encoded, report.reused) == (3, 0)
    first.save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    assert loaded.vectors.dtype == np.float32 and loaded.vectors.shape == (3, 384)
    _, report, calls = refresh(embedder, memories, loaded)
    assert (report.encoded, report.reused, calls) == (0, 3, [])
    memories[1] = memory("u1", "m2", "Moved to Porto")
    memories[2] = memory("u2", "m1", "Plays the cello", is_archived=True)
    second, report, calls = refresh(embedder, memories, loaded)
    assert calls == [["Moved to Porto"]]
    assert (report.encoded, report.reused, report.removed) == (1, 1, 1)
    assert second.keys() == [("u1", "m1"), ("u1", "m2")]
    assert np.allclose(second.vectors[0], first.vectors[0])
    _, report, calls = refresh(embedder, memories, second, model="another-model")
    assert report.model_changed and report.encoded == 2


def test_a_conversation_turn_is_embedded_with_its_speaker_and_re_embedded_when_it_changes(embedder):
    turn = memory("u1", "t1", "I adopted  a beagle.", memory_type="conversation_turn", created_by="Maya")
    note = memory("u1", "n1", "Buy dog food", created_by="Maya")
    _, _, calls = refresh(embedder, [turn, note])
    assert calls == [["Buy dog food", "Maya: I adopted a beagle."]]
    first, _, _ = refresh(embedder, [turn])
    renamed = memory("u1", "t1", "I adopted  a beagle.", memory_type="conversation_turn", created_by="Omar")
    _, report, calls = refresh(embedder, [renamed], first)
    assert report.encoded == 1 and calls == [["Omar: I adopted a beagle."]]


def test_empty_long_non_english_and_emoji_content_is_embedded_without_failing(embedder):
    texts = ["", "   ", "word " * 2000, "Je préfère le thé vert", "日本語が好きです", "🎉🎂 birthday party"]
    memories = [memory("u1", f"m{i}", t) for i, t in enumerate(texts)]
    index, report, _ = refresh(embedder, memories)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1, atol=1e-3)
    assert report.empty_content == 2
    assert report.truncated == 1


def test_index_vectors_find_the_semantically_closest_memory(embedder):
    memories = [memory("u1", "tea", "Prefers green tea in the morning"), memory("u1", "code", "Writes Python with type hints"),
                memory("u1", "dog", "Has a beagle called Biscuit")]
    index, _, _ = refresh(embedder, memories)
    query = embedder.encode(["What does the user like to drink?"])[0]
    assert index.memory_ids[int(np.argmax(index.vectors @ query))] == "tea"


TOPICS = {
    "tea": ["Prefers green tea in the morning", "Drinks oolong tea after lunch", "Likes jasmine tea with honey"],
    "dog": ["Has a beagle called Biscuit", "Walks Biscuit the beagle every evening", "The beagle Biscuit loves the park"],
    "code": ["Writes Python code with type hints", "Tests Python code with pytest", "Refactors Python code on Fridays"],
}


def topic_memories():
    return [memory("u1", f"{topic}-{n}", text) for topic, texts in TOPICS.items() for n, text in enumerate(texts)]


def test_concepts_group_related_memories_label_and_summarise_them_within_budget(embedder):
    memories = topic_memories()
    vectors = embedder.encode([m.content for m in memories])
    concepts = build_concepts("u1", memories, vectors, [], ConceptConfig(summary_token_budget=16), embedder.count_tokens)
    groups = sorted(sorted(c.member_ids) for c in concepts)
    assert groups == [sorted(f"{t}-{n}" for n in range(3)) for t in sorted(TOPICS)]
    for c in concepts:
        assert 0 < c.summary_tokens <= 16
        assert all(m in c.member_ids for m in c.summary_member_ids)
        assert all(memories[[x.memory_id for x in memories].index(m)].content in c.summary for m in c.summary_member_ids)
        assert c.compaction_ratio >= 1
    labels = {c.member_ids[0].split("-")[0]: c.label for c in concepts}
    assert "tea" in labels["tea"] and "python" in labels["code"]


FILLER = ["I'm not sure what you're looking for, but I'm happy to help.",
          "I'm not sure what you're looking for. Tell me a bit more and I'll help.",
          "Sorry, I'm not sure what you're looking for; I'm happy to help though."]
"""Three captured replies of a small model that knew nothing: the filler that became a user's largest concept."""


def test_concepts_take_the_users_words_and_leave_the_assistants_replies_out_unless_configured(embedder):
    turn = {"memory_type": "conversation_turn"}
    replies = [memory("u1", f"reply-{n}", text, created_by="assistant", **turn) for n, text in enumerate(FILLER)]
    spoken = [memory("u1", f"said-{n}", text, created_by="Maya", **turn) for n, text in enumerate(TOPICS["dog"])]
    memories = topic_memories() + spoken + replies
    vectors = embedder.encode([embedding_text(m) for m in memories])
    users_only = build_concepts("u1", memories, vectors, [], ConceptConfig(), embedder.count_tokens)
    members = {m for c in users_only for m in c.member_ids}
    assert not members & {m.memory_id for m in replies}
    assert {m.memory_id for m in spoken} <= members, "a named speaker of an imported conversation is the user's side"
    everything = build_concepts("u1", memories, vectors, [], ConceptConfig(include_assistant_replies=True), embedder.count_tokens)
    assert any({m.memory_id for m in replies} <= set(c.member_ids) for c in everything)


def test_a_growing_concept_keeps_its_id_and_unchanged_data_keeps_every_id(embedder):
    memories = topic_memories()
    vectors = embedder.encode([m.content for m in memories])
    config = ConceptConfig()
    first = build_concepts("u1", memories, vectors, [], config, embedder.count_tokens)
    again = build_concepts("u1", memories, vectors, first, config, embedder.count_tokens)
    assert [(c.concept_id, c.member_ids) for c in again] == [(c.concept_id, c.member_ids) for c in first]
    grown = memories + [memory("u1", "tea-new", "Enjoys matcha tea on weekends")]
    grown_vectors = embedder.encode([m.content for m in grown])
    after = build_concepts("u1", grown, grown_vectors, first, config, embedder.count_tokens)
    tea_before = next(c for c in first if "tea-0" in c.member_ids)
    tea_after = next(c for c in after if "tea-0" in c.member_ids)
    assert "tea-new" in tea_after.member_ids
    assert tea_after.concept_id == tea_before.concept_id
    assert {c.concept_id for c in after} == {c.concept_id for c in first}


def test_clustering_marks_lone_memories_as_noise_and_every_memory_is_in_at_most_one_cluster():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = cluster_vectors(vectors, ConceptConfig(distance_threshold=0.2))
    assert (labels == -1).all()
    assert list(cluster_vectors(vectors, ConceptConfig())) == list(cluster_vectors(vectors, ConceptConfig()))


def test_c_tf_idf_prefers_words_specific_to_a_cluster():
    labels = label_clusters(["tea tea green morning user", "python tests python user"], terms=2)
    assert labels[0][0] == "tea" and labels[1][0] == "python"
    assert label_clusters(["", ""], terms=3) == [[], []]


def test_a_summary_never_repeats_a_text_and_credits_every_member_it_carries():
    text, carried, used = summarize(["a", "b", "c"], ["Likes tea.", "likes  tea.", "Has a dog."], np.array([0.9, 0.8, 0.1]), [3, 3, 4], budget=3)
    assert (text, carried, used) == ("Likes tea.", ["a", "b"], 3)


def test_similar_pairs_match_a_brute_force_k_nearest_neighbour_search():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = similar_pairs(vectors, k=3, threshold=0.2, block_rows=7)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    expected = set()
    for i in range(50):
        for j in np.argsort(-sims[i])[:3]:
            if sims[i, j] >= 0.2:
                expected.add((min(i, j), max(i, j)))
    assert {(i, j) for i, j, _ in pairs} == expected


def test_graph_has_every_edge_type_and_no_edge_crosses_users(embedder):
    memories = topic_memories() + [
        memory("u1", "child", "Biscuit the beagle had a vet visit", parent_memory_id="dog-0", session_id="s1",
               relations=[{"target": "dog-1", "relationship_type": "elaborates", "strength": 0.7}]),
        memory("u1", "next", "Walks Biscuit after the vet", session_id="s1"),
        memory("u2", "dog-0", "Has a beagle called Biscuit"),
        memory("u1", "gone", "archived memory", is_archived=True),
    ]
    index, _, _ = refresh(embedder, memories)
    live = [m for m in memories if not m.is_archived]
    vectors = {m.key: index.vectors[i] for i, m in enumerate(sorted(live, key=lambda m: m.key))}
    u1 = [m for m in live if m.user_id == "u1"]
    concepts = build_concepts("u1", u1, np.stack([vectors[m.key] for m in u1]), [], ConceptConfig(), embedder.count_tokens)
    nodes, edges = build_nodes(memories, concepts), build_edges(memories, index, concepts)
    assert {e.type for e in edges} == set(EDGE_TYPES)
    owner = {n.key: n.user_id for n in nodes}
    assert all(owner[e.source] == e.user_id == owner[e.target] for e in edges)
    assert memory_node_key("u1", "gone") not in owner
    related = next(e for e in edges if e.type == "RELATED_TO")
    assert (related.weight, related.properties["relationship_type"]) == (0.7, "elaborates")

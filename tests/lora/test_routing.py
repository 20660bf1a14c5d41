"""The router that scopes an adapter to its concept (`lora.routing`): the threshold keeps every
unrelated prompt on the base model, and on real embeddings of a set's facts its held-out questions
route while the shipped control prompts and general passages do not. No language model needed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.data import build_examples
from hms_resources.lora.evaluation import general_corpus
from hms_resources.lora.rehearsal import CONTROL_PROMPTS, REHEARSAL_PROMPTS
from hms_resources.lora.routing import (
    ROUTE_MARGIN,
    SetRouter,
    fit_threshold,
    route_scores,
    routed,
    set_route,
)
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingIndex
from hms_resources.store.memory_state import Memory
from tests.helpers import PERSONAL_FACTS

USER, CONCEPT = "nadia", "concept-1"


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


@pytest.mark.parametrize("on_topic, unrelated, threshold", [
    ([0.6, 0.8], [0.1, 0.3], 0.45),
    ([0.33, 0.9], [0.3], 0.32),
    ([0.1, 0.9], [0.3], 0.32),
    ([], [0.3], 0.32),
    ([0.5], [], 0.25),
])
def test_the_threshold_sits_midway_when_questions_and_unrelated_prompts_are_apart_else_just_above_the_unrelated(
        on_topic, unrelated, threshold):
    """Apart: halfway between the most similar unrelated prompt and the least similar question. Close
    or overlapping: the margin above the unrelated prompt, so locality wins over reach."""
    assert fit_threshold(on_topic, unrelated) == pytest.approx(threshold)


def test_the_margin_sets_how_far_above_the_most_similar_unrelated_prompt_the_threshold_sits():
    assert fit_threshold([0.35], [0.3], margin=0.0) == pytest.approx(0.325)
    assert fit_threshold([0.35], [0.3], margin=0.1) == pytest.approx(0.4)
    assert routed([0.35], fit_threshold([0.35], [0.3], margin=0.1)) == [False], "an on-topic question inside the margin stays off"


@given(st.lists(st.floats(-1, 1), max_size=20), st.lists(st.floats(-1, 1), min_size=1, max_size=20))
def test_no_unrelated_prompt_it_was_fitted_on_routes(on_topic, unrelated):
    threshold = fit_threshold(on_topic, unrelated)
    assert not any(routed(unrelated, threshold))
    assert threshold >= max(unrelated) + ROUTE_MARGIN - 1e-4
    if on_topic and min(on_topic) > max(unrelated) + 2 * ROUTE_MARGIN:
        assert all(routed(on_topic, threshold)), "when they are apart, every held-out question routes"


def test_a_query_scores_its_best_anchor_the_centroid_or_any_fact():
    facts = unit([[1, 0, 0], [0, 1, 0]])
    centroid = unit(facts.mean(axis=0))
    anchors = np.vstack([centroid[None, :], facts])
    queries = unit([[0, 0.2, 1], [1, 1, 0], [0, 0, 1]])
    scores = route_scores(queries, anchors)
    assert scores == pytest.approx([queries[0] @ facts[1], 1.0, 0.0], abs=1e-6)
    assert scores[0] > route_scores(queries[:1], centroid[None, :])[0], "a fact reaches what the centroid alone does not"
    assert route_scores(queries, np.zeros((0, 3))).tolist() == [0.0, 0.0, 0.0] and len(route_scores(queries[:0], anchors)) == 0
    assert routed(scores, 0.5) == [False, True, False]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def examples():
    memories = {(USER, f"m{i}"): Memory(user_id=USER, memory_id=f"m{i}", content=text) for i, text in enumerate(PERSONAL_FACTS)}
    candidate_set = CandidateSet(set_id=f"{USER}/{CONCEPT}", user_id=USER, concept_id=CONCEPT, label=[],
                                 memory_ids=[m for _, m in sorted(memories)], fingerprint="f", status="approved", criteria={})
    return build_examples(candidate_set, memories)


@pytest.fixture(scope="module")
def anchored(embedder, examples):
    facts = embedder.encode([f["fact"] for f in examples.facts])
    centroid = unit(facts.mean(axis=0))
    return centroid, np.vstack([centroid[None, :], facts])


def prompts(rows) -> list[str]:
    return [r["prompt"] for r in rows]


def test_held_out_questions_route_and_the_shipped_controls_and_general_text_do_not(embedder, examples, anchored):
    centroid, anchors = anchored
    route = set_route(embedder.encode, anchors, prompts(examples.validation), REHEARSAL_PROMPTS, prompts(examples.eval),
                      CONTROL_PROMPTS, general_corpus())
    rehearsal = route_scores(embedder.encode(list(REHEARSAL_PROMPTS)), anchors)
    assert route["threshold"] >= float(rehearsal.max()) + ROUTE_MARGIN - 1e-4
    assert all(route["probes"]), route
    assert not any(route["controls"]), [p for p, r in zip(CONTROL_PROMPTS, route["controls"]) if r]
    assert not any(route["passages"]), route["passages"]
    by_centroid = routed(route_scores(embedder.encode(prompts(examples.eval)), centroid[None, :]), route["threshold"])
    assert not all(by_centroid), "the facts' own vectors carry questions the concept's centroid alone misses"


def test_a_set_router_anchors_on_the_centroid_and_the_facts_as_the_embedding_index_holds_them(tmp_path, embedder, examples, anchored):
    """A fact in the embedding index is anchored on its stored vector (as serving reads it); one missing
    from it on its text, encoded now."""
    centroid, anchors = anchored
    ids = [f["memory_id"] for f in examples.facts]
    texts = [f["fact"] for f in examples.facts]
    router = SetRouter(tmp_path, embedder.encode, {(USER, CONCEPT): centroid})
    assert np.allclose(router.anchors(USER, CONCEPT, ids, texts), anchors, atol=1e-5), "no index: every fact encoded from its text"
    stored = unit(np.eye(anchors.shape[1], dtype=np.float32)[:2])
    index = EmbeddingIndex("test", np.array([USER, USER, "ben"]), np.array(ids[:2] + ids[:1]), np.array(["h", "h", "h"]),
                           np.vstack([stored, stored[:1]]))
    (tmp_path / EMBEDDINGS_DIR).mkdir()
    index.save(tmp_path / EMBEDDINGS_DIR)
    found = router.anchors(USER, CONCEPT, ids, texts)
    assert found.shape == anchors.shape
    assert np.allclose(found[0], centroid) and np.allclose(found[1:3], stored)
    assert np.allclose(found[3:], anchors[3:], atol=1e-5)
    assert router.anchors(USER, "gone", ids[:0], texts[:0]).shape[0] == 0

    route = router.route({"user_id": USER, "concept_id": CONCEPT}, examples)
    assert set(route) == {"threshold", "probes", "controls", "passages"}
    assert (len(route["probes"]), len(route["controls"]), len(route["passages"])) == (
        len(examples.eval), len(CONTROL_PROMPTS), len(general_corpus()))
    assert not any(route["controls"]) and not any(route["passages"])

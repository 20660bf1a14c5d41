"""When an adapter answers: only for a query its retrieval routes to the adapter's concept, by the
query's similarity to the concept's centroid or to one of the set's facts, at or above a threshold
fitted per adapter on held-out questions. Outside that scope the base model answers untouched, so
locality holds by construction (GRACE and WISE scope their edits the same way).

The same scores decide in training (the figures measured through the router) and in serving
(`Context.adapter`): one function, `route_scores`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROUTE_MARGIN = 0.02
"""How far above the most similar unrelated prompt the threshold sits at least."""


def route_scores(queries: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Per query (unit rows), its highest cosine with the adapter's anchors (the concept's centroid and
    its facts' vectors, unit rows)."""
    if not len(anchors) or not len(queries):
        return np.zeros(len(queries), dtype=np.float32)
    return (np.asarray(queries, dtype=np.float32) @ np.asarray(anchors, dtype=np.float32).T).max(axis=1)


def fit_threshold(on_topic: Sequence[float], unrelated: Sequence[float], margin: float = ROUTE_MARGIN) -> float:
    """The threshold that routes none of the `unrelated` prompts (by `margin`) and, when the two are
    apart, sits halfway between the most similar unrelated prompt and the least similar held-out
    question: locality first, then reach."""
    floor = float(max(unrelated, default=0.0)) + margin
    lowest = float(min(on_topic, default=floor))
    return round(max(floor, (floor - margin + lowest) / 2) if lowest > floor else floor, 4)


def routed(scores: Sequence[float], threshold: float) -> list[bool]:
    return [bool(s >= threshold) for s in scores]


def set_route(
    encode: Callable[[list[str]], np.ndarray],
    anchors: np.ndarray,
    on_topic: Sequence[str],
    unrelated: Sequence[str],
    probes: Sequence[str],
    controls: Sequence[str],
    passages: Sequence[str],
) -> dict:
    """An adapter's route: the threshold fitted on held-out questions (`on_topic`, the set's validation
    paraphrases) against unrelated prompts (the rehearsal prompts), and, for the questions and texts
    it is judged on (held-out `probes`, `controls` for leakage, general `passages`), whether each
    routes. `encode`: unit vectors of texts, as queries are encoded."""
    def scores(texts: Sequence[str]) -> np.ndarray:
        return route_scores(encode(list(texts)), anchors) if texts else np.zeros(0, dtype=np.float32)

    threshold = fit_threshold(scores(on_topic).tolist(), scores(unrelated).tolist())
    return {"threshold": threshold, "probes": routed(scores(probes), threshold), "controls": routed(scores(controls), threshold),
            "passages": routed(scores(passages), threshold)}


class SetRouter:
    """The routes of a home's candidate sets: anchors from its concepts (centroids) and embedding index
    (the facts' vectors, as serving reads them), queries encoded by `encode` (unit rows)."""

    def __init__(self, home: Path, encode: Callable[[list[str]], np.ndarray], centroids: dict[tuple[str, str], np.ndarray]):
        self.home = Path(home)
        self.encode = encode
        self.centroids = centroids

    @classmethod
    def of_store(cls, event_store: Any, embedder: Any) -> SetRouter:
        from hms_resources.semantic.concepts import load_concepts

        return cls(event_store.home, embedder.encode, {(c.user_id, c.concept_id): c.centroid for c in load_concepts(event_store)})

    def anchors(self, user_id: str, concept_id: str, memory_ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """The concept's centroid and the facts' vectors from the embedding index; a fact missing from
        it (a home without the embeddings asset) is encoded from its text."""
        from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingRows

        rows = []
        centroid = self.centroids.get((user_id, concept_id))
        if centroid is not None:
            rows.append(np.asarray(centroid, dtype=np.float32)[None, :])
        stored: dict[str, np.ndarray] = {}
        index = EmbeddingRows.open(self.home / EMBEDDINGS_DIR)
        if index is not None:
            try:
                ids, vectors = index.for_user(user_id)
                wanted = set(memory_ids)
                stored = {m: np.asarray(v, dtype=np.float32) for m, v in zip(ids, vectors) if m in wanted}
            finally:
                index.close()
        missing = [t for m, t in zip(memory_ids, texts) if m not in stored]
        rows += [np.vstack(list(stored.values()))] if stored else []
        rows += [self.encode(missing)] if missing else []
        return np.vstack(rows) if rows else np.zeros((0, 1), dtype=np.float32)

    def route(self, built: dict, examples: Any) -> dict:
        from hms_resources.lora.evaluation import general_corpus
        from hms_resources.lora.rehearsal import CONTROL_PROMPTS, REHEARSAL_PROMPTS

        anchors = self.anchors(built["user_id"], built["concept_id"], [f["memory_id"] for f in examples.facts],
                               [f["fact"] for f in examples.facts])
        return set_route(self.encode, anchors, [r["prompt"] for r in examples.validation], REHEARSAL_PROMPTS,
                         [p["prompt"] for p in examples.eval], CONTROL_PROMPTS, general_corpus())

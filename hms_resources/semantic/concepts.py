"""Concept compaction: per user, clusters of related memories with labels and extractive summaries.

A concept keeps its id across re-clustering: new clusters are matched to the user's previous concepts
by membership overlap and centroid similarity, so a concept keeps its id as it grows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import orjson

from hms_resources.common.environment import setting
from hms_resources.store.memory_state import CONVERSATION_TURN, Memory

if TYPE_CHECKING:
    from hms_resources.store.event_store import EventStore

NOISE = -1
ASSISTANT = "assistant"
"""The `created_by` of a conversation turn the assistant spoke (chat capture records every turn's
speaker); any other speaker, e.g. a named person in an imported conversation, is the user's side."""


def is_assistant_reply(memory: Memory) -> bool:
    """A conversation turn the assistant spoke: the conversation's record, not something the user stated."""
    return memory.memory_type == CONVERSATION_TURN and (memory.created_by or "").casefold() == ASSISTANT


def assistant_replies_included(configured: bool | None = None) -> bool:
    """Whether concepts and LoRA candidate sets take the assistant's replies: the run config's choice,
    else the `HMS_INCLUDE_ASSISTANT_REPLIES` setting (off)."""
    return configured if configured is not None else setting("HMS_INCLUDE_ASSISTANT_REPLIES")


@dataclass(frozen=True)
class ConceptConfig:
    distance_threshold: float = 0.6
    """Average-linkage cosine distance under which memories join one concept."""
    min_size: int = 2
    summary_token_budget: int = 64
    label_terms: int = 5
    match_min_jaccard: float = 0.3
    match_min_centroid_similarity: float = 0.8
    large_user_threshold: int = 4000
    """Above this many memories a user is clustered with MiniBatchKMeans (memory stays linear)."""
    include_assistant_replies: bool = False
    """Cluster the assistant's captured replies too; off, concepts hold the user's words only."""


@dataclass
class Concept:
    concept_id: str
    user_id: str
    label: list[str]
    summary: str
    summary_member_ids: list[str]
    member_ids: list[str]
    centroid: np.ndarray = field(repr=False)
    size: int
    cohesion: float
    first_seen: str | None
    last_seen: str | None
    member_tokens: int
    summary_tokens: int

    @property
    def compaction_ratio(self) -> float:
        return self.member_tokens / max(self.summary_tokens, 1)


def cluster_vectors(vectors: np.ndarray, config: ConceptConfig) -> np.ndarray:
    """Cluster labels per row (NOISE for memories in no concept); deterministic for the same input."""
    n = len(vectors)
    if n < config.min_size:
        return np.full(n, NOISE)
    if n > config.large_user_threshold:
        from sklearn.cluster import MiniBatchKMeans

        k = max(2, n // 25)
        labels = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=3, batch_size=2048).fit_predict(vectors)
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=config.distance_threshold
        ).fit_predict(vectors)
    sizes = np.bincount(labels)
    return np.where(sizes[labels] >= config.min_size, labels, NOISE)


def label_clusters(documents: Sequence[str], terms: int) -> list[list[str]]:
    """Keywords per cluster by class-based TF-IDF (c-TF-IDF): each cluster's texts joined as one document."""
    from sklearn.feature_extraction.text import CountVectorizer

    if not documents:
        return []
    try:
        counts = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b").fit(documents)
    except ValueError:
        return [[] for _ in documents]
    matrix = counts.transform(documents).toarray().astype(np.float64)
    words_per_class = matrix.sum(axis=1, keepdims=True)
    tf = matrix / np.maximum(words_per_class, 1)
    average_words = max(words_per_class.mean(), 1.0)
    idf = np.log(1 + average_words / np.maximum(matrix.sum(axis=0), 1))
    scores = tf * idf
    vocabulary = counts.get_feature_names_out()
    labels = []
    for row in scores:
        order = np.lexsort((vocabulary, -row))
        labels.append([str(vocabulary[i]) for i in order[:terms] if row[i] > 0])
    return labels


def summarize(
    member_ids: Sequence[str],
    texts: Sequence[str],
    similarity: np.ndarray,
    token_counts: Sequence[int],
    budget: int,
) -> tuple[str, list[str], int]:
    """An extractive summary: the most representative member texts, whole and each once, while they
    fit the budget. Returns the text, the ids of the members whose content it carries (a member whose
    text repeats a chosen one counts), and its tokens."""
    chosen: dict[str, int] = {}
    used = 0
    for row in np.lexsort((np.asarray(member_ids), -similarity)):
        text = " ".join(texts[row].split())
        if not text or text.casefold() in chosen:
            continue
        cost = token_counts[row] + (1 if chosen else 0)
        if used + cost <= budget:
            chosen[text.casefold()] = int(row)
            used += cost
    carried = [member_ids[i] for i in range(len(texts)) if " ".join(texts[i].split()).casefold() in chosen]
    summary = " ".join(" ".join(texts[row].split()) for row in chosen.values())
    return summary, carried, used


def _new_concept_id(user_id: str, member_ids: Sequence[str]) -> str:
    digest = hashlib.sha1("\x1f".join([user_id, *sorted(member_ids)]).encode()).hexdigest()
    return f"concept-{digest[:12]}"


def match_concept_ids(
    user_id: str,
    clusters: Sequence[tuple[list[str], np.ndarray]],
    previous: Sequence[Concept],
    config: ConceptConfig,
) -> list[str]:
    """Ids for new clusters (member ids, centroid): the previous concept each one best continues,
    one-to-one (Hungarian assignment), or a fresh id."""
    from scipy.optimize import linear_sum_assignment

    ids = [_new_concept_id(user_id, members) for members, _ in clusters]
    if not previous or not clusters:
        return ids
    score = np.zeros((len(clusters), len(previous)))
    for i, (members, centroid) in enumerate(clusters):
        mine = set(members)
        for j, old in enumerate(previous):
            theirs = set(old.member_ids)
            jaccard = len(mine & theirs) / len(mine | theirs)
            similarity = float(centroid @ old.centroid)
            if jaccard >= config.match_min_jaccard or similarity >= config.match_min_centroid_similarity:
                score[i, j] = jaccard + similarity
    rows, cols = linear_sum_assignment(-score)
    taken = set()
    for i, j in zip(rows, cols):
        if score[i, j] > 0:
            ids[i] = previous[j].concept_id
            taken.add(previous[j].concept_id)
    # A fresh id can collide with a previous id that was not carried over; keep ids unique.
    seen: set[str] = set()
    for i, concept_id in enumerate(ids):
        if concept_id in seen:
            ids[i] = _new_concept_id(user_id, [*clusters[i][0], concept_id])
        seen.add(ids[i])
    return ids


def build_concepts(
    user_id: str,
    memories: Sequence[Memory],
    vectors: np.ndarray,
    previous: Sequence[Concept],
    config: ConceptConfig,
    count_tokens: Callable[[list[str]], list[int]],
) -> list[Concept]:
    """The user's concepts from their live memories (rows of `vectors` in the same order). The
    assistant's replies are left out unless `config.include_assistant_replies`: its refusals and
    filler would otherwise become the user's largest concepts."""
    if not config.include_assistant_replies:
        kept = [row for row, memory in enumerate(memories) if not is_assistant_reply(memory)]
        if len(kept) < len(memories):
            memories, vectors = [memories[row] for row in kept], vectors[kept]
    labels = cluster_vectors(vectors, config)
    groups: dict[int, list[int]] = {}
    for row, label in enumerate(labels.tolist()):
        if label != NOISE:
            groups.setdefault(label, []).append(row)
    ordered = sorted(groups.values(), key=lambda rows: min(memories[r].memory_id for r in rows))
    clusters = []
    for rows in ordered:
        centroid = vectors[rows].mean(axis=0)
        centroid = centroid / max(np.linalg.norm(centroid), 1e-12)
        clusters.append(([memories[r].memory_id for r in rows], centroid.astype(np.float32)))
    ids = match_concept_ids(user_id, clusters, previous, config)
    texts_by_cluster = [[memories[r].content or "" for r in rows] for rows in ordered]
    keywords = label_clusters([" ".join(texts) for texts in texts_by_cluster], config.label_terms)
    concepts = []
    for concept_id, rows, (member_ids, centroid), texts, label in zip(ids, ordered, clusters, texts_by_cluster, keywords):
        similarity = vectors[rows] @ centroid
        tokens = count_tokens(texts)
        summary, carried, _ = summarize(member_ids, texts, similarity, tokens, config.summary_token_budget)
        summary_tokens = count_tokens([summary])[0] if summary else 0
        created = [memories[r].created_at for r in rows if memories[r].created_at]
        concepts.append(
            Concept(
                concept_id=concept_id,
                user_id=user_id,
                label=label,
                summary=summary,
                summary_member_ids=carried,
                member_ids=member_ids,
                centroid=centroid,
                size=len(rows),
                cohesion=round(float(similarity.mean()), 6),
                first_seen=min(created) if created else None,
                last_seen=max(created) if created else None,
                member_tokens=int(sum(tokens)),
                summary_tokens=summary_tokens,
            )
        )
    return sorted(concepts, key=lambda c: c.concept_id)


def save_concepts(store: "EventStore", concepts_by_user: dict[str, list[Concept]]) -> int:
    """Replace the concepts of the given users, in one transaction."""
    from hms_resources.store.schema import concepts as table

    rows = [
        {
            "user_id": c.user_id,
            "concept_id": c.concept_id,
            "label": orjson.dumps(c.label).decode(),
            "summary": c.summary,
            "summary_member_ids": orjson.dumps(c.summary_member_ids).decode(),
            "member_ids": orjson.dumps(c.member_ids).decode(),
            "centroid": np.asarray(c.centroid, dtype=np.float32).tobytes(),
            "size": c.size,
            "cohesion": c.cohesion,
            "first_seen": c.first_seen,
            "last_seen": c.last_seen,
            "member_tokens": c.member_tokens,
            "summary_tokens": c.summary_tokens,
        }
        for user_concepts in concepts_by_user.values()
        for c in user_concepts
    ]
    with store.writing() as conn:
        for users in _chunked(sorted(concepts_by_user), 500):
            conn.execute(table.delete().where(table.c.user_id.in_(users)))
        if rows:
            conn.execute(table.insert(), rows)
    return len(rows)


def load_concepts(store: "EventStore", user_id: str | None = None) -> list[Concept]:
    from sqlalchemy import select

    from hms_resources.store.schema import concepts as table

    query = select(table).order_by(table.c.user_id, table.c.concept_id)
    if user_id is not None:
        query = query.where(table.c.user_id == user_id)
    with store.reading() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        Concept(
            concept_id=r["concept_id"],
            user_id=r["user_id"],
            label=orjson.loads(r["label"]),
            summary=r["summary"],
            summary_member_ids=orjson.loads(r["summary_member_ids"]),
            member_ids=orjson.loads(r["member_ids"]),
            centroid=np.frombuffer(r["centroid"], dtype=np.float32),
            size=r["size"],
            cohesion=r["cohesion"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
            member_tokens=r["member_tokens"],
            summary_tokens=r["summary_tokens"],
        )
        for r in rows
    ]


def _chunked(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

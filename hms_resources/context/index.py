"""The context resource's in-memory indexes, built from the materialized assets.

A `ContextSnapshot` holds, per user, what `assemble` needs and nothing more: rendered texts and their
token counts, unit vectors from the `embeddings` asset (float16), a BM25 index (bm25s), dynamic importance
from the latest tier partition, session order, speakers and concept summaries.
Cold memories stay on disk until a deep search asks for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hms_resources.common.text import lexical_tokens
from hms_resources.context.temporal import mentions_time
from hms_resources.lora.paths import CHAMPIONS_FILE, load_champions, lora_dir
from hms_resources.semantic.embeddings import EmbeddingIndex
from hms_resources.store.derived import derived_state, latest_tiers, live_memory_columns
from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import CONVERSATION_TURN
from hms_resources.store.projection import MEMORIES_CURSOR
from hms_resources.tiers.archive import COLD_ARCHIVE_DIR, read_cold_archive

TIER_CODES = {"hot": 0, "warm": 1, "cold": 2}
TIER_NAMES = ("hot", "warm", "cold")
DEFAULT_PRIOR = 0.5
EMBEDDINGS_DIR = "embeddings"


def epoch_seconds(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def render_memory(speaker: str | None, content: str) -> str:
    """How a memory is indexed and appears in a prompt: who said it and the text. Its date is shown once
    per day above the memories of that day (`day_header`), not on every line."""
    who = f"{speaker}: " if speaker else ""
    return f"{who}{' '.join(content.split())}"


def day_header(created_at: str | None) -> str:
    """The line above a day's memories in a prompt, "[8 May 2023]": temporal questions need the date,
    and the base LLM's tokenizer spends a token per digit, so the month is a word."""
    day = (created_at or "")[:10]
    if not day:
        return ""
    moment = datetime.fromisoformat(day)
    return f"[{moment.day} {MONTH_ABBREVIATIONS[moment.month - 1]} {moment.year}]"


def render_summary(label: Sequence[str], summary: str) -> str:
    return f"[summary: {', '.join(label[:3])}] {' '.join(summary.split())}"


def dedup_key(content: str) -> int:
    return hash(" ".join(content.casefold().split()))


@dataclass
class ConceptSummary:
    concept_id: str
    text: str
    tokens: int
    carried_rows: np.ndarray
    """Rows of the members whose content the summary text carries: the summary stands for them."""


@dataclass
class UserIndex:
    user_id: str
    memory_ids: list[str]
    texts: list[str]
    created_at: list[str]
    tokens: np.ndarray
    created: np.ndarray
    prior: np.ndarray
    tier: np.ndarray
    dedup: np.ndarray
    vectors: np.ndarray
    has_vector: np.ndarray
    prev_row: np.ndarray
    next_row: np.ndarray
    concept_of: np.ndarray
    concepts: list[ConceptSummary]
    bm25: Any
    row_of: dict[str, int] = field(repr=False)
    context_bm25: Any = None
    """BM25 over each memory with the turn before it in its session, as the dense index embeds it."""
    speaker_code: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16), repr=False)
    """Index into `speakers` per row, -1 for a memory that is not a conversation turn."""
    speakers: list[str] = field(default_factory=list)
    is_question: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    mentions_time: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)

    def __len__(self) -> int:
        return len(self.memory_ids)

    def lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.bm25 is None or not query_tokens:
            return np.zeros(len(self), dtype=np.float32)
        ids = self.bm25.get_tokens_ids(query_tokens)
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids)

    def term_scores(self, query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every row, and the share of the query's distinct known terms each row contains."""
        scores = np.zeros(len(self), dtype=np.float32)
        matched = np.zeros(len(self), dtype=np.float32)
        terms = list(dict.fromkeys(query_tokens))
        if self.bm25 is None or not terms:
            return scores, matched
        ids = [i for i in self.bm25.get_tokens_ids(terms) if i is not None]
        for term_id in dict.fromkeys(ids):
            part = self.bm25.get_scores_from_ids([term_id])
            scores += part
            matched += part > 0
        return scores, matched / len(terms)

    def context_lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.context_bm25 is None or not query_tokens:
            return np.zeros(len(self), dtype=np.float32)
        ids = self.context_bm25.get_tokens_ids(query_tokens)
        return self.context_bm25.get_scores_from_ids(ids) if ids else np.zeros(len(self), dtype=np.float32)


@dataclass
class MemoryRows:
    """One user's memories as columns, before indexing."""

    memory_ids: list[str]
    contents: list[str]
    session_ids: list[str | None]
    created_at: list[str]
    speakers: list[str | None]
    importance: list[float | None]
    tiers: list[str]
    tier_scores: list[float | None]


def build_user_index(
    user_id: str,
    rows: MemoryRows,
    *,
    count_tokens: Callable[[list[str]], np.ndarray],
    vector_of: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
    concepts: Sequence[Any] = (),
    row_of: dict[str, int] | None = None,
) -> UserIndex:
    import bm25s

    n = len(rows.memory_ids)
    texts = [render_memory(s, t) for s, t in zip(rows.speakers, rows.contents)]
    speakers = sorted({s for s in rows.speakers if s})
    code_of = {s: i for i, s in enumerate(speakers)}
    row_of = row_of if row_of is not None else {m: i for i, m in enumerate(rows.memory_ids)}
    tokens = count_tokens(texts) + 1 if n else np.zeros(0, dtype=np.int32)
    created = np.fromiter((epoch_seconds(c) for c in rows.created_at), dtype=np.float64, count=n)
    prior = np.fromiter(
        (
            s if s is not None else (i if i is not None else DEFAULT_PRIOR)
            for s, i in zip(rows.tier_scores, rows.importance)
        ),
        dtype=np.float32,
        count=n,
    )
    vectors, has_vector = vector_of(rows.memory_ids)
    prev_row = np.full(n, -1, dtype=np.int32)
    next_row = np.full(n, -1, dtype=np.int32)
    order = sorted(
        (i for i in range(n) if rows.session_ids[i]), key=lambda i: (rows.session_ids[i], rows.created_at[i], i)
    )
    for a, b in zip(order, order[1:]):
        if rows.session_ids[a] == rows.session_ids[b]:
            next_row[a], prev_row[b] = b, a
    concept_of = np.full(n, -1, dtype=np.int32)
    summaries: list[ConceptSummary] = []
    for concept in concepts:
        carried = np.array([row_of[m] for m in concept.summary_member_ids if m in row_of], dtype=np.int32)
        if len(carried) < 2 or not concept.summary.strip():
            continue
        text = render_summary(concept.label, concept.summary)
        for m in concept.member_ids:
            if m in row_of:
                concept_of[row_of[m]] = len(summaries)
        summaries.append(ConceptSummary(concept.concept_id, text, int(count_tokens([text])[0]) + 1, carried))
    bm25 = context_bm25 = None
    if n:
        tokens_of = lexical_tokens(texts)
        bm25 = bm25s.BM25()
        bm25.index(tokens_of, show_progress=False)
        context_bm25 = bm25s.BM25()
        context_bm25.index([tokens_of[p] + tokens_of[i] if p >= 0 else tokens_of[i] for i, p in enumerate(prev_row.tolist())], show_progress=False)
    return UserIndex(
        user_id=user_id,
        memory_ids=list(rows.memory_ids),
        texts=texts,
        created_at=list(rows.created_at),
        tokens=tokens.astype(np.int32),
        created=created,
        prior=prior,
        tier=np.array([TIER_CODES.get(t, 0) for t in rows.tiers], dtype=np.int8),
        dedup=np.array([dedup_key(c) for c in rows.contents], dtype=np.int64),
        vectors=vectors,
        has_vector=has_vector,
        prev_row=prev_row,
        next_row=next_row,
        concept_of=concept_of,
        concepts=summaries,
        bm25=bm25,
        row_of=row_of,
        context_bm25=context_bm25,
        speaker_code=np.array([code_of.get(s, -1) if s else -1 for s in rows.speakers], dtype=np.int16),
        speakers=speakers,
        is_question=np.array([c.rstrip().endswith("?") for c in rows.contents], dtype=bool),
        mentions_time=np.array([mentions_time(c) for c in rows.contents], dtype=bool),
    )


@dataclass(frozen=True)
class SelectedAdapter:
    """A champion LoRA adapter chosen for a query: its MLflow model, version and local PEFT files."""

    name: str
    version: str
    uri: str
    """`models:/<name>@champion`, for MLflow."""
    path: str
    """The adapter's PEFT directory: `PeftModel.from_pretrained(base, path)`."""
    base_model: str
    set_id: str
    concept_id: str
    similarity: float = 0.0
    """Cosine of the query's embedding and the adapter's concept centroid."""

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class UserAdapters:
    """A user's champion adapters and the centroids of their concepts (unit rows)."""

    adapters: list[SelectedAdapter]
    centroids: np.ndarray


def champion_index(champions: Sequence[dict], concepts_by_user: dict[str, list[Any]], dimension: int) -> dict[str, UserAdapters]:
    """Per user, the champions whose concept still exists with a centroid of the index's dimension."""
    centroids = {(c.user_id, c.concept_id): c.centroid for concepts in concepts_by_user.values() for c in concepts}
    found: dict[str, tuple[list[SelectedAdapter], list[np.ndarray]]] = {}
    for c in champions:
        centroid = centroids.get((c["user_id"], c["concept_id"]))
        if centroid is None or centroid.shape != (dimension,):
            continue
        adapters, rows = found.setdefault(c["user_id"], ([], []))
        adapters.append(SelectedAdapter(c["model_name"], c["version"], c["uri"], c["path"], c["base_model"], c["set_id"], c["concept_id"]))
        rows.append(centroid)
    return {user: UserAdapters(adapters, np.vstack(rows).astype(np.float32)) for user, (adapters, rows) in found.items()}


@dataclass
class ContextSnapshot:
    signature: tuple
    cursor: int
    """The memories projection's sequence: events after it are read live from the event store."""
    model: str | None
    dimension: int
    users: dict[str, UserIndex]
    home: Path
    seconds: float
    cold: dict[str, UserIndex] = field(default_factory=dict)
    adapters: dict[str, UserAdapters] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    """Wall-clock time the indexes were loaded, for the service's readiness and index age."""

    @property
    def memories(self) -> int:
        return sum(len(u) for u in self.users.values())


def release_freed_memory(collect: bool = True) -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise): after a load, whose rows are
    several times the index's size, and now and then between queries, whose 100,000-row temporaries
    fragment the heap."""
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def snapshot_signature(store: EventStore) -> tuple:
    """Changes whenever an asset the resource reads is materialized again; its first part is the
    store's `DerivedState`, whose `sequence` is where the memories table stands."""
    index_file = store.home / EMBEDDINGS_DIR / "index.npz"
    stat = index_file.stat() if index_file.exists() else None
    archive = store.home / COLD_ARCHIVE_DIR
    champions = lora_dir(store.home) / CHAMPIONS_FILE
    return (
        derived_state(store, MEMORIES_CURSOR),
        (stat.st_mtime_ns, stat.st_size) if stat else None,
        archive.stat().st_mtime_ns if archive.exists() else None,
        champions.stat().st_mtime_ns if champions.exists() else None,
    )


def load_snapshot(store: EventStore, count_tokens: Callable[[list[str]], np.ndarray], *, model: str | None) -> ContextSnapshot:
    """Read every asset the resource needs, in a consistent order: signature first, so a later
    materialization is always noticed."""
    from hms_resources.semantic.concepts import load_concepts

    started = time.perf_counter()
    signature = snapshot_signature(store)
    index = EmbeddingIndex.load(store.home / EMBEDDINGS_DIR)
    usable = index is not None and (model is None or index.model == model)
    dimension = int(index.vectors.shape[1]) if index is not None else 0
    tiers = latest_tiers(store)
    by_user: dict[str, MemoryRows] = {}
    columns = ("user_id", "memory_id", "content", "session_id", "created_at", "created_by", "memory_type", "importance")
    for user_id, memory_id, content, session_id, created_at, created_by, memory_type, importance in live_memory_columns(store, *columns):
        tier, score = tiers.get((user_id, memory_id), ("hot", None))
        if tier == "cold" or not content:
            continue
        rows = by_user.get(user_id)
        if rows is None:
            rows = by_user[user_id] = MemoryRows([], [], [], [], [], [], [], [])
        rows.memory_ids.append(memory_id)
        rows.contents.append(content)
        rows.session_ids.append(session_id)
        rows.created_at.append(created_at or "")
        rows.speakers.append(created_by if memory_type == CONVERSATION_TURN else None)
        rows.importance.append(importance)
        rows.tiers.append(tier)
        rows.tier_scores.append(score)
    del tiers
    row_maps = {user_id: {m: i for i, m in enumerate(rows.memory_ids)} for user_id, rows in by_user.items()}
    concepts_by_user: dict[str, list[Any]] = {}
    for concept in load_concepts(store):
        concepts_by_user.setdefault(concept.user_id, []).append(concept)
    users = {
        user_id: build_user_index(
            user_id,
            rows,
            count_tokens=count_tokens,
            vector_of=vector_lookup(index if usable else None, user_id, dimension),
            concepts=concepts_by_user.get(user_id, ()),
            row_of=row_maps[user_id],
        )
        for user_id, rows in by_user.items()
    }
    adapters = champion_index(load_champions(store.home), concepts_by_user, dimension) if usable else {}
    model = index.model if usable else None
    del by_user, row_maps, index
    release_freed_memory()
    return ContextSnapshot(
        signature=signature,
        cursor=signature[0].sequence,
        model=model,
        dimension=dimension,
        users=users,
        home=store.home,
        seconds=time.perf_counter() - started,
        adapters=adapters,
    )


def vector_lookup(index: EmbeddingIndex | None, user_id: str, dimension: int) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray]]:
    """Rows of the embedding index for given memory ids of one user, copied so the full index can be
    freed, as float16: half the memory and half the bytes a query scans, for cosines within 1e-3."""

    def lookup(memory_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(memory_ids), max(dimension, 1)), dtype=np.float16)
        found = np.zeros(len(memory_ids), dtype=bool)
        if index is None or not memory_ids:
            return vectors, found
        rows = np.flatnonzero(index.user_ids == user_id)
        position = {m: int(r) for m, r in zip(index.memory_ids[rows].tolist(), rows)}
        source = np.array([position.get(m, -1) for m in memory_ids], dtype=np.int64)
        found = source >= 0
        vectors[found] = index.vectors[source[found]]
        return vectors, found

    return lookup


def load_cold_index(snapshot: ContextSnapshot, user_id: str, count_tokens: Callable[[list[str]], np.ndarray]) -> UserIndex | None:
    """A user's cold archive (Parquet from the `cold_archive` asset) as an index, for deep searches."""

    records = read_cold_archive(snapshot.home / COLD_ARCHIVE_DIR, user_id)
    records = [r for r in records if r.get("content")]
    if not records:
        return None
    rows = MemoryRows(
        memory_ids=[r["memory_id"] for r in records],
        contents=[r["content"] for r in records],
        session_ids=[None] * len(records),
        created_at=[r.get("created_at") or "" for r in records],
        speakers=[None] * len(records),
        importance=[r.get("importance") for r in records],
        tiers=["cold"] * len(records),
        tier_scores=[r.get("score") for r in records],
    )
    index = EmbeddingIndex.load(snapshot.home / EMBEDDINGS_DIR) if snapshot.model else None
    return build_user_index(user_id, rows, count_tokens=count_tokens, vector_of=vector_lookup(index, user_id, snapshot.dimension))
